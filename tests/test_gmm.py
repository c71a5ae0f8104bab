"""The Gaussian mixture: model identities, sampling, recovery, EM against scikit-learn, NUTS."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta, init_to_value
from scipy import stats
from sklearn.mixture import GaussianMixture

from pyro_vae.errors import UserError
from pyro_vae.inference.gmm import (
    bic,
    build_model,
    fit_gmm,
    num_parameters,
    select_components,
    unconstrained_potential,
)
from pyro_vae.inference.gmm_em import em, second_moments
from pyro_vae.models import gmm_density
from pyro_vae.models.gmm import GLOBAL_SITES, MixtureParams
from pyro_vae.models.gmm_density import (
    component_log_density,
    log_joint,
    log_marginal,
    random_mixture,
    responsibilities,
    sample_mixture,
)

# small tensors, and NUTS: on the shared 2-core machine a second intra-op thread's
# spin-waiting made NUTS 14x slower (measured)
pytestmark = pytest.mark.usefixtures("one_thread")


def _simulate(k, d, n, *, full, separation=4.0, seed=0):
    truth = random_mixture(k, d, separation=separation, anisotropy=3.0, full=full, seed=seed)
    x, z = sample_mixture(truth, n, torch.Generator().manual_seed(seed + 100))
    return truth, x, z


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_enumerated_elbo_with_point_mass_guides_is_the_logsumexp_marginal(covariance):
    """-TraceEnum_ELBO(model, AutoDelta) = log p(x | theta) + log p(theta), z summed by hand."""
    truth, x, _ = _simulate(3, 3, 40, full=covariance == "full")
    model = build_model(x, 3, covariance)
    # any point works; use one away from the truth so nothing is special about it
    params = MixtureParams(truth.weights.flip(0), truth.locs + 0.3, truth.scales * 1.2,
                           truth.chol_corr)
    guide = AutoDelta(poutine.block(model, expose=list(GLOBAL_SITES)),
                      init_loc_fn=init_to_value(values=params.sites()))
    elbo = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)

    # by hand: scipy densities, a Python sum over components, no torch distributions
    covs = params.covariances().numpy()
    by_hand = sum(
        math.log(sum(params.weights[j].item()
                     * stats.multivariate_normal(params.locs[j].numpy(), covs[j]).pdf(xi)
                     for j in range(3)))
        for xi in x.numpy()
    )
    log_prior = model.log_prior(params).item()
    assert elbo == pytest.approx(by_hand + log_prior, rel=1e-9, abs=1e-7)
    assert log_joint(model, params, x).item() == pytest.approx(elbo, rel=1e-12, abs=1e-9)
    # the E-step's matrix-product densities are the model's obs distribution
    direct = model.component_distribution(params).log_prob(x[:, None, :])
    torch.testing.assert_close(component_log_density(x, params), direct, rtol=1e-10, atol=1e-10)
    resp = responsibilities(x, params)
    torch.testing.assert_close(resp.sum(-1), torch.ones(len(x), dtype=x.dtype))


def test_row_blocked_densities_and_moments_match_direct_ones(monkeypatch):
    """EM's full-covariance densities (values and gradients) and second moments do not depend on
    how the points are split into row blocks."""
    truth, x, _ = _simulate(3, 4, 50, full=True)
    model = build_model(x, 3, "full")
    resp = responsibilities(x, truth)
    monkeypatch.setattr(gmm_density, "BLOCK_ELEMENTS", 25)  # K D = 12: two points per block

    def densities_and_gradients(density):
        locs, scales = truth.locs.clone().requires_grad_(), truth.scales.clone().requires_grad_()
        values = density(MixtureParams(truth.weights, locs, scales, truth.chol_corr))
        values.sum().backward()
        return values.detach(), locs.grad, scales.grad

    blocked = densities_and_gradients(lambda p: component_log_density(x, p))
    direct = densities_and_gradients(
        lambda p: model.component_distribution(p).log_prob(x[:, None, :]))
    for ours, theirs in zip(blocked, direct, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(second_moments(x, resp),
                               torch.einsum("nk,nd,ne->kde", resp, x, x), rtol=1e-12, atol=1e-12)


def test_index_sampling_frequencies_match_alpha():
    """Index j ~ alpha, then x ~ component j: chi-square goodness of fit at the 0.1% level."""
    weights = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    params = MixtureParams(weights, torch.arange(4.0, dtype=torch.float64)[:, None] * 100,
                           torch.ones(4, 1, dtype=torch.float64))
    n = 20000
    x, z = sample_mixture(params, n, torch.Generator().manual_seed(1))
    counts = torch.bincount(z, minlength=4).numpy()
    assert stats.chisquare(counts, weights.numpy() * n).pvalue > 1e-3
    # each x came from its own component (means 100 apart, unit scales)
    assert (x[:, 0] - 100 * z).abs().max() < 6

    # the Pyro model, run generatively with the globals fixed, draws indices the same way
    model = build_model(x, 4, "diag")
    trace = poutine.trace(poutine.condition(model, data=params.sites())).get_trace(n=5000)
    z_model = trace.nodes["assignment"]["value"]
    counts = torch.bincount(z_model, minlength=4).numpy()
    assert stats.chisquare(counts, weights.numpy() * 5000).pvalue > 1e-3
    x_model = trace.nodes["obs"]["value"]
    assert (x_model[:, 0] - 100 * z_model).abs().max() < 6


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_map_recovers_known_parameters_up_to_relabelling(covariance):
    truth, x, _ = _simulate(3, 2, 3000, full=covariance == "full", separation=5.0, seed=3)
    fitted = fit_gmm(x, 3, covariance, "map", restarts=2, seed=0)
    truth = truth.ordered()  # both sorted by the first coordinate of the means
    est = fitted.params
    torch.testing.assert_close(est.weights, truth.weights, atol=0.03, rtol=0)
    torch.testing.assert_close(est.locs, truth.locs, atol=0.15, rtol=0)
    torch.testing.assert_close(est.covariances(), truth.covariances(), atol=0.25, rtol=0.15)
    if covariance == "diag":
        assert est.chol_corr is None
    # the responsibilities recover the true assignments (relabelled by the same ordering)
    assert fitted.info["restarts"][0]["converged"]


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_heldout_log_likelihood_matches_sklearn_em(covariance):
    """Same data, K, covariance type, restarts, tol and reg_covar: within 0.01 nats/point."""
    truth = random_mixture(4, 5, separation=2.0, anisotropy=4.0, full=covariance == "full", seed=7)
    g = torch.Generator().manual_seed(7)
    x, _ = sample_mixture(truth, 4000, g)
    x_test, _ = sample_mixture(truth, 2000, g)
    fitted = fit_gmm(x, 4, covariance, "map", restarts=3, seed=0, tol=1e-3, reg_covar=1e-6)
    ours = fitted.log_likelihood(x_test).mean().item()
    sk = GaussianMixture(4, covariance_type=covariance, n_init=3, tol=1e-3, reg_covar=1e-6,
                         random_state=0).fit(x.numpy())
    theirs = sk.score(x_test.numpy())
    assert ours >= theirs - 0.01, (ours, theirs)
    # and on the training data the EM objective is no worse than scikit-learn's optimum
    assert log_marginal(x, fitted.params).mean().item() >= sk.score(x.numpy()) - 0.01


def test_abandoned_restarts_would_not_have_won():
    """EM abandons a restart stuck far below the best finished one; run to the end it stays
    there, and the fit is the one EM gives without abandoning anything."""
    truth = random_mixture(4, 30, separation=1.0, anisotropy=3.0, full=True, seed=1)
    x, _ = sample_mixture(truth, 3000, torch.Generator().manual_seed(1))
    model = build_model(x, 4, "full")
    params, info = em(x, model, restarts=3, seed=0)
    params_all, info_all = em(x, model, restarts=3, seed=0, catch_up=math.inf)  # none abandoned
    runs, runs_all = info["restarts"], info_all["restarts"]
    abandoned = [r for r, run in enumerate(runs) if run["abandoned"]]
    assert abandoned and not any(run["abandoned"] for run in runs_all)
    best = max(run["log_likelihood"] for run in runs_all)
    for r in abandoned:
        assert runs[r]["iterations"] < runs_all[r]["iterations"]
        assert runs_all[r]["log_likelihood"] < best - 0.1
    torch.testing.assert_close(params.locs, params_all.locs)
    torch.testing.assert_close(params.covariances(), params_all.covariances())


def test_the_winning_restart_is_chosen_by_its_final_log_likelihood():
    """Every restart reports the log-likelihood of the parameters it returns, so the winner of
    five restarts is at least as good as the first of them alone.  (Scored before its last
    M-step, five restarts ended 5e-5 nats/point below one on these data.)"""
    truth = random_mixture(4, 3, separation=1.5, anisotropy=3.0, full=True, seed=6)
    x, _ = sample_mixture(truth, 200, torch.Generator().manual_seed(6))
    model = build_model(x, 4, "full")
    five, info = em(x, model, restarts=5, seed=1)
    one, _ = em(x, model, restarts=1, seed=1)  # the first of the same five k-means starts
    final = log_marginal(x, five).mean().item()
    assert final >= log_marginal(x, one).mean().item()
    finished = [run["log_likelihood"] for run in info["restarts"] if not run["abandoned"]]
    assert final == pytest.approx(max(finished), rel=1e-12)


@pytest.mark.parametrize("covariance", ["diag", "full"])
@pytest.mark.parametrize("reg_covar", [0.0, -1e-6, math.nan, math.inf])
def test_reg_covar_must_be_positive_for_both_covariance_types(covariance, reg_covar):
    """scikit-learn's full EM fails on a collapsing component without it; the diagonal MAP
    once fitted scales of 1e-8 with 0 instead of refusing."""
    x = torch.randn(60, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(UserError, match="--reg-covar must be a positive number"):
        em(x, build_model(x, 2, covariance), reg_covar=reg_covar)


def test_one_dimensional_data_get_the_same_fit_with_diag_and_full():
    """With D = 1 a full covariance has no correlation: the same model, the same EM fit."""
    _, x, _ = _simulate(2, 1, 300, full=False, seed=4)
    fits = {cov: fit_gmm(x, 2, cov, "map", restarts=2, seed=0) for cov in ("diag", "full")}
    for field in ("weights", "locs", "scales"):
        torch.testing.assert_close(getattr(fits["diag"].params, field),
                                   getattr(fits["full"].params, field), rtol=0, atol=0)
    totals = {cov: log_marginal(x, f.params).sum().item() for cov, f in fits.items()}
    assert bic(totals["diag"], 300, 2, 1, "diag") == bic(totals["full"], 300, 2, 1, "full")


def test_parameter_count_bic_aic_agree_with_sklearn():
    _, x, _ = _simulate(3, 4, 500, full=True)
    for covariance in ("diag", "full"):
        sk = GaussianMixture(3, covariance_type=covariance, random_state=0).fit(x.numpy())
        assert num_parameters(3, 4, covariance) == sk._n_parameters()


def test_select_components_prefers_the_true_k():
    _, x, _ = _simulate(3, 2, 1500, full=False, separation=6.0, seed=5)
    rows = select_components(x[:1000], x[1000:], [1, 2, 3, 4, 5], "diag", restarts=2)
    assert min(rows, key=lambda r: r["bic"])["components"] == 3
    test_ll = [r["test_log_likelihood"] for r in rows]
    assert test_ll[2] > test_ll[1] + 0.1  # K=3 clearly beats K=2 on held-out points


def test_em_guards_against_collapse_and_singular_covariance():
    """Duplicated points and a constant column stay finite thanks to reg_covar."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(200, 3)), np.repeat([[5.0, 5.0, 5.0]], 30, axis=0)])
    x[:, 2] = 1.0  # a constant coordinate: every ML covariance is singular
    x = torch.tensor(x)
    for covariance in ("diag", "full"):
        params, info = em(x, build_model(x, 3, covariance), restarts=2)
        assert torch.isfinite(log_marginal(x, params)).all()
        assert (params.weights > 0.05).sum() >= 2  # not everything on one component


