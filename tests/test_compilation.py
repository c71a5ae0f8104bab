"""A compiled training step is the eager one: the same draws, the same numbers to round-off.

``compile="on"`` computes the fused VAE loss, its gradient and the NaN guard's flag as one
``torch.compile`` graph for full batches (then fused Adam), and takes the eager step for an
epoch's ragged last batch; ``"auto"`` compiles only long runs of a fused loss.
"""

import copy

import pytest
import torch
from conftest import tiny_vae
from pyro import poutine

from pyro_vae.elbos import make_elbo
from pyro_vae.train import COMPILE_SETTINGS, fit, resolve_compile
from pyro_vae.train.compilation import COMPILE_PAYS_AFTER, CompiledStep
from pyro_vae.train.step import svi_step

D, N, B = 12, 50, 16  # 50 rows in batches of 16: three full batches and a ragged one of 2


def data():
    torch.manual_seed(1)
    return torch.bernoulli(torch.full((N, D), 0.3))


def test_auto_compiles_only_long_runs_of_a_fused_loss():
    model, guide = tiny_vae(D)
    x = data()[:B]
    fused = make_elbo("fused")
    assert resolve_compile("auto", COMPILE_PAYS_AFTER - 1, fused, model, guide, x, N)[0] is False
    assert resolve_compile("auto", COMPILE_PAYS_AFTER, fused, model, guide, x, N) == (
        True, f"auto: {COMPILE_PAYS_AFTER} steps, at least the {COMPILE_PAYS_AFTER} a compile "
              f"pays after")
    assert resolve_compile("on", 1, fused, model, guide, x, N) == (True, "set")
    assert resolve_compile("off", 10**9, fused, model, guide, x, N) == (False, "set")
    plain = resolve_compile("on", 10**9, make_elbo("meanfield"), model, guide, x, N)
    assert plain == (False, "on: only the fused VAE loss compiles, not MeanFieldELBO")
    with pytest.raises(ValueError, match="compile must be one of"):
        resolve_compile("yes", 1, fused, model, guide, x, N)
    assert COMPILE_SETTINGS == ("auto", "on", "off")


def test_auto_does_not_compile_a_pair_the_fused_loss_declines():
    model, guide = tiny_vae(D)
    masked = poutine.mask(model, mask=torch.tensor(True))  # a handler that does more than scale
    compiled, reason = resolve_compile("auto", 10**9, make_elbo("fused"), masked, guide,
                                       data()[:B], N)
    assert not compiled and reason.startswith("auto: the loss is not fused (")


# the Monte Carlo KL's graph is a second compile of tens of seconds on a CI machine: slow
@pytest.mark.parametrize("elbo", ["fused", pytest.param("fused_trace", marks=pytest.mark.slow)])
def test_a_compiled_run_is_the_eager_run(elbo):
    """Same seed, KL warm-up (a scale changing every step), a ragged last batch: the compiled
    run draws the same z and differs from the eager one only by the kernels' round-off."""
    model, guide = tiny_vae(D)
    x = data()
    runs = {}
    for setting in ("off", "on"):
        m, g = copy.deepcopy(model), copy.deepcopy(guide)
        result = fit(m, g, x, x_test=x[:20], epochs=2, batch_size=B, elbo=elbo, seed=3,
                     kl_warmup_epochs=1, compile=setting, progress=False)
        runs[setting] = (result, [p.detach() for p in (*m.parameters(), *g.parameters())])
    (eager, eager_params), (compiled, compiled_params) = runs["off"], runs["on"]
    assert not eager.compiled and eager.compile_seconds == 0.0
    assert compiled.compiled and compiled.compile_reason == "set"
    assert compiled.compile_seconds > 0.0
    torch.testing.assert_close(compiled.train_elbo, eager.train_elbo, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(compiled.test_elbo, eager.test_elbo, rtol=1e-5, atol=1e-4)
    for a, b in zip(compiled_params, eager_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_compiled_step_is_the_eager_step_and_skips_a_bad_batch():
    """Three steps from the same seed: the same losses, gradient norms and parameters as the
    eager step's to round-off; a batch with a NaN pixel is flagged and changes nothing (the
    parameters, Adam's moments and its step count stay bit for bit)."""
    model, guide = tiny_vae(D)
    x = data()[:B]
    runs = {}
    for compiled in (False, True):
        m, g = copy.deepcopy(model), copy.deepcopy(guide)
        params = [*m.parameters(), *g.parameters()]
        optimizer = torch.optim.Adam(params, lr=1e-2, fused=True)
        elbo = make_elbo("fused")
        if compiled:
            step = CompiledStep(elbo.plan(m, g, x, n=N), 1, optimizer, None)
            assert step.compile(x, N) > 0.0
        else:
            def step(batch, n, m=m, g=g, elbo=elbo, optimizer=optimizer, params=params):
                return svi_step(elbo.differentiable_loss(m, g, batch, n=n), optimizer, params)
        torch.manual_seed(5)
        rows = torch.stack([step(x, N) for _ in range(3)])
        runs[compiled] = (rows, params, optimizer, step)
    (eager_rows, eager_params, _, _), (rows, params, optimizer, step) = runs[False], runs[True]
    assert rows[:, 1].tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(rows, eager_rows, rtol=1e-5, atol=1e-4)
    for a, b in zip(params, eager_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    bad = x.clone()
    bad[0, 0] = float("nan")
    before = copy.deepcopy(([p.detach() for p in params], optimizer.state_dict()["state"]))
    assert step(bad, N)[1].item() == 1.0
    after = ([p.detach() for p in params], optimizer.state_dict()["state"])
    for old, new in zip(before[0], after[0], strict=True):
        assert torch.equal(old, new)
    for key, slot in before[1].items():
        for name, value in slot.items():
            assert torch.equal(after[1][key][name], value), (key, name)
