"""The uniform-scale toy model: exact marginal, posterior, guides, fitting routes, ELBO identity."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import integrate

from pyro_vae.errors import UserError
from pyro_vae.guides.uniform_scale import (
    AmortizedUniformScaleGuide,
    LocalUniformScaleGuide,
    fit_local_guide,
    kl_to_posterior,
)
from pyro_vae.inference.uniform_scale import (
    ToyOptions,
    fit_mle,
    fit_nuts,
    fit_nuts_latent,
    fit_svi,
    moment_estimate,
    simulate,
)
from pyro_vae.lecture.elbo_identity import elbo_identity
from pyro_vae.models.uniform_scale import (
    UniformScale,
    UniformScaleMarginal,
    log_e1_difference,
    log_marginal_quadrature,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster

THETAS = [(0.5, 2.0, 1.0), (1.0, 3.0, -2.0), (0.05, 0.1, 10.0), (2.0, 20.0, 0.0)]


@pytest.mark.parametrize("a,b,mu", THETAS)
def test_closed_form_marginal_matches_quadrature(a, b, mu):
    # from x = mu (where both E1 diverge) to far tails (c / a^2 in the thousands)
    x = mu + b * np.array([0.0, 1e-9, 1e-3, 0.1, 0.7, -1.3, 2.5, 4.0, -6.0, 9.0])
    exact = UniformScale(a, b, mu).log_marginal(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(exact, log_marginal_quadrature(x, a, b, mu), rtol=1e-6)


@pytest.mark.parametrize("a,b,mu", THETAS)
def test_marginal_integrates_to_one(a, b, mu):
    model = UniformScale(a, b, mu)

    def density(x):
        with torch.no_grad():
            return model.log_marginal(torch.tensor([x], dtype=torch.float64)).exp().item()

    # split at mu: the density peaks there
    total = sum(integrate.quad(density, lo, hi, epsabs=1e-12, limit=200)[0]
                for lo, hi in ((-np.inf, mu), (mu, np.inf)))
    assert total == pytest.approx(1.0, abs=1e-7)


def test_marginal_far_in_the_tails_is_finite_and_decreasing():
    model = UniformScale(0.5, 2.0, 0.0)
    x = torch.tensor([10.0, 100.0, 1e3, 1e4], dtype=torch.float64)
    log_p = model.log_marginal(x).detach()
    assert torch.isfinite(log_p).all() and (log_p.diff() < 0).all()
    # far beyond scipy's underflow: E1(u) -> exp(-u) / u with u = x^2 / (2 b^2)
    u = 1e8 / 8
    expected = -u - math.log(u) - math.log(2 * math.sqrt(2 * math.pi) * (2.0 - 0.5))
    assert log_p[-1].item() == pytest.approx(expected, rel=1e-12)


def test_log_e1_difference_gradients_are_exact_and_twice_differentiable():
    c = torch.tensor([1e-6, 0.3, 2.0, 40.0], dtype=torch.float64, requires_grad=True)
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(1.9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(log_e1_difference, (c, a, b))
    assert torch.autograd.gradgradcheck(log_e1_difference, (c, a, b))


def test_gradient_at_the_mode_is_the_limit():
    # at x = mu: log p = log(2 log(b / a)) - log(2 sqrt(2 pi) (b - a)), smooth in theta
    a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    mu = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    log_p = UniformScaleMarginal(a, b, mu).log_prob(torch.tensor(1.0, dtype=torch.float64))
    grads = torch.autograd.grad(log_p, (a, b, mu))
    log_ratio = math.log(4.0)
    assert grads[0].item() == pytest.approx(-1 / (0.5 * log_ratio) + 1 / 1.5, rel=1e-12)
    assert grads[1].item() == pytest.approx(1 / (2.0 * log_ratio) - 1 / 1.5, rel=1e-12)
    assert grads[2].item() == 0.0


def test_a_collapsed_interval_gives_the_normal_at_z_equal_a_with_finite_gradients():
    # b - a underflowed to 0: the closed form is 0 / 0, its limit N(x; mu, a); no warning
    x = torch.tensor([-1.0, 0.2, 0.7, 3.0], dtype=torch.float64)
    a = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    mu = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    log_p = UniformScaleMarginal(a, a.detach().clone(), mu, validate_args=False).log_prob(x)
    torch.testing.assert_close(log_p, dist.Normal(mu, a).log_prob(x), rtol=1e-15, atol=0)
    grads = torch.autograd.grad(log_p.sum(), (a, mu))
    assert all(torch.isfinite(g) for g in grads)
    # and the closed form tends to it: b = a (1 + 1e-7)
    near = UniformScaleMarginal(a, a * (1 + 1e-7), mu).log_prob(x)
    torch.testing.assert_close(near, log_p, rtol=1e-6, atol=0)


def test_samples_have_the_model_moments():
    a, b, mu = 0.5, 2.0, 1.0
    x = UniformScale(a, b, mu).sample(100_000)
    second = (a**2 + a * b + b**2) / 3  # E[(x - mu)^2] = E[z^2]
    assert abs(x.mean().item() - mu) < 4 * math.sqrt(second / len(x))
    fourth = 3 * (b**5 - a**5) / (5 * (b - a))  # E[(x - mu)^4] = 3 E[z^4]
    assert abs(((x - mu) ** 2).mean().item() - second) < 4 * math.sqrt(
        (fourth - second**2) / len(x))


@pytest.mark.parametrize("a,b", [(2.0, 1.0), (1.0, 1.0), (0.0, 1.0), (-1.0, 1.0),
                                 (float("nan"), 1.0)])
def test_model_refuses_invalid_theta(a, b):
    with pytest.raises(UserError, match=r"a < b|positive|finite"):
        UniformScale(a, b, 0.0)


def test_parameterization_keeps_zero_below_a_below_b():
    model = UniformScale()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(30 * torch.randn(()))
        a, b = model.bounds()
    assert 0 < a < b


def test_posterior_on_a_grid_is_normalized_bayes():
    model = UniformScale(0.5, 2.0, 1.0)
    x = torch.tensor([1.0, 2.5, -3.0], dtype=torch.float64)
    z = torch.linspace(0.5, 2.0, 20_001, dtype=torch.float64)
    post = model.log_posterior(x, z).exp().numpy()
    np.testing.assert_allclose(np.trapezoid(post, z.numpy(), axis=1), 1.0, rtol=1e-7)


def _guides(model, x):
    amortized = AmortizedUniformScaleGuide(model)
    with torch.no_grad():  # large weights: saturated network outputs
        for p in amortized.net.parameters():
            p.mul_(20)
    local = LocalUniformScaleGuide(model, x.shape[0])
    with torch.no_grad():
        local.loc.copy_(torch.linspace(-30, 30, x.shape[0], dtype=torch.float64))
        local.log_scale.fill_(1.5)
    return amortized, local


def test_guide_samples_always_lie_inside_a_b():
    model = UniformScale(0.5, 2.0, 1.0)
    x = torch.linspace(-50, 50, 64, dtype=torch.float64)
    a, b = (t.item() for t in model.bounds())
    for guide in _guides(model, x):
        with pyro.plate("particles", 2000, dim=-2):
            z = pyro.poutine.trace(guide).get_trace(x).nodes["z"]["value"]
        assert z.shape == (2000, 64)
        assert (z > a).all() and (z < b).all()
        # so the model's log density is finite for every sample
        loss = pyro.infer.Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
        assert torch.isfinite(loss)


def test_local_guide_needs_its_own_number_of_points():
    model = UniformScale()
    with pytest.raises(ValueError, match="5 points"):
        LocalUniformScaleGuide(model, 5).distribution(torch.zeros(3, dtype=torch.float64))


def test_elbo_identity_holds_and_elbo_is_a_lower_bound():
    model = UniformScale(0.5, 2.0, 1.0)
    x = torch.linspace(-4, 6, 12, dtype=torch.float64)
    guide = LocalUniformScaleGuide(model, x.shape[0])
    kl = []
    for _ in ("initial guide", "fitted guide"):  # the identity holds for any guide
        identity = elbo_identity(model, guide, x, num_particles=20_000)
        assert (identity.kl > 0).all()
        # the Monte Carlo ELBO is below log p(x) up to its own error, at every x
        assert (identity.elbo < identity.log_px + 4 * identity.elbo_se).all()
        # log p(x) = ELBO + KL within Monte Carlo error (12 points, |z| < 4 each)
        assert identity.z_scores.abs().max() < 4
        kl.append(identity.kl.mean())
        fit_local_guide(model, guide, x, steps=300)
    assert kl[1] < kl[0] / 2  # fitting the guide closes the gap


def test_kl_quadrature_matches_monte_carlo_kl():
    model = UniformScale(0.5, 2.0, 1.0)
    x = torch.tensor([-2.0, 1.0, 3.5], dtype=torch.float64)
    guide = AmortizedUniformScaleGuide(model)
    with torch.no_grad():
        q = guide.distribution(x)
        z = q.sample((50_000,))  # (S, B)
        log_posterior = (torch.distributions.Normal(model.mu, z).log_prob(x)
                         - math.log(2.0 - 0.5) - model.log_marginal(x))
        terms = q.log_prob(z) - log_posterior
        kl = kl_to_posterior(model, guide, x)
    se = terms.std(0) / math.sqrt(z.shape[0])
    assert ((terms.mean(0) - kl).abs() < 4 * se).all()


# MLE recovery.  The asymptotic standard errors (observed information) at N = 5000 are
# about 0.03-0.04 for a and b and 0.02 for mu at theta = (0.5, 2, 1), shrinking as
# 1/sqrt(N); we ask for agreement within 5 of them, which a correct estimator fails
# with probability < 1e-5 per parameter, and check that they really are that small
# (at most 10% of b - a), so the tolerance cannot pass a wrong answer by being loose.
@pytest.mark.parametrize("a,b,mu", [(0.5, 2.0, 1.0), (1.0, 3.0, -2.0), (2.0, 20.0, 0.0)])
def test_exact_mle_recovers_theta(a, b, mu):
    x = simulate(a, b, mu, 5000, seed=1)
    fitted = fit_mle(x)
    theta = fitted.model.theta()
    for name, true in zip(("a", "b", "mu"), (a, b, mu), strict=True):
        se = fitted.extra[f"{name}_se"]
        assert se < 0.1 * (b - a)
        assert abs(theta[name] - true) < 5 * se, (name, theta[name], true, se)
    with torch.no_grad():
        # it is the maximum: above the truth and above the moment estimate it started from
        best = fitted.model.log_marginal(x).mean()
        assert best >= UniformScale(a, b, mu).log_marginal(x).mean()
        assert best >= UniformScale(*moment_estimate(x)).log_marginal(x).mean()


def test_svi_gives_an_elbo_below_the_exact_log_likelihood():
    x = simulate(0.5, 2.0, 1.0, 1000, seed=2)
    fitted = fit_svi(x, seed=0, options=ToyOptions(steps=300, lr=0.03))
    model, guide = fitted.model, fitted.guide
    identity = elbo_identity(model, guide, x[:50], num_particles=5000)
    assert (identity.elbo.mean() < identity.log_px.mean())
    assert identity.z_scores.abs().max() < 4.5
    with torch.no_grad():  # fitted theta is close to the truth in likelihood
        gap = (UniformScale(0.5, 2.0, 1.0).log_marginal(x) - model.log_marginal(x)).mean()
    assert gap < 0.02


@pytest.mark.slow
@pytest.mark.parametrize("route", [fit_nuts, fit_nuts_latent], ids=["marginal", "latent"])
def test_nuts_posterior_covers_the_truth(route):
    x = simulate(0.5, 2.0, 1.0, 500, seed=3)
    fitted = route(x, seed=0, options=ToyOptions(warmup=150, samples=150))
    theta = fitted.model.theta()
    for name, true in zip(("a", "b", "mu"), (0.5, 2.0, 1.0), strict=True):
        assert abs(theta[name] - true) < 4 * fitted.extra[f"{name}_sd"]
        assert fitted.extra[f"{name}_r_hat"] < 1.1


@pytest.mark.parametrize("c,a,b", [
    (1.0, 1.0, 1.0 + 1e-9),  # a ~ b: the two E1 values agree to 1e-9 and cancel
    (1.0, 1.0, 1.0 + 2e-4),  # just wide of the midpoint rule
    (700.0, 1.0, 1.0 + 1e-7),  # narrow, at the asymptotic series' threshold
    (5000.0, 1.0, 1.5),  # far tail: E1(c / a^2) underflows next to E1(c / b^2)
    (1e90, 1.0, 1.0 + 1e-8),  # 1 / v^4 would overflow
    (1e-300, 0.5, 2.0),  # next to the mode
])
def test_log_e1_difference_is_accurate_where_it_cancels_or_overflows(c, a, b):
    """log(E1(c/b^2) - E1(c/a^2)) against 50-digit mpmath, with no floating-point warning."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(50):
        c_, a_, b_ = (mpmath.mpf(v) for v in (c, a, b))
        exact = float(mpmath.log(mpmath.e1(c_ / b_**2) - mpmath.e1(c_ / a_**2)))
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        got = log_e1_difference(torch.tensor([c], dtype=torch.float64), a, b)[0].item()
    # the inputs' own rounding (c / b^2 in float64) bounds what any method can reach
    assert got == pytest.approx(exact, rel=1e-10, abs=1e-8)