def test_vi_route_gives_posterior_draws_near_the_map():
    truth, x, _ = _simulate(2, 2, 300, full=False, separation=5.0, seed=11)
    pyro.set_rng_seed(0)
    fitted = fit_gmm(x, 2, "diag", "vi", restarts=1, steps=150, num_draws=50)
    assert fitted.samples.locs.shape == (50, 2, 2)
    one = fitted.samples.draw(7)  # one draw of the batch: every field indexed alike
    assert one.weights.shape == (2,) and one.chol_corr is None
    torch.testing.assert_close(one.scales, fitted.samples.scales[7])
    torch.testing.assert_close(fitted.params.locs, truth.ordered().locs, atol=0.4, rtol=0)
    map_fit = fit_gmm(x, 2, "diag", "map", restarts=1)
    # posterior predictive and plug-in log-likelihoods agree closely on a well-posed problem
    assert abs(fitted.log_likelihood(x).mean() - map_fit.log_likelihood(x).mean()) < 0.05


def test_nuts_rhat_of_ordered_means_below_1_05():
    truth, x, _ = _simulate(2, 2, 200, full=False, separation=5.0, seed=2)
    fitted = fit_gmm(x, 2, "diag", "nuts", restarts=1, num_samples=100, warmup_steps=100,
                     num_chains=2)
    assert fitted.info["max_rhat"] < 1.05
    assert fitted.samples.locs.shape == (200, 2, 2)
    # draws are relabelled: the first component's mean is left of the second in every draw
    assert (fitted.samples.locs[:, 0, 0] < fitted.samples.locs[:, 1, 0]).all()
    torch.testing.assert_close(fitted.params.locs, truth.ordered().locs, atol=0.4, rtol=0)


