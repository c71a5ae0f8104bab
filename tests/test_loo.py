"""LOO on the ArviZ exports ranks models as their held-out log-likelihood does.

The exports' ``log_likelihood`` is the marginal log p(x_i | theta_s), latents integrated
out; for point estimates (toy mle/svi, the VAE's decoder) the draws are chosen so that
PSIS raises no warning and p_loo means what it should (pytest turns warnings into errors).
"""

import warnings

import pyro
import pytest
import torch

from pyro_vae.arviz import az, toy_inference_data, vae_inference_data
from pyro_vae.data import load_dataset
from pyro_vae.elbos import importance_estimate
from pyro_vae.errors import UserError
from pyro_vae.inference import uniform_scale as toy
from pyro_vae.models.uniform_scale import UniformScale
from pyro_vae.rng import single_thread
from pyro_vae.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


def _compare(idatas):
    with warnings.catch_warnings():
        # arviz 0.23's compare sorts with pandas' deprecated inplace=True: not ours to fix
        warnings.filterwarnings("ignore", message="The inplace keyword")
        return az.compare(idatas)


def test_compare_ranks_toy_fits_as_their_exact_held_out_log_likelihood():
    """The MLE against a deliberately mis-fitted theta, both exported as point estimates.

    Their LOO scores must order them as the exact test log-likelihood does, each pay about
    the three parameters' price (p_loo ~ 3: the conditional log p(x_i | z_i) export paid
    30-50 here, a point mass would raise a Pareto-k warning), and differ by what their exact
    training log-likelihoods differ by.
    """
    x = toy.simulate(0.5, 2.0, 1.0, 200, seed=0)
    x_test = toy.simulate(0.5, 2.0, 1.0, 2000, seed=100)
    fits = {"mle": toy.fit_mle(x).model, "misfit": UniformScale(0.3, 3.0, 1.0)}
    with torch.no_grad():
        train = {k: m.log_marginal(x).sum().item() for k, m in fits.items()}
        test = {k: m.log_marginal(x_test).mean().item() for k, m in fits.items()}
    assert test["mle"] > test["misfit"] + 0.02  # a clear order to recover (nats per point)
    idatas = {k: toy_inference_data(x, model=m) for k, m in fits.items()}
    loos = {k: az.loo(idata) for k, idata in idatas.items()}
    for loo in loos.values():
        assert 2.0 < loo.p_loo < 4.5
    ranking = _compare(idatas)
    assert list(ranking.index) == sorted(test, key=test.get, reverse=True)
    elpd_gap = loos["mle"].elpd_loo - loos["misfit"].elpd_loo
    assert elpd_gap == pytest.approx(train["mle"] - train["misfit"], abs=2.0)


def test_svi_export_pays_for_three_parameters_without_pareto_warnings():
    x = toy.simulate(0.5, 2.0, 1.0, 200, seed=1)
    fitted = toy.fit_svi(x, seed=0, options=toy.ToyOptions(steps=100))
    idata = toy_inference_data(x, model=fitted.model, guide=fitted.guide)
    loo = az.loo(idata, pointwise=True)
    assert 2.0 < loo.p_loo < 4.5
    with torch.no_grad():
        plug_in = fitted.model.log_marginal(x).sum().item()
    assert loo.elpd_loo == pytest.approx(plug_in - loo.p_loo, abs=1.5)
    # the draws are centred on the point estimate in u = (log a, log(b - a), mu)
    theta = fitted.model.theta()
    a, b, mu = (torch.as_tensor(idata.posterior[k].values) for k in ("a", "b", "mu"))
    for draws, value in ((a.log(), theta["a"]), ((b - a).log(), theta["b"] - theta["a"]),
                         (mu, theta["mu"])):
        centre = value if draws is mu else torch.tensor(value).log()
        assert abs(draws.mean() - centre) < 4 * draws.std() / 200**0.5  # the mean's s.e.


def test_point_estimate_draws_have_the_mle_standard_errors():
    """At the MLE the empirical Fisher information estimates the observed information whose
    inverse gives the mle route's standard errors: the draws' spread is theirs."""
    x = toy.simulate(0.5, 2.0, 1.0, 3000, seed=2)
    fitted = toy.fit_mle(x)
    pyro.set_rng_seed(0)
    draws = toy.theta_draws_at(x, fitted.model, 4000)
    assert bool((draws["b"] > draws["a"]).all() and (draws["a"] > 0).all())
    for name in ("a", "b", "mu"):
        assert draws[name].std().item() == pytest.approx(fitted.extra[f"{name}_se"], rel=0.15)


@pytest.fixture(scope="module")
def digits_vae():
    """A small VAE trained for a few epochs on binarized 8x8 digits, and 50 test images."""
    from conftest import tiny_vae

    data = load_dataset("digits")
    x_train, x_test = data.x_train[:1000].round(), data.x_test[:50].round()
    pyro.set_rng_seed(0)
    with single_thread():
        model, guide = tiny_vae(64, latent_dim=3, hidden=16)
        fit(model, guide, x_train, epochs=3, batch_size=100, progress=False)
    return model, guide, x_test


def test_vae_export_elpd_is_the_importance_sampled_log_likelihood(digits_vae):
    model, guide, x = digits_vae
    idata = vae_inference_data(model, guide, x, num_particles=1000)
    assert idata.log_likelihood["x"].shape == (1, 200, 50)
    assert idata.log_likelihood.attrs["num_particles"] == 1000
    loo = az.loo(idata, pointwise=True)  # no Pareto-k warning (warnings are errors here)
    assert float(loo.pareto_k.max()) < loo.good_k
    # no posterior over the decoder's weights: LOO pays nothing (nats, over 50 images; the
    # conditional log p(x_i | z_is) it replaced varies with each image's z draw: p_loo >> 1)
    assert 0 <= loo.p_loo < 0.05
    pyro.set_rng_seed(1)
    estimate = importance_estimate(model, guide, x, 1000).log_likelihood.double()
    # the same K-particle estimator, other particles: equal within Monte Carlo error
    difference = torch.as_tensor(loo.loo_i.values) - estimate
    assert abs(difference.mean()) < 4 * difference.std() / len(x) ** 0.5 + 1e-3


def test_an_estimate_where_the_likelihood_is_flat_is_refused_in_one_line(tmp_path):
    """100 points whose MLE has b - a ~ 2e-4: the Gaussian at the estimate has no valid draws,
    and the export says so instead of failing inside a distribution's validation."""
    x = toy.simulate(0.5, 2.0, 1.0, 100, seed=0)
    with pytest.raises(UserError, match="export --inference nuts instead"):
        toy.theta_draws_at(x, toy.fit_mle(x).model, 200)
