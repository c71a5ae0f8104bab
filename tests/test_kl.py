"""The KL term and the densities behind the registries, against hand computations.

Analytic vs Monte Carlo KL, the automatic ELBO choice, KL warm-up and free bits,
the mixture and VampPrior log-densities, the continuous Bernoulli normalizer, the
Beta clamp, and the honest evaluation of the point-mass (autoencoder) guide.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import tiny_vae
from pyro import poutine
from scipy.integrate import quad
from torch.distributions import kl_divergence

from pyro_vae.elbos import FreeBitsELBO, ScaleLatents, importance_estimate, make_elbo, resolve_elbo
from pyro_vae.experiments.vae import TrainedVAE, evaluate_vae
from pyro_vae.likelihoods import (
    BETA_EPSILON,
    MIN_GAUSSIAN_SCALE,
    ClampedBeta,
    ContinuousBernoulli,
    GaussianLikelihood,
)
from pyro_vae.priors import MixturePrior, VampPrior
from pyro_vae.train import fit

D, LATENT = 64, 3


def pair(*overrides):
    return tiny_vae(D, *overrides, latent_dim=LATENT, hidden=16)


@pytest.fixture
def x():
    return torch.rand(6, D, generator=torch.Generator().manual_seed(3)).round()


def test_analytic_kl_matches_the_formula_and_monte_carlo_within_4_standard_errors(x):
    _, guide = pair()
    with torch.no_grad():
        q = guide.posterior(x)  # batch (6,), event (LATENT,)
        p = dist.Normal(torch.zeros(LATENT), 1.0).to_event(1)
        analytic = kl_divergence(q, p)
        m1, s1 = guide.encode(x)
        # DESIGN.md: log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2, here m2 = 0, s2 = 1
        formula = (-s1.log() + (s1**2 + m1**2) / 2 - 0.5).sum(-1)
        z = q.sample((20000,))
        samples = q.log_prob(z) - p.log_prob(z)  # (S, 6)
    assert torch.allclose(analytic, formula, atol=1e-5)
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
    assert ((mc - analytic).abs() < 4 * se).all(), (mc, analytic, se)


@pytest.mark.parametrize(
    "prior, guide, expected",
    [("normal", "gaussian", "meanfield"), ("learnable_normal", "gaussian", "meanfield"),
     ("laplace", "gaussian", "meanfield"), ("student_t", "gaussian", "trace"),
     ("mixture", "gaussian", "trace"), ("vamp", "gaussian", "trace"),
     ("normal", "iaf", "trace"), ("normal", "delta", "meanfield")],
)
def test_auto_elbo_resolution(prior, guide, expected, x):
    model, guide_ = pair(f'prior.name="{prior}"', f'guide.name="{guide}"')
    assert resolve_elbo(model, guide_, x, n=100) == expected


def test_kl_weight_scales_only_the_latent_term(x):
    """With beta = 0 the meanfield loss is -log p(x|z) alone; beta = 1 adds the full KL."""
    model, guide = pair()
    elbo = make_elbo("meanfield")
    weight = ScaleLatents(0.0)
    pyro.set_rng_seed(1)
    recon_only = elbo.loss(weight(model), weight(guide), x)
    pyro.set_rng_seed(1)
    z = guide(x)
    reconstruction = -model.likelihood(model.decoder(z)).log_prob(x).sum().item()
    kl = kl_divergence(guide.posterior(x), model.prior()).sum().item()
    assert recon_only == pytest.approx(reconstruction, rel=1e-5)
    pyro.set_rng_seed(1)
    assert elbo.loss(model, guide, x) == pytest.approx(reconstruction + kl, rel=1e-5)


def test_free_bits_floor_the_batch_mean_kl(x):
    model, guide = pair()
    pyro.set_rng_seed(2)
    plain = make_elbo("meanfield").loss(model, guide, x)
    pyro.set_rng_seed(2)
    zero = FreeBitsELBO(0.0, analytic=True, max_plate_nesting=1).loss(model, guide, x)
    assert zero == pytest.approx(plain, rel=1e-5)
    # a floor above every example's KL: the KL term is exactly B * floor, and gives no gradient
    floor = 1e3
    pyro.set_rng_seed(2)
    free_bits = FreeBitsELBO(floor, analytic=True, max_plate_nesting=1)
    loss = free_bits.differentiable_loss(model, guide, x)
    pyro.set_rng_seed(2)
    z = guide(x)
    reconstruction = -model.likelihood(model.decoder(z)).log_prob(x).sum()
    assert loss.item() == pytest.approx(reconstruction.item() + len(x) * floor, rel=1e-5)


def test_mixture_log_density_is_a_hand_computed_logsumexp():
    prior = MixturePrior(2, components=3)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
        prior.loc.copy_(torch.tensor([[0.0, 0.0], [2.0, -1.0], [-3.0, 0.5]]))
        prior.log_scale.copy_(torch.tensor([[0.0, 0.0], [-0.5, 0.3], [0.2, -0.1]]))
    z = torch.tensor([[0.3, -0.2], [2.5, -1.5], [-4.0, 3.0]])
    weights = torch.softmax(prior.logits, 0)
    by_hand = []
    for point in z.tolist():
        terms = []
        for k in range(3):
            log_n = 0.0
            for d in range(2):
                m, s = prior.loc[k, d].item(), prior.log_scale[k, d].exp().item()
                log_n += -0.5 * math.log(2 * math.pi * s**2) - (point[d] - m) ** 2 / (2 * s**2)
            terms.append(math.log(weights[k].item()) + log_n)
        top = max(terms)
        by_hand.append(top + math.log(sum(math.exp(t - top) for t in terms)))
    assert prior().log_prob(z).tolist() == pytest.approx(by_hand, rel=1e-5)


def test_vamp_prior_is_the_mean_of_the_encoder_gaussians_at_the_pseudo_inputs():
    model, guide = pair('prior.name="vamp"', "prior.components=4")
    prior = model.prior
    assert isinstance(prior, VampPrior)
    z = torch.randn(5, LATENT)
    with torch.no_grad():
        loc, scale = guide.encode(prior.pseudo_inputs)
        each = dist.Normal(loc, scale).to_event(1).log_prob(z[:, None, :])  # (5, 4)
        expected = each.logsumexp(-1) - math.log(4)
        assert torch.allclose(prior().log_prob(z), expected, atol=1e-5)
    # the pseudo-inputs are the model's parameters; the encoder's stay the guide's, not duplicated
    names = dict(model.named_parameters())
    assert "prior.pseudo_inputs" in names
    assert len(names) == 1 + len(dict(model.decoder.named_parameters()))


@pytest.mark.parametrize("logit", [-40.0, -5.0, -1e-3, 0.0, 1e-4, 0.3, 5.0, 30.0])
def test_continuous_bernoulli_normalizer_matches_numerical_integration(logit):
    """torch's normalizer is off by log(|logit| / 16) past |logit| ~ 16; ours integrates to 1."""
    d = ContinuousBernoulli(logits=torch.tensor(logit, dtype=torch.float64))
    density = lambda v: d.log_prob(torch.tensor(v, dtype=torch.float64)).exp().item()  # noqa: E731
    total, _ = quad(density, 0.0, 1.0, points=[0.5], limit=200)
    mean, _ = quad(lambda v: v * density(v), 0.0, 1.0, points=[0.5], limit=200)
    assert total == pytest.approx(1.0, abs=1e-7)
    assert d.mean.item() == pytest.approx(mean, abs=1e-7)
    pyro.set_rng_seed(0)
    draws = d.sample((20000,))
    assert ((draws >= 0) & (draws <= 1)).all()
    assert draws.mean().item() == pytest.approx(mean, abs=0.01)


