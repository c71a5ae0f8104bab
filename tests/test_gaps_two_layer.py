"""Inference gaps of a two-stochastic-layer VAE against closed forms: linear-Gaussian layers.

    z2 ~ N(0, I_d2),   z1 | z2 ~ N(A z2, s1^2 I_d1),   x | z1 ~ N(W z1 + b, s^2 I_D)

written as :class:`~pyro_vae.models.HierarchicalVAE` (sites z2, z1, x in the data plate).
With z = (z2, z1), the model's order, the prior is N(0, C), C = [[I, A^T], [A, A A^T +
s1^2 I]], and x = H z + b + noise with H = [0 | W], so

    p(x) = N(x; b, H C H^T + s^2 I),    p(z | x) = N(m, L^-1),
    L = C^-1 + H^T H / s^2,             m = L^-1 H^T (x - b) / s^2.

x depends on z2 through z1 only, so p(z2 | z1, x) = p(z2 | z1) = N(P^-1 A^T z1 / s1^2,
P^-1), P = I + A^T A / s1^2: with A diagonal this is the guide's q_net(z2 | z1) for a linear
mean and a constant log-scale, and with W's columns orthogonal p(z1 | x) is a diagonal
Gaussian: the two-layer family holds the exact posterior (q*'s approximation gap is 0).
"""

import json
import math

import pyro.distributions as dist
import pytest
import torch
from test_gaps import IdentityGaussian, within
from torch import nn
from torch.distributions import kl_divergence

from pyro_vae.cli import main
from pyro_vae.elbos import importance_estimate
from pyro_vae.guides.hierarchical import HierarchicalGaussianGuide
from pyro_vae.inference.ais import ais_log_likelihood
from pyro_vae.inference.latent_joint import LatentJoint
from pyro_vae.inference.local_flow import fit_local_flow, flow_start
from pyro_vae.inference.local_refinement import refine_gaussian
from pyro_vae.inference.posterior_nuts import posterior_nuts
from pyro_vae.models import HierarchicalVAE
from pyro_vae.priors import LocationScalePrior

D, D1, D2, S1, NOISE, IMAGES = 4, 2, 2, 0.6, 0.5, 12
A = torch.diag(torch.tensor([1.5, 0.8]))


class Affine(nn.Module):
    """y -> (M y, c): a linear mean and a constant log-scale, as a layer's nets output them."""

    def __init__(self, weight: torch.Tensor, log_scale: torch.Tensor):
        super().__init__()
        self.weight, self.log_scale = nn.Parameter(weight), nn.Parameter(log_scale)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        loc = y @ self.weight.T
        return torch.cat([loc, self.log_scale.expand(loc.shape)], -1)


