"""Every registered prior x likelihood x guide (and network) builds and takes a finite SVI step.

The parametrization reads the registries at collection time, so a new entry is
tested automatically; ``cauchy_test`` below is registered here, in the test file,
and trained through the config path alone.
"""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae.build import build_vae
from pyro_vae.cli import main
from pyro_vae.config import load_config
from pyro_vae.elbos import ELBOS, EstimatorELBO, make_elbo
from pyro_vae.guides import GUIDES
from pyro_vae.likelihoods import LIKELIHOODS
from pyro_vae.nets import NETWORKS
from pyro_vae.priors import PRIORS, LocationScalePrior
from pyro_vae.train import fit


# adding a prior: one function and one @register line, no model or training code
@PRIORS.register("cauchy_test")
def cauchy_test(latent_dim: int) -> nn.Module:
    return LocationScalePrior(latent_dim, dist.Cauchy)


# guides of the VAE's kind: built around an encoder network
VAE_GUIDES = [name for name in GUIDES.names() if hasattr(GUIDES.get(name), "encoder_features")]
# a point mass has no scale: the VampPrior's mixture of q(z | u_k) does not exist for it
NONSENSE = {("vamp", "delta")}
SIDE, LATENT = 8, 3
D = SIDE * SIDE


def tiny_config(prior="normal", likelihood="bernoulli", guide="gaussian", network="mlp"):
    return load_config(None, [
        f'prior.name="{prior}"', f'likelihood.name="{likelihood}"', f'guide.name="{guide}"',
        f'model.network="{network}"', f"model.latent_dim={LATENT}", "model.hidden=[16]",
        "model.channels=[4, 8]", "prior.components=3", "guide.flow_hidden=[6]",
    ])


def tiny_data(likelihood: str) -> torch.Tensor:
    """12 rows of 8x8 pixels: binary for Bernoulli, grey levels with exact 0s and 1s otherwise."""
    x = torch.rand(12, D, generator=torch.Generator().manual_seed(0))
    if likelihood == "bernoulli":
        return x.round()
    x[:, :8], x[:, 8:16] = 0.0, 1.0  # the Beta likelihood must cope with the ends
    return x


@pytest.mark.parametrize("guide", VAE_GUIDES)
@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
@pytest.mark.parametrize("prior", PRIORS.names())
def test_combination_takes_a_finite_svi_step(prior, likelihood, guide):
    config = tiny_config(prior, likelihood, guide)
    if (prior, guide) in NONSENSE:
        with pytest.raises(ValueError, match="prior.name"):
            build_vae(config, D, binary_data=likelihood == "bernoulli")
        return
    model, guide_ = build_vae(config, D, binary_data=likelihood == "bernoulli")
    x = tiny_data(likelihood)
    before = [p.detach().clone() for p in model.decoder.parameters()]
    result = fit(model, guide_, x, epochs=1, batch_size=len(x), elbo="auto", progress=False)
    assert result.elbo in ("meanfield", "trace")
    assert len(result.train_elbo) == 1 and math.isfinite(result.train_elbo[0])
    changed = zip(before, model.decoder.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in changed)
    assert model.sample_means(2).shape == (2, D)


@pytest.mark.parametrize("side", [8, 28])
@pytest.mark.parametrize("network", NETWORKS.names())
def test_network_shapes_pass_leading_dims(network, side):
    """Encoder (..., D) -> (..., 2L), decoder (..., L) -> (..., D), with particle dims in front."""
    config = tiny_config(network=network)
    model, guide = build_vae(config, side * side, image_shape=(side, side))
    x = torch.rand(5, side * side).round()
    assert guide.encoder(x).shape == (5, 2 * LATENT)
    assert model.decoder(torch.randn(7, 5, LATENT)).shape == (7, 5, side * side)


def test_conv_rejects_images_it_cannot_halve_twice():
    with pytest.raises(ValueError, match="conv"):
        build_vae(tiny_config(network="conv"), 30)


def test_prior_registered_in_a_test_file_trains_from_the_config_path(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--set", 'prior.name="cauchy_test"', "--dataset", "digits",
            "--set", "data.train_size=64", "--set", "data.test_size=16",
            "--set", "model.hidden=[16]",
            "--latent-dim", "2", "--epochs", "1", "--eval-particles", "5", "--quiet", "--json",
            "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["config"]["prior"]["name"] == "cauchy_test"
    assert metrics["elbo"] == "trace"  # no closed-form KL(Normal || Cauchy)
    assert math.isfinite(metrics["test_log_likelihood"])
    assert 'name = "cauchy_test"' in (out / "config.toml").read_text()
    # the checkpoint rebuilds through the same registry
    evaluate = ["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--eval-particles", "3"]
    assert main(evaluate) == 0


@pytest.mark.parametrize("name", ELBOS.names())
def test_every_elbo_is_a_pyro_elbo_and_svi_trains_with_it(name):
    """Each registry entry is the ``loss=`` of plain ``pyro.infer.SVI`` (iwae, renyi, fused
    and fused_trace used to raise TypeError there), and ``loss``, ``loss_and_grads`` and
    ``differentiable_loss`` are one estimator: the same value from the same draws."""
    data = torch.tensor([0.3, -1.0, 2.0])

    def model():
        with pyro.plate("data", 3):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=data)

    def guide():
        loc = pyro.param("loc", torch.zeros(3))
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Normal(loc, 1.0))

    elbo = make_elbo(name)
    assert isinstance(elbo, EstimatorELBO)
    values = []
    for method in (elbo.loss, elbo.loss_and_grads, elbo.differentiable_loss):
        pyro.set_rng_seed(4)
        values.append(torch.as_tensor(method(model, guide)).detach().item())
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert values[0] == pytest.approx(values[2], rel=1e-6)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), loss=elbo)
    before = pyro.param("loc").detach().clone()
    assert math.isfinite(svi.step())
    assert not torch.equal(pyro.param("loc").detach(), before)


def test_score_leaves_the_users_distributions_as_they_were():
    """The score ELBO wraps each latent site's distribution; it used to switch off
    ``has_rsample`` on the user's own object, which then stayed non-reparameterized."""
    prior = dist.Normal(torch.zeros(3), 1.0)
    posterior = dist.Normal(torch.zeros(3), 1.0)

    def model():
        with pyro.plate("data", 3):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z, 1.0), obs=torch.ones(3))

    def guide():
        with pyro.plate("data", 3):
            pyro.sample("z", posterior)

    make_elbo("score").loss(model, guide)
    assert prior.has_rsample and posterior.has_rsample


def test_inferring_the_plate_nesting_prints_nothing(capfd):
    """Pyro announces its guess at INFO on stderr; the registry's ELBOs make it quietly."""
    def model():
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Normal(pyro.param("m", torch.zeros(3)), 1.0))

    make_elbo("trace").loss(model, guide)
    assert make_elbo("trace").max_plate_nesting == float("inf")  # inferred, not fixed
    assert "Guessed max_plate_nesting" not in capfd.readouterr().err
