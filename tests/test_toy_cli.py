"""``pyro-vae toy``: metrics and figures on simulated data; bad input is one line and exit 2."""

import json

import numpy as np
import pytest

from pyro_vae.arviz import az
from pyro_vae.cli import main
from pyro_vae.inference.uniform_scale import ToyOptions, fit_nuts, simulate
from pyro_vae.rng import single_thread

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


def _run(capsys, *argv):
    try:
        code = main(["toy", *argv])
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_mle_writes_metrics_and_figures(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = _run(capsys, "--simulate", "0.5,2.0,1.0,2000", "--inference", "mle",
                           "--seed", "1", "--out", str(out), "--json")
    assert code == 0
    metrics = json.loads(stdout.strip().splitlines()[-1])
    assert metrics == json.loads((out / "metrics.json").read_text())
    for key in ("a", "b", "mu", "log_likelihood", "elbo", "seconds"):
        assert key in metrics
    assert metrics["elbo"] is None  # the exact route has no guide
    # the E1 closed form and adaptive quadrature agree on the reported log-likelihood
    assert metrics["log_likelihood"] == pytest.approx(metrics["log_likelihood_quadrature"],
                                                      rel=1e-9)
    assert metrics["log_likelihood"] >= metrics["true_log_likelihood"]  # it is the maximum
    assert abs(metrics["a"] - 0.5) < 5 * metrics["a_se"]
    assert metrics["identity_max_abs_z"] < 4.5
    for path in metrics["figures"].values():
        assert (out / path.split("/")[-1]).stat().st_size > 10_000
    # a second run into the same folder needs --overwrite
    code, _, err = _run(capsys, "--simulate", "0.5,2.0,1.0,100", "--inference", "mle",
                        "--out", str(out))
    assert code == 2 and "--overwrite" in err


def test_svi_reports_an_elbo_below_the_log_likelihood(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal(400)
    np.save(tmp_path / "x.npy", x[:, None])  # (N, 1) is accepted as N points
    code, stdout, _ = _run(capsys, "--data", str(tmp_path / "x.npy"), "--inference", "svi",
                           "--steps", "100", "--json")
    assert code == 0
    metrics = json.loads(stdout.strip().splitlines()[-1])
    assert metrics["num_points"] == 400
    assert metrics["elbo"] < metrics["log_likelihood"]
    assert metrics["elbo_gap"] == pytest.approx(metrics["log_likelihood"] - metrics["elbo"])
    assert metrics["gradient_variance_ratio"] > 1


def test_nuts_chains_are_the_export_chain_dimension_and_r_hat_compares_them(tmp_path, capsys):
    path = tmp_path / "nuts.nc"
    code, stdout, _ = _run(capsys, "--simulate", "0.5,2.0,1.0,300", "--inference", "nuts",
                           "--warmup", "30", "--samples", "30", "--chains", "2",
                           "--idata", str(path), "--json")
    assert code == 0
    metrics = json.loads(stdout.strip().splitlines()[-1])
    assert 0 < metrics["a"] < metrics["b"] and metrics["samples"] == 30
    assert metrics["chains"] == 2 and metrics["a_r_hat"] > 0
    r_hat = max(metrics[f"{k}_r_hat"] for k in ("a", "b", "mu"))
    assert f"NUTS: 2 chain(s) x 30 draws, max R-hat {r_hat:.3f}" in stdout  # the summary
    idata = az.from_netcdf(str(path))
    assert idata.posterior["a"].shape == (2, 30)
    assert idata.log_likelihood["x"].shape == (2, 30, 300)
    # the chains run in turn from one seeded stream: chain 0 is the one-chain run of that seed
    x = simulate(0.5, 2.0, 1.0, 300, seed=0)
    with single_thread():
        one = fit_nuts(x, seed=0, options=ToyOptions(warmup=30, samples=30))
    assert one.extra["chains"] == 1 and one.draws["a"].shape == (1, 30)
    np.testing.assert_allclose(idata.posterior["a"].values[0], one.draws["a"][0].numpy())
    # 30 warm-up steps are too few: chain 0 alone looks settled (split R-hat < 1.1), the two
    # chains sit in different places, and R-hat over chains says so
    assert one.extra["a_r_hat"] < 1.1 < metrics["a_r_hat"]


def _bad_files(tmp_path):
    np.save(tmp_path / "one.npy", np.array([1.0]))
    np.save(tmp_path / "flat.npy", np.ones(5))
    (tmp_path / "text.npy").write_text("not an array")
    return tmp_path


# b < a, a = 0, three numbers, NaN in --data, a 2-D --data and an unknown route are
# tests/test_bad_input.py's toy cases; these are the rest
@pytest.mark.parametrize("argv,message", [
    (["--simulate", "1,1,0,100"], "a < b"),
    (["--simulate=-1,1,0,100"], "positive"),
    (["--simulate", "0.5,2,1,1"], "N must be"),
    (["--simulate", "0.5,2,1,10.5"], "N must be"),
    (["--simulate", "0.5,2,nan,100"], "finite"),
    (["--simulate", "a,b,c,d"], "four numbers"),
    (["--data", "{tmp}/one.npy"], "at least 2"),
    (["--data", "{tmp}/flat.npy"], "all points are equal"),
    (["--data", "{tmp}/text.npy"], "not a readable"),
    (["--data", "{tmp}/missing.npy"], "no such file"),
    (["--simulate", "0.5,2,1,100", "--steps", "0"], "--steps"),
    (["--simulate", "0.5,2,1,100", "--data", "{tmp}/one.npy"], "not allowed with"),
    (["--simulate", "0.5,2,1,100", "--idata", "{tmp}/post.txt"], "ending in .nc"),
    (["--simulate", "0.5,2,1,100", "--inference", "nuts", "--chains", "0"], "--chains"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    tmp = _bad_files(tmp_path)
    argv = [a.format(tmp=tmp) for a in argv]
    if "--inference" not in argv:
        argv += ["--inference", "mle"]
    code, _, err = _run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-vae toy: error:") and message in lines[0]


def test_an_elbo_name_is_the_svi_route_with_that_elbo(tmp_path, capsys):
    """``--inference iwae`` is ``--inference svi`` trained with the IWAE bound: the same
    names as ``compare --model toy``; ``--inference trace`` is ``svi`` itself (its default)."""
    runs = {}
    for name in ("svi", "trace", "iwae"):
        argv = ["toy", "--simulate", "0.5,2.0,1.0,200", "--inference", name, "--steps", "30",
                "--json"]
        assert main(argv) == 0
        runs[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert runs["iwae"]["inference"] == "iwae"
    for key in ("a", "b", "mu", "elbo", "final_train_elbo"):
        assert runs["trace"][key] == runs["svi"][key]
    assert runs["iwae"]["final_train_elbo"] != runs["svi"]["final_train_elbo"]
