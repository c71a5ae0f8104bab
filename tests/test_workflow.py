"""ArviZ export: every group with the right dimensions, and az.loo runs on the result."""

import warnings

import pytest
import torch

from pyro_vae.arviz import az, gmm_inference_data, toy_inference_data
from pyro_vae.cli import main
from pyro_vae.inference import uniform_scale as toy
from pyro_vae.inference.gmm import fit_gmm, num_parameters
from pyro_vae.models.gmm_density import random_mixture, sample_mixture
from pyro_vae.models.uniform_scale import UniformScaleMarginal
from pyro_vae.rng import single_thread

GROUPS = {"posterior", "posterior_predictive", "log_likelihood", "observed_data", "prior",
          "prior_predictive"}


@pytest.fixture(scope="module")
def toy_nuts():
    x = toy.simulate(0.5, 2.0, 1.0, 150, seed=0)
    with single_thread():
        fitted = toy.fit_nuts(x, options=toy.ToyOptions(warmup=100, samples=200))
    return x, fitted


def test_toy_nuts_inference_data(toy_nuts):
    x, fitted = toy_nuts
    idata = toy_inference_data(x, theta_draws=fitted.draws, num_prior_draws=50)
    assert GROUPS <= set(idata.groups())
    for name in ("a", "b", "mu"):
        assert idata.posterior[name].shape == (1, 200)
        assert idata.prior[name].shape == (1, 50)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "obs")
    assert idata.log_likelihood["x"].shape == (1, 200, 150)
    assert idata.posterior_predictive["x"].shape == (1, 200, 150)
    assert idata.prior_predictive["x"].shape == (1, 50, 150)
    assert idata.observed_data["x"].shape == (150,)
    assert bool((idata.posterior["b"] > idata.posterior["a"]).all())
    # the exact marginal: the mean over draws is close to log p(x | posterior mean)
    with torch.no_grad():
        plug_in = fitted.model.log_marginal(x).sum().item()
    loo = az.loo(idata)
    assert loo.elpd_loo == pytest.approx(plug_in, abs=5.0)
    assert loo.elpd_loo < plug_in  # LOO pays for the three fitted parameters


def test_toy_svi_inference_data_draws_theta_at_the_estimate_and_z_in_its_support():
    x = toy.simulate(0.5, 2.0, 1.0, 40, seed=1)
    with single_thread():
        fitted = toy.fit_svi(x, options=toy.ToyOptions(steps=30))
    idata = toy_inference_data(x, model=fitted.model, guide=fitted.guide, num_draws=25,
                               num_prior_draws=10)
    assert GROUPS <= set(idata.groups())
    assert idata.posterior["z"].shape == (1, 25, 40)
    assert idata.log_likelihood["x"].shape == (1, 25, 40)
    # the point estimate is in the posterior group: its attributes and its draws' centre
    theta = fitted.model.theta()
    for name in ("a", "b", "mu"):
        assert idata.posterior[name].shape == (1, 25)
        assert idata.posterior.attrs[f"{name}_hat"] == theta[name]
    a, b, mu = (torch.as_tensor(idata.posterior[k].values[0]) for k in ("a", "b", "mu"))
    z = torch.as_tensor(idata.posterior["z"].values[0])
    assert ((z > a[:, None]) & (z < b[:, None])).all()  # each draw's z inside its own (a, b)
    # the log-likelihood is the exact marginal at each draw of theta, z integrated out
    exact = UniformScaleMarginal(a[:, None], b[:, None], mu[:, None]).log_prob(x)
    assert torch.allclose(torch.as_tensor(idata.log_likelihood["x"].values[0]), exact)


