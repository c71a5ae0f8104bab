"""A compiled training loss is the eager one: the same draws, the same numbers to round-off.

``compile="on"`` runs the fused VAE loss under ``torch.compile`` for full batches and eagerly
for an epoch's ragged last batch; ``"auto"`` compiles only long runs of a fused loss.
"""

import copy

import pytest
import torch
from conftest import tiny_vae
from pyro import poutine

from pyro_vae.elbos import make_elbo
from pyro_vae.train import COMPILE_SETTINGS, fit, resolve_compile
from pyro_vae.train.compilation import COMPILE_PAYS_AFTER

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
