"""The estimator users keep: scikit-learn's answers on the same data, exact save/load, refused
files, and the command-line round trip gmm -> gmm-predict."""

import json
import math
import os

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture as SklearnMixture

from pyro_vae.cli import main
from pyro_vae.errors import UserError
from pyro_vae.inference.gaussian_mixture import GaussianMixture
from pyro_vae.inference.gmm import num_parameters
from pyro_vae.models.gmm_density import random_mixture, sample_mixture

pytestmark = pytest.mark.usefixtures("one_thread")

# benchmarks/gmm_vs_sklearn.py's target: held-out log-likelihood within 0.01 nats per point
TOLERANCE = 0.01


def _data(covariance, n=4000, n_test=2000, seed=7):
    """The data of tests/test_gmm.py's comparison with scikit-learn: K=4, D=5, overlapping."""
    truth = random_mixture(4, 5, separation=2.0, anisotropy=4.0, full=covariance == "full",
                           seed=seed)
    g = torch.Generator().manual_seed(seed)
    x, _ = sample_mixture(truth, n, g)
    x_test, _ = sample_mixture(truth, n_test, g)
    return x.numpy(), x_test.numpy()


def _matching(ours, theirs):
    """Our component j is scikit-learn's ``perm[j]`` (closest means, one to one)."""
    cost = ((ours.means_[:, None] - theirs.means_[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


@pytest.fixture(scope="module", params=["diag", "full"])
def fitted(request):
    x, x_test = _data(request.param)
    settings = dict(covariance_type=request.param, n_init=3, tol=1e-3, reg_covar=1e-6,
                    max_iter=100)
    ours = GaussianMixture(4, seed=0, **settings).fit(x)
    theirs = SklearnMixture(4, random_state=0, **settings).fit(x)
    return ours, theirs, x, x_test


def test_predictions_and_log_likelihoods_match_sklearn(fitted):
    ours, theirs, x, x_test = fitted
    perm = _matching(ours, theirs)
    agree = (perm[ours.predict(x_test)] == theirs.predict(x_test)).mean()
    assert agree >= 0.995
    proba = ours.predict_proba(x_test)
    assert np.abs(proba[:, np.argsort(perm)] - theirs.predict_proba(x_test)).mean() < 0.005
    per_point = ours.score_samples(x_test) - theirs.score_samples(x_test)
    assert np.abs(per_point).mean() < TOLERANCE
    assert abs(ours.score(x_test) - theirs.score(x_test)) < TOLERANCE
    # the fitted parameters, in scikit-learn's layout, relabelled
    np.testing.assert_allclose(ours.weights_, theirs.weights_[perm], atol=0.01)
    np.testing.assert_allclose(ours.means_, theirs.means_[perm], atol=0.05)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_[perm], atol=0.05,
                               rtol=0.05)
    assert ours.covariances_.shape == theirs.covariances_.shape
    # training criteria: within 2 N x the tolerance, since -2 log L dominates both
    assert abs(ours.bic(x) - theirs.bic(x)) < 2 * len(x) * TOLERANCE
    assert abs(ours.aic(x) - theirs.aic(x)) < 2 * len(x) * TOLERANCE
    assert ours.converged_ and 1 <= ours.n_iter_ <= 100


def test_answers_are_the_closed_forms(fitted):
    """score_samples by hand with scipy; bic/aic from it; predict the argmax of predict_proba."""
    ours, _, x, x_test = fitted
    points = x_test[:20]
    covs = ours.covariances_
    if covs.ndim == 2:
        covs = np.stack([np.diag(c) for c in covs])
    by_hand = [math.log(sum(ours.weights_[j] * stats.multivariate_normal(
        ours.means_[j], covs[j]).pdf(p) for j in range(4))) for p in points]
    np.testing.assert_allclose(ours.score_samples(points), by_hand, rtol=1e-10)
    proba = ours.predict_proba(points)
    np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(ours.predict(points), proba.argmax(-1))
    total, n = ours.score_samples(x).sum(), len(x)
    p = num_parameters(4, 5, ours.covariance_type)
    assert ours.bic(x) == pytest.approx(-2 * total + p * math.log(n), rel=1e-12)
    assert ours.aic(x) == pytest.approx(-2 * total + 2 * p, rel=1e-12)
    assert ours.lower_bound_ == pytest.approx(ours.score(x), rel=1e-12)


def test_sample_follows_the_weights_and_the_seed(fitted):
    ours = fitted[0]
    x, labels = ours.sample(20000)
    assert x.shape == (20000, 5) and labels.dtype == np.int64
    assert stats.chisquare(np.bincount(labels, minlength=4), ours.weights_ * 20000).pvalue > 1e-3
    for j in range(4):  # each component's draws have its mean (5 standard errors)
        rows = x[labels == j]
        spread = np.sqrt(ours.covariances_[j].diagonal() if ours.covariances_.ndim == 3
                         else ours.covariances_[j])
        assert (np.abs(rows.mean(0) - ours.means_[j]) < 5 * spread / np.sqrt(len(rows))).all()
    again = GaussianMixture(4, covariance_type=ours.covariance_type, seed=ours.seed)
    again.params_ = ours.params_
    first, _ = again.sample(3)
    assert not np.array_equal(first, again.sample(3)[0])  # the stream goes on
    fresh = GaussianMixture(4, covariance_type=ours.covariance_type, seed=ours.seed)
    fresh.params_ = ours.params_
    np.testing.assert_array_equal(fresh.sample(3)[0], first)  # same seed, same draws


def test_save_load_round_trip_is_exact(fitted, tmp_path):
    ours, _, _, x_test = fitted
    path = ours.save(tmp_path / "sub" / "mixture.pt")
    back = GaussianMixture.load(path)
    for name, value in ours.params_.sites().items():
        assert torch.equal(getattr(back.params_, name), value)
    assert repr(back) == repr(ours)
    for attr in ("n_features_in_", "converged_", "n_iter_", "lower_bound_", "inference_"):
        assert getattr(back, attr) == getattr(ours, attr)
    np.testing.assert_array_equal(back.score_samples(x_test), ours.score_samples(x_test))
    np.testing.assert_array_equal(back.predict_proba(x_test), ours.predict_proba(x_test))
    # plain data only: tensors, numbers, strings, no pickled objects; no temporary left over
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "pyro-vae gaussian mixture" and payload["format_version"] == 1
    assert os.listdir(path.parent) == ["mixture.pt"]


def test_not_fitted_wrong_dimension_and_bad_values_are_user_errors(fitted):
    ours, _, _, x_test = fitted
    with pytest.raises(UserError, match="not fitted yet"):
        GaussianMixture(2).predict(x_test)
    with pytest.raises(UserError, match="X has D=3 features but the mixture was fitted on D=5"):
        ours.predict(x_test[:, :3])
    bad = x_test.copy()
    bad[3, 1] = np.nan
    with pytest.raises(UserError, match="NaN or infinite"):
        ours.score_samples(bad)
    with pytest.raises(UserError, match="n_samples must be a positive integer"):
        ours.sample(0)
    with pytest.raises(UserError, match="--reg-covar must be a positive number"):
        GaussianMixture(2, reg_covar=0.0).fit(x_test)


class _RunsCode:
    """A pickle that would run a shell command when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _tampered(payload, case):
    """``payload`` (a saved full mixture) changed as a hostile or careless hand would."""
    p = {**payload, "settings": dict(payload["settings"]), "fit": dict(payload["fit"])}
    if case == "weights":
        p["weights"] = p["weights"] * 1.1
    elif case == "negative scale":
        p["scales"] = p["scales"].clone()
        p["scales"][0, 0] = -1.0
    elif case == "nan mean":
        p["locs"] = p["locs"].clone()
        p["locs"][1, 1] = math.nan
    elif case == "shapes":
        p["locs"] = torch.cat([p["locs"], p["locs"][:, :1]], 1)
    elif case == "float32":
        p["weights"] = p["weights"].float()
    elif case == "not triangular":
        p["chol_corr"] = p["chol_corr"].transpose(-1, -2).contiguous()
    elif case == "no correlations":
        del p["chol_corr"]
    elif case == "K":
        p["settings"]["n_components"] = 3
    elif case == "bool as int":
        p["settings"]["n_init"] = True
    elif case == "extra entry":
        p["note"] = "hello"
    elif case == "version":
        p["format_version"] = 2
    elif case == "vae checkpoint":
        p = {"format_version": 1, "epoch": 3, "config": {}, "model_state": {},
             "guide_state": {}}
    elif case == "covariance":
        p["settings"]["covariance_type"] = "spherical"
    return p


TAMPERED = ["weights", "negative scale", "nan mean", "shapes", "float32", "not triangular",
            "no correlations", "K", "bool as int", "extra entry", "version", "vae checkpoint",
            "covariance"]


@pytest.mark.parametrize("case", TAMPERED)
def test_tampered_or_foreign_files_are_refused(case, tmp_path):
    x, _ = _data("full", n=400, n_test=1)
    path = GaussianMixture(4, covariance_type="full").fit(x).save(tmp_path / "mixture.pt")
    torch.save(_tampered(torch.load(path, weights_only=True), case), path)
    with pytest.raises(UserError, match="is not a valid pyro-vae mixture"):
        GaussianMixture.load(path)


@pytest.mark.parametrize("case", ["random bytes", "truncated", "code", "folder", "missing"])
def test_unreadable_files_are_refused_without_running_anything(case, tmp_path):
    x, _ = _data("diag", n=400, n_test=1)
    path = GaussianMixture(2).fit(x).save(tmp_path / "mixture.pt")
    marker = tmp_path / "ran"
    if case == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(1000))
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif case == "code":
        torch.save({"format": "pyro-vae gaussian mixture", "weights": _RunsCode(marker)}, path)
    elif case == "folder":
        path.unlink()
        path.mkdir()
    else:
        path.unlink()
    with pytest.raises(UserError, match="mixture"):
        GaussianMixture.load(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------- the CLI


def _cli(args, capsys):
    code = main([*args, "--json"])
    captured = capsys.readouterr()
    return code, captured, (json.loads(captured.out.strip().splitlines()[-1]) if code == 0
                            else None)


def test_gmm_saves_the_mixture_and_gmm_predict_scores_with_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(5, 0.5, (100, 2))])
    x_test = np.concatenate([rng.normal(0, 1, (40, 2)), rng.normal(5, 0.5, (20, 2))])
    np.save(tmp_path / "train.npy", x)
    np.save(tmp_path / "test.npy", x_test)
    code, captured, fit = _cli(["gmm", "--data", str(tmp_path / "train.npy"), "--test",
                                str(tmp_path / "test.npy"), "-k", "2", "--restarts", "2",
                                "--out", str(tmp_path / "run")], capsys)
    assert code == 0, captured.err
    assert fit["mixture"] == str(tmp_path / "run" / "mixture.pt")
    assert "gmm-predict --model" in captured.out
    code, captured, scored = _cli(["gmm-predict", "--model", fit["mixture"], "--data",
                                   str(tmp_path / "test.npy"), "--out",
                                   str(tmp_path / "scored")], capsys)
    assert code == 0, captured.err
    assert scored == json.loads((tmp_path / "scored" / "metrics.json").read_text())
    # the saved MAP mixture gives the run's own plug-in test log-likelihood
    assert scored["mean_log_likelihood"] == pytest.approx(fit["test_log_likelihood"], rel=1e-12)
    with np.load(scored["predictions"]) as predictions:
        labels, resp, log_lik = (predictions[k] for k in
                                 ("labels", "responsibilities", "log_likelihood"))
    mixture = GaussianMixture.load(fit["mixture"])
    np.testing.assert_array_equal(labels, mixture.predict(x_test))
    np.testing.assert_array_equal(resp, mixture.predict_proba(x_test))
    np.testing.assert_array_equal(log_lik, mixture.score_samples(x_test))
    assert sorted(scored["counts"]) == [20, 40]  # the two clusters, told apart
    assert f"60 points, K=2 (diag): mean log-likelihood {log_lik.mean():.4f}" in captured.out


@pytest.mark.parametrize("case, says", [
    ("three_d", "--data has D=3 features but the mixture"),
    ("nan", "NaN or infinite"),
    ("not_a_model", "is not a readable pyro-vae mixture"),
    ("missing", "does not exist"),
])
def test_gmm_predict_bad_input_exits_2_with_one_line(case, says, tmp_path, capsys):
    x, _ = _data("diag", n=300, n_test=1)
    GaussianMixture(2).fit(x).save(tmp_path / "mixture.pt")
    np.save(tmp_path / "three_d.npy", x[:10, :3])
    nan = x[:10].copy()
    nan[2, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "not_a_model.npy", x[:10])
    model = {"not_a_model": "not_a_model.npy", "missing": "nowhere.pt"}.get(case, "mixture.pt")
    data = {"three_d": "three_d.npy", "nan": "nan.npy"}.get(case, "not_a_model.npy")
    code = main(["gmm-predict", "--model", str(tmp_path / model), "--data",
                 str(tmp_path / data), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert not (tmp_path / "out").exists()  # refused before any folder is made
