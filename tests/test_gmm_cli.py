"""``pyro-vae gmm``: the three routes end to end, and every bad input exits 2 with one line."""

import json

import numpy as np
import pytest

from pyro_vae.cli import main

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
    [("map", []), ("vi", ["--steps", "60"]), ("nuts", ["--samples", "40"])],
)
def test_each_route_writes_metrics_and_figures(route, extra, tmp_path, capsys):
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
    assert [row["components"] for row in metrics["selection"]] == [1, 2, 3, 4]
    assert metrics["best_k"]["bic"] == 2  # two well-separated components
    for figure in metrics["figures"].values():
        assert (tmp_path / route / figure.split("/")[-1]).stat().st_size > 0


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



def test_a_best_k_at_the_edge_of_the_sweep_is_warned_about(tmp_path, capsys):
    """Six well-separated clusters, K = 1 asked: the sweep 1..3 keeps improving to its end."""
    out = tmp_path / "run"
    assert main(["gmm", "--simulate", "600,2,6,8", "--components", "1", "--restarts", "2",
                 "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    assert metrics["best_k"]["test_log_likelihood"] == 3
    assert "the largest tried: a larger K may be better; try --components 5" in (
        metrics["selection_warning"])
    assert "pyro-vae gmm: warning: the best K by" in captured.err