def test_beta_clamps_the_ends_and_gaussian_scale_stays_above_its_floor():
    beta = ClampedBeta(torch.tensor([2.0]), torch.tensor([3.0]))
    assert beta.log_prob(torch.tensor([0.0])) == beta.log_prob(torch.tensor([BETA_EPSILON]))
    assert torch.isfinite(beta.log_prob(torch.tensor([1.0]))).all()
    gaussian = GaussianLikelihood(4, scale=0.2, learn_scale=True)
    assert torch.allclose(gaussian(torch.zeros(4)).base_dist.scale, torch.full((4,), 0.2))
    with torch.no_grad():
        gaussian.raw_scale.fill_(-100.0)
    assert (gaussian(torch.zeros(4)).base_dist.scale >= MIN_GAUSSIAN_SCALE).all()


def test_point_mass_guide_reports_the_joint_density_and_no_log_likelihood(x):
    model, guide = pair('guide.name="delta"')
    with torch.no_grad():
        code = guide.encoder(x)
        joint = model.prior().log_prob(code) + model.likelihood(model.decoder(code)).log_prob(x)
    estimate = importance_estimate(model, guide, x, num_particles=3)
    assert torch.allclose(estimate.elbo, joint, atol=1e-4)  # no entropy term: log p(x, z*)
    metrics = evaluate_vae(TrainedVAE(model, guide, None, D, None, True), x, 1000)
    assert metrics["test_log_likelihood"] is None and metrics["test_elbo_is_log_joint"]
    assert metrics["test_elbo"] == pytest.approx(joint.mean().item(), rel=1e-5)
    # the guide site itself contributes log q = 0
    trace = poutine.trace(guide).get_trace(x)
    assert trace.log_prob_sum().item() == 0.0


@pytest.mark.parametrize("elbo", ["auto", "trace"])
def test_fit_with_warmup_and_free_bits_trains(elbo, x):
    """KL warm-up over 2 epochs of 3 steps and a 0.25-nat floor train to finite numbers."""
    model, guide = pair()
    result = fit(model, guide, x, x_test=x, epochs=3, batch_size=2, elbo=elbo, progress=False,
                 kl_warmup_epochs=2, free_bits=0.25)
    assert all(math.isfinite(v) for v in result.train_elbo + result.test_elbo)
    assert result.elbo == ("meanfield" if elbo == "auto" else "trace")