class LinearTwoLayer:
    """The model, simulated data, the exact answers and a guide with the exact q(z2 | z1)."""

    def __init__(self):
        q, _ = torch.linalg.qr(torch.randn(D, D1, generator=torch.Generator().manual_seed(0)))
        self.W, self.b = q * torch.tensor([2.0, 1.0]), torch.linspace(-1.0, 1.0, D)
        decoder = nn.Linear(D1, D)
        decoder.weight.data, decoder.bias.data = self.W.clone(), self.b.clone()
        between = Affine(A.clone(), torch.full((D1,), math.log(S1)))
        self.model = HierarchicalVAE(LocationScalePrior(D2), between, decoder,
                                     IdentityGaussian(NOISE), (D1, D2))
        prior_cov = torch.cat([torch.cat([torch.eye(D2), A.T], 1),
                               torch.cat([A, A @ A.T + S1**2 * torch.eye(D1)], 1)])
        self.H = torch.cat([torch.zeros(D, D2), self.W], 1)
        self.marginal = self.H @ prior_cov @ self.H.T + NOISE**2 * torch.eye(D)
        g = torch.Generator().manual_seed(1)
        z = torch.randn(IMAGES, D2 + D1, generator=g) @ torch.linalg.cholesky(prior_cov).T
        self.x = z @ self.H.T + self.b + NOISE * torch.randn(IMAGES, D, generator=g)
        precision = torch.linalg.inv(prior_cov) + self.H.T @ self.H / NOISE**2
        self.cov = torch.linalg.inv(precision)
        self.mean = (self.x - self.b) @ self.H @ self.cov / NOISE**2  # (B, d2 + d1)
        # p(z2 | z1) = N(P^-1 A^T z1 / s1^2, P^-1), P diagonal for a diagonal A
        p = torch.eye(D2) + A.T @ A / S1**2
        self.upper = Affine(torch.linalg.inv(p) @ A.T / S1**2, -0.5 * p.diag().log())
        encoder = nn.Linear(D, 2 * D1)  # q(z1 | x) = N(0, I) for every x: a poor encoder
        nn.init.zeros_(encoder.weight)
        nn.init.zeros_(encoder.bias)
        self.guide = HierarchicalGaussianGuide(encoder, self.upper)

    def exact_guide(self) -> HierarchicalGaussianGuide:
        """q(z1 | x) = p(z1 | x): loc = (x - b) K, K = H Sigma[:, z1] / s^2, a constant scale."""
        gain = self.H @ self.cov[:, D2:] / NOISE**2  # (D, d1)
        encoder = nn.Linear(D, 2 * D1)
        encoder.weight.data = torch.cat([gain.T, torch.zeros(D1, D)])
        encoder.bias.data = torch.cat([-self.b @ gain, 0.5 * self.cov[D2:, D2:].diag().log()])
        return HierarchicalGaussianGuide(encoder, self.upper)

    def log_px(self) -> torch.Tensor:
        return dist.MultivariateNormal(self.b, self.marginal).log_prob(self.x)

    def posterior_z1(self, i: int) -> dist.MultivariateNormal:
        return dist.MultivariateNormal(self.mean[i, D2:], self.cov[D2:, D2:])


@pytest.fixture(scope="module")
def linear():
    return LinearTwoLayer()


def test_joint_is_the_exact_two_layer_density(linear):
    joint = LatentJoint(linear.model, linear.x)
    assert joint.sites == (("z2", D2), ("z1", D1)) and joint.latent_dim == D2 + D1
    z = torch.randn(3, IMAGES, D2 + D1)
    z2, z1 = z[..., :D2], z[..., D2:]
    exact = (dist.Normal(0.0, 1.0).log_prob(z2).sum(-1)
             + dist.Normal(z2 @ A.T, S1).log_prob(z1).sum(-1)
             + dist.Normal(z1 @ linear.W.T + linear.b, NOISE).log_prob(linear.x).sum(-1))
    torch.testing.assert_close(joint.log_joint(z), exact)
    log_prior, log_lik = joint.log_terms(z)
    torch.testing.assert_close(log_lik, dist.Normal(z1 @ linear.W.T + linear.b, NOISE)
                               .log_prob(linear.x).sum(-1))
    assert torch.equal(joint.join(joint.split(z)), z)
    assert joint.sample_prior(5).shape == (5, IMAGES, D2 + D1)


def test_ais_and_is_agree_with_exact_log_px(linear, one_thread):
    exact = linear.log_px()
    annealed = ais_log_likelihood(linear.model, linear.x, steps=60, chains=8, leapfrog=3)
    sampled = importance_estimate(linear.model, linear.guide, linear.x, 2000)
    assert within(annealed.log_likelihood, exact, slack=0.05)
    assert within(sampled.log_likelihood, exact, slack=0.05)
    # q = N(z1; 0, I) times the exact p(z2 | z1): ELBO(q) = log p(x) - KL(N(0, I) || p(z1 | x))
    standard = dist.MultivariateNormal(torch.zeros(D1), torch.eye(D1))
    kl = torch.stack([kl_divergence(standard, linear.posterior_z1(i)) for i in range(IMAGES)])
    assert within(sampled.elbo, exact - kl, slack=0.05)


def test_two_layer_q_star_is_the_exact_posterior(linear, one_thread):
    fit = refine_gaussian(linear.model, linear.guide, linear.x, steps=400, lr=0.1,
                          eval_particles=500)
    # log q*(z2, z1) = log p(z | x): every log weight is log p(x), an ELBO without noise;
    # a wrong density of the concatenation (a missing or misplaced layer) breaks this
    assert float((linear.log_px() - fit.elbo).abs().max()) < 0.005
    assert float(fit.elbo_se.max()) < 0.005
    torch.testing.assert_close(fit.draws.mean(0), linear.mean, atol=0.15, rtol=0)


