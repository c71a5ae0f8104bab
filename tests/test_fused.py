"""The fused ELBO is Pyro's estimator: same value and gradients from the same random numbers.

Every registered prior x likelihood x guide that builds is compared with
``Trace_ELBO`` (``fused_trace``) and ``TraceMeanField_ELBO`` (``fused``), so new
registry entries are covered without editing this file.  A pair the fused path
declines must give exactly the plain Pyro ELBO's numbers.
"""

import itertools
from contextlib import nullcontext

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import tiny_vae
from pyro import poutine

from pyro_vae.elbos import ELBOS, make_elbo
from pyro_vae.elbos.fused import FusedELBO
from pyro_vae.guides import GUIDES
from pyro_vae.likelihoods import LIKELIHOODS
from pyro_vae.priors import PRIORS
from pyro_vae.train import fit

D, LATENT, N, B = 12, 3, 40, 10
COMBOS = list(itertools.product(PRIORS.names(), LIKELIHOODS.names(), GUIDES.names()))


def tiny_pair(prior="normal", likelihood="bernoulli", guide="gaussian"):
    try:
        return tiny_vae(D, f'prior.name="{prior}"', f'likelihood.name="{likelihood}"',
                        f'guide.name="{guide}"', latent_dim=LATENT)
    except ValueError as exc:  # e.g. the vamp prior needs a Gaussian encoder
        pytest.skip(f"{prior}/{likelihood}/{guide} does not build: {exc}")


def binary_batch(rows=B):
    return torch.bernoulli(torch.full((rows, D), 0.4))


def loss_and_grads(elbo, model, guide, x, n, seed, fused):
    """-ELBO and its gradients; ``fused`` first draws the indices Pyro's subsampling plate draws."""
    modules = poutine.unwrap(model), poutine.unwrap(guide)
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    pyro.set_rng_seed(seed)
    if fused and n > x.shape[0]:
        torch.randperm(n)  # pyro.plate(size=n, subsample_size=B) draws these before z
    loss = elbo.differentiable_loss(model, guide, x, n=n)
    return loss, torch.autograd.grad(loss, params, allow_unused=True)


def assert_same(fused, plain):
    (loss_f, grads_f), (loss_p, grads_p) = fused, plain
    torch.testing.assert_close(loss_f, loss_p.detach(), rtol=1e-5, atol=1e-4)
    for g_f, g_p in zip(grads_f, grads_p, strict=True):
        if g_p is None:
            assert g_f is None or not g_f.any()
        else:
            torch.testing.assert_close(g_f, g_p, rtol=1e-4, atol=1e-5)


# the vectorized particles take the same code path in both: one of them is enough
@pytest.mark.parametrize("name,particles", [("fused", 1), ("fused_trace", 1), ("fused_trace", 3)])
@pytest.mark.parametrize("prior,likelihood,guide", COMBOS)
def test_fused_equals_pyro_elbo(prior, likelihood, guide, name, particles):
    model, guide_module = tiny_pair(prior, likelihood, guide)
    x = binary_batch()
    elbo = make_elbo(name, particles)
    reason = elbo.decline_reason(model, guide_module, x, n=N)
    fused = loss_and_grads(elbo, model, guide_module, x, N, seed=1, fused=reason is None)
    plain = loss_and_grads(elbo.fallback, model, guide_module, x, N, seed=1, fused=False)
    assert_same(fused, plain)
    # the fallback is the registry's estimator the name promises
    assert type(elbo.fallback) is type(make_elbo("meanfield" if name == "fused" else "trace"))


def test_registered_pairs_are_fused():
    """The package's own VAE with its default pieces takes the fused path."""
    model, guide = tiny_pair()
    for name in ("fused", "fused_trace"):
        assert make_elbo(name).decline_reason(model, guide, binary_batch(), n=N) is None


def test_scale_only_handler_is_honoured():
    """A KL weight applied by a scale-only handler (as fit's warm-up does) is read every step."""
    model, guide = tiny_pair()
    x = binary_batch()

    class Beta(pyro.poutine.messenger.Messenger):
        weight = 0.3

        def _process_message(self, msg):
            if msg["type"] == "sample" and not msg["is_observed"]:
                msg["scale"] = msg["scale"] * self.weight

    beta = Beta()
    for name in ("fused", "fused_trace"):
        elbo = make_elbo(name)
        for weight in (0.3, 0.7):
            beta.weight = weight
            scaled = beta(model), beta(guide)
            assert elbo.decline_reason(*scaled, x, n=N) is None
            fused = loss_and_grads(elbo, *scaled, x, N, seed=2, fused=True)
            assert_same(fused, loss_and_grads(elbo.fallback, *scaled, x, N, seed=2, fused=False))


def test_analytic_and_monte_carlo_kl_differ():
    """``fused`` has the closed-form KL, ``fused_trace`` a sampled one: equal in expectation."""
    model, guide = tiny_pair()
    x = binary_batch()
    analytic = loss_and_grads(make_elbo("fused"), model, guide, x, N, seed=3, fused=True)[0]
    sampled = loss_and_grads(make_elbo("fused_trace"), model, guide, x, N, seed=3, fused=True)[0]
    assert not torch.isclose(analytic, sampled)


