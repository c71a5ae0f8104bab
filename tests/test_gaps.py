"""Inference gaps against closed forms: probabilistic PCA as a Pyro VAE model.

    z ~ N(0, I_d),   x | z ~ N(W z + b, s^2 I_D)
    p(x) = N(x; b, W W^T + s^2 I),   p(z | x) = N(mu, Sigma),
    Sigma = (I + W^T W / s^2)^-1,    mu = Sigma W^T (x - b) / s^2

so log p(x), the posterior and every KL are exact.  With orthogonal columns of W the
posterior is diagonal (the Gaussian guide's family holds it: approximation gap 0); with
correlated columns the best diagonal Gaussian misses it by the mean-field KL
(1/2)(sum_j log Lambda_jj - log det Lambda), Lambda = Sigma^-1.
"""

import json
import math

import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.distributions import kl_divergence

from pyro_vae.cli import main
from pyro_vae.elbos import importance_estimate
from pyro_vae.guides import AmortizedGaussianGuide
from pyro_vae.inference.ais import ais, ais_log_likelihood, bdmc, sigmoid_schedule
from pyro_vae.inference.latent_joint import LatentJoint
from pyro_vae.inference.local_flow import fit_local_flow
from pyro_vae.inference.local_refinement import refine_gaussian
from pyro_vae.inference.posterior_nuts import posterior_nuts
from pyro_vae.models import VAE
from pyro_vae.priors import LocationScalePrior

D, LATENT, NOISE, IMAGES = 5, 2, 0.5, 12