def test_flow_on_the_concatenation_starts_at_q_and_stays_below_log_px(linear, one_thread):
    # q(z1 | x) q(z2 | z1) = p(z | x): the base starts at the posterior's own moments
    guide = linear.exact_guide()
    loc, scale = flow_start(guide, LatentJoint(linear.model, linear.x))
    torch.testing.assert_close(loc, linear.mean, atol=0.15, rtol=0)
    torch.testing.assert_close(scale, linear.cov.diag().sqrt().expand_as(scale), atol=0.1,
                               rtol=0)
    fit = fit_local_flow(linear.model, guide, linear.x, steps=20, eval_particles=200)
    assert fit.draws.shape[-1] == D2 + D1
    assert float((fit.elbo - linear.log_px()).mean()) <= 3 * float(fit.elbo_se.mean())


@pytest.mark.slow  # 10 s of NUTS; the gaps command's test below runs NUTS on two layers too
def test_nuts_matches_the_exact_joint_posterior(linear, one_thread):
    draws = posterior_nuts(linear.model, linear.x[0], torch.zeros(D2 + D1), samples=300,
                           warmup=150, chains=2)
    sd = linear.cov.diag().sqrt()
    assert draws.draws.shape == (2, 300, D2 + D1)
    assert float(draws.r_hat.max()) < 1.05
    # Monte Carlo error of the mean is sd / sqrt(ESS); ESS >= 100 here
    assert float(draws.ess.min()) > 100
    torch.testing.assert_close(draws.mean, linear.mean[0], atol=float(4 * sd.max() / 10),
                               rtol=0)
    # the joint posterior's correlations of z2 with z1, not only its diagonal
    torch.testing.assert_close(draws.cov, linear.cov, atol=0.3 * float(sd.max() ** 2), rtol=0)
    assert float(linear.cov[:D2, D2:].abs().max()) > 0.1


TINY_2LAYER = ["--config", "iwae_2layer", "--dataset", "digits", "--epochs", "1",
               "--set", "model.latent_dims=[4,2]", "--set", "model.hidden=[16]",
               "--set", "model.hidden_between=[8]", "--set", "data.train_size=64",
               "--set", "data.test_size=8", "--set", "train.batch_size=16",
               "--eval-particles", "4"]
FAST = ["--images", "3", "--eval-particles", "40", "--ais-steps", "10", "--ais-chains", "2",
        "--refine-steps", "10", "--nuts-images", "1", "--nuts-samples", "8", "--quiet"]


def test_gaps_command_on_a_two_layer_checkpoint(tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    assert main(["train", *TINY_2LAYER, "--quiet", "--out", str(run)]) == 0
    out = tmp_path / "gaps"
    assert main(["gaps", "--checkpoint", str(run / "checkpoint.pt"), *FAST, "--out", str(out),
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    header, *rows = [line.split(",") for line in
                     (out / "gaps.csv").read_text().strip().splitlines()]
    assert len(rows) == 3
    columns = {name: [float(row[j]) for row in rows] for j, name in enumerate(header)}
    assert all(math.isfinite(v) for values in columns.values() for v in values)
    for i in range(3):  # the gaps' identity per image, to the csv's 4 decimals
        assert columns["approximation_gap"][i] + columns["amortization_gap"][i] == \
            pytest.approx(columns["inference_gap"][i], abs=2e-4)
        assert columns["inference_gap"][i] >= 0  # the best bound is above q's own ELBO
    cell = lambda key: metrics[key]["mean"]  # noqa: E731
    assert cell("approximation_gap") + cell("amortization_gap") == pytest.approx(
        cell("inference_gap"), abs=1e-5)
    nuts = metrics["nuts"][0]
    assert all(math.isfinite(nuts[f"mean_error_{name}"]) for name in ("q", "q_star", "flow"))
    assert "posterior" not in metrics["figures"]  # two sites: no 2-D grid
    assert "| amortization gap ELBO(q*) - ELBO(q) |" in (out / "gaps.md").read_text()