def test_closed_form_nuts_potential_is_the_traced_models():
    """Same seed, same start: NUTS on the Pyro model and on the closed-form potential agree."""
    truth, x, _ = _simulate(2, 2, 100, full=False, separation=5.0, seed=2)
    model = build_model(x, 2, "diag")
    start = truth.ordered()
    pyro.set_rng_seed(0)
    traced = MCMC(NUTS(model, max_plate_nesting=1, max_tree_depth=4,
                       init_strategy=init_to_value(values=start.sites())),
                  num_samples=4, warmup_steps=0, disable_progbar=True)
    traced.run(x)
    potential, transforms = unconstrained_potential(model, x)
    pyro.set_rng_seed(0)
    closed = MCMC(NUTS(potential_fn=potential, max_tree_depth=4), num_samples=4, warmup_steps=0,
                  disable_progbar=True,
                  initial_params={n: t.inv(start.sites()[n]).detach()
                                  for n, t in transforms.items()})
    closed.run()
    for name, t in transforms.items():
        torch.testing.assert_close(t(closed.get_samples()[name]), traced.get_samples()[name])
    assert not torch.allclose(traced.get_samples()["locs"][-1], start.locs)  # the chain moved


def test_vi_fits_one_after_another_start_fresh():
    """The vi route's autoguide lives in Pyro's param store: a second fit must not resume the
    first."""
    x = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    first = fit_gmm(x, 2, "diag", "vi", restarts=1, steps=20)
    fit_gmm(x, 3, "diag", "vi", restarts=1, steps=20)  # another K: shapes differ
    assert fit_gmm(x, 1, "diag", "vi", restarts=1, steps=20).params.weights.tolist() == [1.0]
    again = fit_gmm(x, 2, "diag", "vi", restarts=1, steps=20)
    assert torch.allclose(first.params.locs, again.params.locs)
