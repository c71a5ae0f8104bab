"""``pyro-vae gmm``: the three routes end to end, and every bad input exits 2 with one line."""

import json

import numpy as np
import pytest

from pyro_vae.cli import main
from pyro_vae.inference.gaussian_mixture import GaussianMixture

# small tensors, and NUTS: one intra-op thread on the shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def _run(args, capsys):
    try:
        code = main(["gmm", *args, "--json"])
    except SystemExit as exited:  # argparse usage errors
        code = exited.code
    return code, capsys.readouterr()


@pytest.mark.parametrize(
    "route, extra",
    [("map", []), ("vi", ["--steps", "60"]), ("nuts", ["--samples", "40", "--chains", "3"])],
)
def test_each_route_writes_metrics_figures_and_the_mixture(route, extra, tmp_path, capsys):
    out = tmp_path / route
    code, captured = _run(["--simulate", "300,2,2", "-k", "2", "--inference", route,
                           "--restarts", "1", "--out", str(out), *extra], capsys)
    assert code == 0, captured.err
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    assert metrics == json.loads((out / "metrics.json").read_text())
    for key in ("train_log_likelihood", "test_log_likelihood", "bic", "aic", "weights",
                "means", "seconds"):
        assert key in metrics
    assert np.isfinite(metrics["test_log_likelihood"])
    assert sum(metrics["weights"]) == pytest.approx(1.0)
    assert np.array(metrics["means"]).shape == (2, 2)
    # one K asked for, one K fitted: no sweep, no selection figure
    assert "selection" not in metrics and set(metrics["figures"]) == {"mixture"}
    assert GaussianMixture.load(metrics["mixture"]).inference_ == route
    for figure in metrics["figures"].values():
        assert (tmp_path / route / figure.split("/")[-1]).stat().st_size > 0
    if route == "nuts":  # r-hat across the chains asked for
        assert metrics["diagnostics"]["num_chains"] == 3
        assert metrics["diagnostics"]["max_rhat"] < 1.1
        assert "over 3 chains" in captured.out


def test_a_range_of_components_is_fitted_by_the_route_and_bic_chooses(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = _run(["--simulate", "300,2,2", "-k", "1:4", "--inference", "vi",
                           "--steps", "30", "--restarts", "1", "--out", str(out)], capsys)
    assert code == 0, captured.err
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    assert [row["components"] for row in metrics["selection"]] == [1, 2, 3, 4]
    assert metrics["components_tried"] == [1, 4] and metrics["chosen_by"] == "bic"
    assert metrics["components"] == metrics["best_k"]["bic"] == 2  # two separated clusters
    assert min(metrics["selection"], key=lambda row: row["bic"])["bic"] == metrics["bic"]
    assert "final_elbo_per_point" in metrics["diagnostics"]  # the chosen K's vi fit
    assert GaussianMixture.load(out / "mixture.pt").n_components == 2
    assert (out / "selection.png").stat().st_size > 0
    assert "chosen by BIC from K = 1..4" in captured.out


def test_data_and_test_files_with_pca(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (150, 5)), rng.normal(6, 1, (150, 5))])
    np.save(tmp_path / "train.npy", x)
    np.save(tmp_path / "test.npy", x[::3] + 0.1)
    code, captured = _run(["--data", str(tmp_path / "train.npy"), "--test",
                           str(tmp_path / "test.npy"), "-k", "2", "--covariance", "full",
                           "--pca", "3", "--out", str(tmp_path / "run")], capsys)
    assert code == 0, captured.err
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    assert metrics["dim"] == 3 and metrics["num_test"] == 100


def _bad_files(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.normal(size=(50, 3))
    inf = good.copy()
    inf[0, 0] = np.inf
    constant = good.copy()
    constant[:, 2] = 1.0
    files = {"good": good, "inf": inf, "two_d": good[:, :2], "constant": constant}
    for name, array in files.items():
        np.save(tmp_path / f"{name}.npy", array)
    return {name: str(tmp_path / f"{name}.npy") for name in files}


# NaN data, K = 0, a missing file and a short --simulate are among tests/test_bad_input.py's
# cases (which also check that no file is lost); these are the mixture's others
@pytest.mark.parametrize(
    "case, args, says",
    [
        ("inf", ["--data", "{inf}", "-k", "2"], "NaN or infinite"),
        ("k>n", ["--data", "{good}", "-k", "41"], "between 1 and"),
        ("dims", ["--data", "{good}", "--test", "{two_d}", "-k", "2"], "D=2"),
        ("reg_covar", ["--data", "{constant}", "-k", "2", "--covariance", "diag",
                       "--reg-covar", "0"], "--reg-covar must be a positive number"),
        ("simulate", ["--simulate", "10,x,2", "-k", "2"], "--simulate"),
        ("restarts", ["--simulate", "100,2,2", "-k", "2", "--restarts", "0"], "--restarts"),
        ("range", ["--simulate", "100,2,2", "-k", "3:2"], "a range A:B of whole numbers"),
        ("range text", ["--simulate", "100,2,2", "-k", "two"], "--components takes a number"),
        ("range from 0", ["--simulate", "100,2,2", "-k", "0:3"], "between 1 and the N=100"),
        ("range past N", ["--data", "{good}", "-k", "2:41"], "got 2:41"),
        ("chains", ["--simulate", "100,2,2", "-k", "2", "--inference", "nuts", "--chains",
                    "0"], "--chains >= 1"),
        ("covariance", ["--data", "{good}", "-k", "2", "--covariance", "spherical"],
         "invalid choice"),
        ("route", ["--data", "{good}", "-k", "2", "--inference", "em"], "invalid choice"),
        ("idata", ["--data", "{good}", "-k", "2", "--inference", "vi", "--idata", "x.txt"],
         "ending in .nc"),
    ],
)
def test_bad_input_exits_2_with_one_line(case, args, says, tmp_path, capsys):
    files = _bad_files(tmp_path)
    args = [a.format(**files) for a in args]
    code, captured = _run([*args, "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], captured.err
    assert "Traceback" not in captured.err


def test_singular_covariance_is_regularized_by_default(tmp_path, capsys):
    files = _bad_files(tmp_path)
    code, captured = _run(["--data", files["constant"], "-k", "2", "--covariance", "full",
                           "--out", str(tmp_path / "run")], capsys)
    assert code == 0, captured.err
    assert np.isfinite(json.loads(captured.out.strip().splitlines()[-1])["test_log_likelihood"])



@pytest.mark.parametrize("simulate, components, best, says", [
    # six well-separated clusters: the sweep 1..3 keeps improving to its end
    ("600,2,6,8", "1:3", 3, "is 3, the largest tried: a larger K may be better; try "
                            "--components 3:5"),
    # one cluster: every K from 2 is one too many
    ("600,2,1", "2:3", 2, "is 2, the smallest tried: a smaller K may be better; try "
                          "--components 1:2"),
])
def test_a_best_k_at_the_edge_of_the_range_is_warned_about(simulate, components, best, says,
                                                           tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["gmm", "--simulate", simulate, "--components", components, "--restarts", "2",
                 "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    assert metrics["best_k"]["bic"] == best
    assert says in metrics["selection_warning"]
    assert "pyro-vae gmm: warning: the best K by" in captured.err