def test_gmm_inference_data_and_loo():
    truth = random_mixture(2, 2, separation=5.0, seed=0)
    x, _ = sample_mixture(truth, 200, torch.Generator().manual_seed(0))
    fitted = fit_gmm(x, 2, "diag", "vi", steps=50, num_draws=200, restarts=1)
    idata = gmm_inference_data(x, fitted, num_prior_draws=20)
    assert GROUPS <= set(idata.groups())
    assert idata.posterior["locs"].dims == ("chain", "draw", "component", "dim")
    assert idata.posterior["locs"].shape == (1, 200, 2, 2)
    assert idata.posterior["weights"].shape == (1, 200, 2)
    assert idata.log_likelihood["x"].shape == (1, 200, 200)
    assert idata.posterior_predictive["x"].shape == (1, 200, 200, 2)
    assert idata.observed_data["x"].dims == ("obs", "dim")
    assert idata.prior_predictive["x"].shape == (1, 20, 200, 2)
    with warnings.catch_warnings():
        # variational draws are not the exact posterior, so PSIS may flag a few points
        # (Pareto k > 0.57 at 200 draws); that diagnosis is loo's job, not a failure here
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        loo = az.loo(idata, pointwise=True)
    assert float((loo.pareto_k < 0.7).mean()) > 0.95
    # LOO pays roughly one nat per parameter (p_loo) against the in-sample predictive density
    in_sample = fitted.log_likelihood(x).sum().item()
    assert 0 < in_sample - loo.elpd_loo < 2 * num_parameters(2, 2, "diag")


def test_gmm_point_estimate_is_refused():
    x = torch.randn(50, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="point estimate"):
        gmm_inference_data(x, fit_gmm(x, 2, "diag", "map", restarts=1))


def test_toy_cli_writes_netcdf(tmp_path, capsys):
    path = tmp_path / "post.nc"
    code = main(["toy", "--simulate", "0.5,2,1,60", "--inference", "nuts", "--warmup", "30",
                 "--samples", "40", "--chains", "1", "--idata", str(path)])
    assert code == 0
    idata = az.from_netcdf(str(path))
    assert idata.posterior["a"].shape == (1, 40)
    assert idata.log_likelihood["x"].shape == (1, 40, 60)


def test_toy_cli_exports_the_mle_as_draws_at_the_estimate(tmp_path, capsys):
    path = tmp_path / "mle.nc"
    # 300 points: with a few dozen, single points steer theta and PSIS rightly warns
    assert main(["toy", "--simulate", "0.5,2,1,300", "--inference", "mle",
                 "--idata", str(path)]) == 0
    idata = az.from_netcdf(str(path))
    assert idata.posterior["a"].shape == (1, 200)
    assert idata.log_likelihood["x"].shape == (1, 200, 300)
    assert 2 < az.loo(idata).p_loo < 4.5  # about the three parameters' price


def test_gmm_cli_writes_netcdf(tmp_path, capsys):
    path = tmp_path / "gmm.nc"
    code = main(["gmm", "--simulate", "150,2,2", "--components", "2", "--inference", "vi",
                 "--steps", "20", "--restarts", "1", "--out", str(tmp_path / "run"),
                 "--idata", str(path)])
    assert code == 0
    idata = az.from_netcdf(str(path))
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "obs")
    assert idata.log_likelihood["x"].shape[-1] == 150
    assert main(["gmm", "--simulate", "150,2,2", "--components", "2", "--inference", "map",
                 "--out", str(tmp_path / "map"), "--idata", str(path)]) == 2


def test_toy_prior_draws_follow_the_prior_by_predictive():
    """Predictive's vectorized prior draws: log a, log(b - a) ~ N(log s, 2), mu ~ N(mean, 10 s),
    and each prior predictive row drawn from its own theta (spread ~ its scale)."""
    from pyro_vae.arviz import toy_prior_draws

    x = toy.simulate(0.5, 2.0, 1.0, 50, seed=2)
    prior = toy_prior_draws(x, 4000)
    assert prior["x"].shape == (4000, 50) and prior["a"].shape == (4000,)
    s, se = x.std().log(), 2.0 / 4000**0.5
    assert prior["a"].log().mean().item() == pytest.approx(s.item(), abs=4 * se)
    assert (prior["b"] - prior["a"]).log().std().item() == pytest.approx(2.0, rel=0.05)
    assert ((prior["mu"] - x.mean()) / (10 * x.std())).std().item() == pytest.approx(1.0, rel=0.05)
    # |x - mu| / z is |N(0, 1)| and a < z < b: the median row-wise ratio lies in its bounds
    ratio = ((prior["x"] - prior["mu"][:, None]).abs().median(1).values / 0.6745)
    assert bool(((ratio > 0.5 * prior["a"]) & (ratio < 2 * prior["b"])).float().mean() > 0.95)