class IdentityGaussian(nn.Module):
    """x | z ~ N(decoder(z), s^2 I): the decoder's output is the mean itself."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, output: torch.Tensor) -> dist.Distribution:
        return dist.Normal(output, self.scale).to_event(1)


class PPCA:
    """The model, simulated data and the exact answers."""

    def __init__(self, weight: torch.Tensor):
        self.W, self.b = weight, torch.linspace(-1.0, 1.0, D)
        decoder = nn.Linear(LATENT, D)
        decoder.weight.data, decoder.bias.data = self.W.clone(), self.b.clone()
        self.model = VAE(LocationScalePrior(LATENT), decoder, IdentityGaussian(NOISE))
        g = torch.Generator().manual_seed(1)
        z = torch.randn(IMAGES, LATENT, generator=g)
        self.x = z @ self.W.T + self.b + NOISE * torch.randn(IMAGES, D, generator=g)
        self.precision = torch.eye(LATENT) + self.W.T @ self.W / NOISE**2
        self.cov = torch.linalg.inv(self.precision)
        self.mean = (self.x - self.b) @ self.W @ self.cov / NOISE**2  # (B, d); Sigma symmetric

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        marginal = self.W @ self.W.T + NOISE**2 * torch.eye(D)
        return dist.MultivariateNormal(self.b, marginal).log_prob(x)

    def posterior(self, i: int) -> dist.MultivariateNormal:
        return dist.MultivariateNormal(self.mean[i], self.cov)

    def mean_field_gap(self) -> float:
        """min over diagonal Gaussians q of KL(q || p(z | x)), the same for every x."""
        return 0.5 * float(self.precision.diag().log().sum() - torch.logdet(self.precision))


def orthogonal_weight() -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(D, LATENT, generator=torch.Generator().manual_seed(0)))
    return q * torch.tensor([2.0, 1.0])  # W^T W = diag(4, 1): a diagonal posterior


def prior_encoder() -> AmortizedGaussianGuide:
    """A deliberately poor encoder: q(z | x) = N(0, I) = p(z) for every x."""
    encoder = nn.Linear(D, 2 * LATENT)
    nn.init.zeros_(encoder.weight)
    nn.init.zeros_(encoder.bias)
    return AmortizedGaussianGuide(encoder)


@pytest.fixture
def diagonal():
    return PPCA(orthogonal_weight())


@pytest.fixture
def correlated():
    return PPCA(torch.tensor([[2.0, 1.5], [1.0, 1.0], [0.5, -0.5], [1.0, 0.8], [0.0, 1.0]]))


def within(estimate: torch.Tensor, exact: torch.Tensor, slack: float = 0.0) -> bool:
    """mean(estimate - exact) is within 3 standard errors over images (plus ``slack``)."""
    error = estimate - exact
    return abs(float(error.mean())) <= 3 * float(error.std()) / math.sqrt(len(error)) + slack


def test_joint_is_the_model_density(diagonal):
    z = torch.randn(3, IMAGES, LATENT)
    log_prior, log_lik = LatentJoint(diagonal.model, diagonal.x).log_terms(z)
    expected_lik = dist.Normal(z @ diagonal.W.T + diagonal.b, NOISE).log_prob(diagonal.x).sum(-1)
    torch.testing.assert_close(log_lik, expected_lik)
    torch.testing.assert_close(log_prior, dist.Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_ais_and_is_agree_with_exact_log_px(diagonal, one_thread):
    exact = diagonal.log_px(diagonal.x)
    annealed = ais_log_likelihood(diagonal.model, diagonal.x, steps=100, chains=8, leapfrog=3)
    sampled = importance_estimate(diagonal.model, prior_encoder(), diagonal.x, 2000)
    assert within(annealed.log_likelihood, exact, slack=0.05)
    assert within(sampled.log_likelihood, exact, slack=0.05)
    assert 0.3 < float(annealed.acceptance.mean()) < 1.0


def test_ais_rises_towards_log_px_and_stays_below(diagonal, one_thread):
    exact = diagonal.log_px(diagonal.x)
    joint = LatentJoint(diagonal.model, diagonal.x)
    errors = []
    for steps in (1, 10, 100):
        estimate = ais(joint, sigmoid_schedule(steps), chains=16, leapfrog=3)
        error = estimate.log_likelihood - exact
        errors.append(float(error.mean()))
        # a stochastic lower bound: never above log p(x) beyond noise
        assert errors[-1] <= 3 * float(error.std()) / math.sqrt(IMAGES) + 0.02
    assert errors[0] < errors[1] < errors[2]
    assert errors[0] < -1.0  # one step is importance sampling from the prior: far below
    assert errors[2] > -0.2


def test_bdmc_sandwiches_log_px(diagonal, one_thread):
    x, lower, upper = bdmc(diagonal.model, IMAGES, steps=50, chains=4, leapfrog=3)
    exact = diagonal.log_px(x)
    assert float((lower.log_likelihood - exact).mean()) <= 0.05
    assert float((upper.log_likelihood - exact).mean()) >= -0.05
    assert float((upper.log_likelihood - lower.log_likelihood).mean()) < 0.5


def test_refined_q_star_reaches_the_exact_posterior(diagonal, one_thread):
    exact = diagonal.log_px(diagonal.x)
    fit = refine_gaussian(diagonal.model, prior_encoder(), diagonal.x, steps=600, lr=0.1,
                          eval_particles=2000)
    approximation_gap = exact - fit.elbo
    # q* = p(z | x) makes every log weight log p(x): the ELBO is exact, with no noise
    assert float(approximation_gap.abs().max()) < 0.01
    torch.testing.assert_close(fit.draws.mean(0), diagonal.mean, atol=0.1, rtol=0)
    assert float(fit.late_gain.abs().max()) < 0.05  # the stopping rule's check: converged


def test_poor_encoder_has_a_positive_amortization_gap(diagonal, one_thread):
    guide = prior_encoder()
    amortized = importance_estimate(diagonal.model, guide, diagonal.x, 2000)
    refined = refine_gaussian(diagonal.model, guide, diagonal.x, steps=600, lr=0.1,
                              eval_particles=2000)
    amortization_gap = refined.elbo - amortized.elbo
    # q = p(z): its gap is KL(p(z) || p(z | x)) exactly, q*'s is 0
    prior = dist.MultivariateNormal(torch.zeros(LATENT), torch.eye(LATENT))
    kl = torch.stack([kl_divergence(prior, diagonal.posterior(i)) for i in range(IMAGES)])
    assert float(amortization_gap.min()) > 0.5
    assert within(amortization_gap, kl, slack=0.05)


def test_flow_closes_the_gaussian_familys_gap(correlated, one_thread):
    exact = correlated.log_px(correlated.x)
    guide = prior_encoder()
    gaussian = refine_gaussian(correlated.model, guide, correlated.x, steps=600, lr=0.1,
                               eval_particles=2000)
    flow = fit_local_flow(correlated.model, guide, correlated.x, steps=600, lr=0.05,
                          eval_particles=2000)
    gap = correlated.mean_field_gap()
    assert gap > 0.3  # the posterior is far from diagonal
    assert abs(float((exact - gaussian.elbo).mean()) - gap) < 0.05
    assert float((exact - flow.elbo).mean()) < 0.5 * gap


def test_nuts_matches_the_exact_posterior(diagonal, one_thread):
    draws = posterior_nuts(diagonal.model, diagonal.x[0], torch.zeros(LATENT), samples=300,
                           warmup=150, chains=2)
    sd = diagonal.cov.diag().sqrt()
    assert draws.draws.shape == (2, 300, LATENT)
    # Monte Carlo error of the mean is sd / sqrt(ESS); ESS >= 100 here
    assert float(draws.ess.min()) > 100
    assert float(draws.r_hat.max()) < 1.05
    torch.testing.assert_close(draws.mean, diagonal.mean[0], atol=float(4 * sd.max() / 10),
                               rtol=0)
    torch.testing.assert_close(draws.cov, diagonal.cov, atol=0.3 * float(sd.max() ** 2), rtol=0)


TINY = ["--set", "data.dataset='digits'", "--set", "model.latent_dim=2", "--set",
        "model.hidden=[16]", "--set", "inference.eval_particles=5", "--set",
        "data.train_size=200", "--set", "data.test_size=20"]
FAST = ["--images", "4", "--eval-particles", "40", "--ais-steps", "10", "--ais-chains", "2",
        "--refine-steps", "20", "--nuts-images", "1", "--nuts-samples", "8", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert main(["train", *TINY, "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    return out / "checkpoint.pt"


def test_gaps_command_writes_its_table(checkpoint, tmp_path, capsys, one_thread):
    out = tmp_path / "gaps"
    assert main(["gaps", "--checkpoint", str(checkpoint), *FAST, "--out", str(out),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["num_images"] == metrics["num_images"] == 4
    cell = lambda key: metrics[key]["mean"]  # noqa: E731
    # the identities that define the gaps hold on the averages
    assert cell("approximation_gap") + cell("amortization_gap") == pytest.approx(
        cell("inference_gap"), abs=1e-4)
    assert cell("log_px") >= max(cell("log_px_is"), cell("log_px_ais")) - 1e-4
    assert cell("inference_gap") >= 0  # the best bound is above the ELBO of q's own draws
    rows = (out / "gaps.csv").read_text().strip().splitlines()
    assert len(rows) == 5 and rows[0].startswith("image,log_px,")
    table = (out / "gaps.md").read_text()
    assert "| amortization gap ELBO(q*) - ELBO(q) |" in table and "K = 40" in table
    assert (out / "gaps.png").stat().st_size > 0
    assert (out / "posterior.png").stat().st_size > 0  # a 2-D code: the posterior panels
    assert metrics["nuts"][0]["image"] == 0 and "max_r_hat" in metrics["nuts"][0]
    # auto threads, never more than the one the fixture left torch
    assert metrics["threads"] == 1 and metrics["threads_reason"].startswith("auto: ")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--images", "0"], "--images must be a positive whole number"),
        (["--images", "100000"], "has 300 images"),
        (["--ais-steps", "0"], "--ais-steps must be a positive"),
        (["--eval-particles", "0"], "--eval-particles"),
        (["--nuts-samples", "2"], "at least 4"),
    ],
)
def test_gaps_refuses_bad_budgets_in_one_line(checkpoint, tmp_path, capsys, flags, message):
    code = main(["gaps", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                 "--quiet", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def test_gaps_refuses_a_missing_checkpoint(tmp_path, capsys):
    code = main(["gaps", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