def _guide_with_discrete_site(x, *, n=None):
    with pyro.plate("data", n or x.shape[0], subsample_size=x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], LATENT), 1.0).to_event(1))
        # auxiliary: not in the model, and scored by the score-function estimator
        pyro.sample("c", dist.Bernoulli(0.5), infer={"is_auxiliary": True})


def _declined_cases():
    """(label, model, guide, context) triples that the fused path must refuse."""
    model, guide = tiny_pair()

    def plain_model(x, *, n=None):
        pyro.module("vae", model)
        with pyro.plate("data", n or x.shape[0], subsample_size=x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], LATENT), 1.0).to_event(1))
            pyro.sample("x", model.likelihood(model.decoder(z)), obs=x)

    masked = poutine.mask(model, mask=torch.tensor(True))
    return [
        ("model is not the VAE", plain_model, guide, None),
        ("extra, non-reparameterized guide site", model, _guide_with_discrete_site, None),
        ("handler that masks", masked, guide, None),
        ("call inside an outer handler", model, guide, poutine.scale(scale=0.5)),
    ]


def _outcome(compute):
    """The loss a call returns, or the type of error it raises (Pyro refuses some pairs)."""
    try:
        return compute().detach()
    except NotImplementedError as exc:
        return type(exc)


@pytest.mark.parametrize("case", range(4))
def test_declined_pairs_fall_back_to_pyro(case):
    label, model, guide, context = _declined_cases()[case]
    x = binary_batch()
    for name in ("fused", "fused_trace"):
        elbo = make_elbo(name)
        with context or nullcontext():
            assert elbo.decline_reason(model, guide, x, n=N) is not None, label
            pyro.set_rng_seed(4)
            fused = _outcome(lambda e=elbo: e.differentiable_loss(model, guide, x, n=N))
            pyro.set_rng_seed(4)
            plain = _outcome(lambda e=elbo: e.fallback.differentiable_loss(model, guide, x, n=N))
        if torch.is_tensor(plain):
            assert torch.equal(fused, plain), label
        else:  # TraceMeanField_ELBO refuses a non-reparameterized guide site, and so do we
            assert fused is plain, label


def test_loss_is_a_float_equal_to_the_differentiable_loss():
    model, guide = tiny_pair()
    x = binary_batch()
    elbo = FusedELBO(analytic_kl=True)
    pyro.set_rng_seed(5)
    value = elbo.loss(model, guide, x, n=N)
    pyro.set_rng_seed(5)
    assert isinstance(value, float)
    assert value == pytest.approx(elbo.differentiable_loss(model, guide, x, n=N).item(), rel=1e-6)


def test_planning_leaves_the_random_stream_alone():
    """The one Pyro trace that plans the fusion does not consume random numbers."""
    model, guide = tiny_pair()
    x = binary_batch()
    pyro.set_rng_seed(6)
    make_elbo("fused").decline_reason(model, guide, x, n=N)
    after_planning = torch.rand(3)
    pyro.set_rng_seed(6)
    assert torch.equal(torch.rand(3), after_planning)


def test_fit_trains_with_the_fused_elbo():
    """fit runs the fused ELBO end to end and improves the ELBO like the Pyro one does."""
    assert {"fused", "fused_trace"} <= set(ELBOS.names())
    model, guide = tiny_pair()
    x = torch.bernoulli(torch.full((N, D), 0.3))
    result = fit(model, guide, x, epochs=3, batch_size=B, lr=1e-2, elbo="fused", progress=False)
    assert result.elbo == "fused"
    assert result.train_elbo[-1] > result.train_elbo[0]


@pytest.mark.parametrize("prior,resolved,fused_name", [
    ("normal", "meanfield", "fused"),  # KL(Normal || Normal) in closed form
    ("student_t", "trace", "fused_trace"),  # no closed form: Monte Carlo KL
])
def test_auto_trains_through_the_fused_path(prior, resolved, fused_name):
    """fit's default "auto" is recorded as the estimator it resolves to and computed fused:
    bit-for-bit the parameters of the fused ELBO run from the same seed."""
    x = torch.bernoulli(torch.full((N, D), 0.3))
    params, recorded = {}, {}
    for name in ("auto", fused_name):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide = tiny_pair(prior=prior)
        result = fit(model, guide, x, epochs=2, batch_size=B, lr=1e-2, elbo=name, progress=False)
        params[name] = [p.detach().clone() for m in (model, guide) for p in m.parameters()]
        recorded[name] = result.elbo
    assert recorded == {"auto": resolved, fused_name: fused_name}
    assert all(torch.equal(a, b) for a, b in zip(params["auto"], params[fused_name], strict=True))


def test_the_plan_is_validated_and_steps_restore_the_validation_flag():
    """The planning trace runs under Pyro's validation (an observation outside the
    Bernoulli's support is refused there); the fused steps skip the per-step checks and
    leave the global setting as they found it."""
    model, guide = tiny_pair()
    bad = binary_batch()
    bad[0, 0] = 0.5
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="support"):
        make_elbo("fused").differentiable_loss(model, guide, bad, n=N)
    elbo = make_elbo("fused")
    with pyro.validation_enabled(True):
        elbo.differentiable_loss(model, guide, binary_batch(), n=N)  # plans, validated
        assert elbo.decline_reason(model, guide, binary_batch(), n=N) is None
        elbo.differentiable_loss(model, guide, binary_batch(), n=N)  # a fused step
        assert torch.distributions.Distribution._validate_args
