"""``pyro-vae compare``: one table row per algorithm, CSV + Markdown + PNG; bad input exits 2."""

import csv
import json
import warnings

import pytest

from pyro_vae.arviz import az
from pyro_vae.cli import main

TINY_VAE = ["--set", "data.train_size=200", "--set", "data.test_size=40",
            "--set", "model.hidden=[16]", "--set", "model.latent_dim=2",
            "--set", "train.batch_size=100"]


def _table(out):
    with open(out / "comparison.csv") as handle:
        return list(csv.DictReader(handle))


def test_compare_tiny_vae(tmp_path, capsys):
    out = tmp_path / "vae"
    code = main(["compare", "--model", "vae", "--inference", "trace,iwae", "--epochs", "1",
                 "--seeds", "2", "--train-particles", "2", "--eval-particles", "10",
                 "--out", str(out),
                 "--idata", str(tmp_path / "vae.nc"), "--json", *TINY_VAE])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = _table(out)
    assert [row["algorithm"] for row in rows] == ["trace", "iwae"]
    assert all(row["seeds"] == "2" for row in rows)
    for row in rows:
        for metric in ("final_bound", "test_log_likelihood", "gradient_variance",
                       "seconds_per_epoch"):
            assert float(row[f"{metric}_mean"]) == pytest.approx(
                [t for t in metrics["table"] if t["algorithm"] == row["algorithm"]][0][
                    f"{metric}_mean"])
        # K = 10 importance sampling is at least as tight as the one-particle ELBO on average
        runs = [r for r in metrics["runs"] if r["algorithm"] == row["algorithm"]]
        assert all(r["test_log_likelihood"] >= r["test_elbo"] for r in runs)
    assert (out / "comparison.md").read_text().count("\n") == 2 + len(rows)
    assert (out / "comparison.png").stat().st_size > 0
    # one InferenceData per algorithm: 200 latent draws for each of the 40 test images
    assert metrics["idata"] == {n: str(tmp_path / f"vae.{n}.nc") for n in ("trace", "iwae")}
    idata = az.from_netcdf(metrics["idata"]["iwae"])
    assert idata.posterior["z"].dims == ("chain", "draw", "obs", "latent")
    assert idata.posterior["z"].shape == (1, 200, 40, 2)
    assert idata.log_likelihood["x"].shape == (1, 200, 40)
    assert idata.posterior_predictive["x"].shape == (1, 200, 40, 784)
    assert idata.prior_predictive["x"].shape == (1, 20, 40, 784)
    # its log p(x_i) uses the table's K = --eval-particles
    assert idata.log_likelihood.attrs["num_particles"] == 10
    assert idata.observed_data["x"].dims == ("obs", "pixel")
    # Bernoulli pixels: a log-likelihood is a sum of 784 log-probabilities, each <= 0
    assert float(idata.log_likelihood["x"].max()) < 0


def test_compare_toy_one_row_per_name_routes_and_elbos_alike(tmp_path, capsys):
    """Route names (mle, nuts, svi) and ELBO names (SVI with that ELBO) in one table, one row
    each, in the order asked; ``--reference`` adds the true parameters' row last."""
    out = tmp_path / "toy"
    code = main(["compare", "--model", "toy", "--inference", "mle,nuts,svi,trace,score",
                 "--steps", "20", "--samples", "50", "--chains", "2", "--seeds", "1",
                 "--train-particles", "2", "--reference", "--out", str(out),
                 "--idata", str(tmp_path / "toy.nc"), "--json"])
    assert code == 0
    captured = capsys.readouterr()
    # each budget counts what its name says; --warmup follows --samples unless given
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    assert metrics["budgets"] == {"steps": 20, "samples": 50, "warmup": 50, "chains": 2}
    # each cell says it starts, in plain lines on stderr
    announced = [line for line in captured.err.splitlines() if "compare [" in line]
    assert announced == [f"compare [{i}/5] {name}, seed 0" for i, name in
                         enumerate(["mle", "nuts", "svi", "trace", "score"], 1)]
    rows = {row["algorithm"]: row for row in _table(out)}
    assert list(rows) == ["mle", "nuts", "svi", "trace", "score", "true parameters"]
    # the exact MLE maximizes the training log-likelihood: no other fit beats it on train
    mle = float(rows["mle"]["final_bound_mean"])
    assert all(float(row["final_bound_mean"]) <= mle + 1e-6 for row in rows.values())
    # svi is SVI with its default ELBO, trace: the same fit from the same seed
    for metric in ("final_bound_mean", "test_log_likelihood_mean", "gradient_variance_mean"):
        assert rows["svi"][metric] == rows["trace"][metric]
    # only SVI fits have gradients to measure
    assert rows["mle"]["gradient_variance_mean"] == rows["nuts"]["gradient_variance_mean"] == ""
    # InferenceData for the fits with draws (not the exact MLE's point estimate)
    files = sorted(path.name for path in tmp_path.glob("toy.*.nc"))
    assert files == ["toy.nuts.nc", "toy.score.nc", "toy.svi.nc", "toy.trace.nc"]
    nuts = az.from_netcdf(str(tmp_path / "toy.nuts.nc"))
    # two chains of 50 draws (--warmup follows --samples)
    assert nuts.posterior["a"].shape == (2, 50)
    assert nuts.log_likelihood["x"].shape == (2, 50, 500)
    with warnings.catch_warnings():  # 50 draws: PSIS may warn about its Pareto k
        warnings.simplefilter("ignore")
        loo = az.loo(nuts)
    assert loo["elpd_loo"] < 0 and loo["n_data_points"] == 500


def test_compare_gmm_nuts_chains_and_draws(tmp_path, capsys):
    """--chains, --samples and --warmup reach the mixture's NUTS: C chains of S draws each."""
    code = main(["compare", "--model", "gmm", "--inference", "nuts", "--chains", "3",
                 "--samples", "6", "--warmup", "5", "--seeds", "1",
                 "--out", str(tmp_path / "gmm"), "--idata", str(tmp_path / "gmm.nc"), "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["budgets"] == {"samples": 6, "warmup": 5, "chains": 3}
    idata = az.from_netcdf(str(tmp_path / "gmm.nuts.nc"))
    assert idata.posterior.sizes["chain"] == 3 and idata.posterior.sizes["draw"] == 6


@pytest.mark.parametrize("argv, message", [
    (["--model", "vae", "--inference", "trace,nope"], "unknown inference nope"),
    (["--model", "toy", "--inference", "trace", "--seeds", "0"], "--seeds must be >= 1"),
    (["--model", "gmm", "--inference", "trace"], "unknown inference trace"),
    (["--model", "toy", "--inference", "trace,trace"], "distinct"),
    (["--model", "toy", "--inference", "trace", "--set", "model.latent_dim=2"], "VAE"),
    (["--model", "toy", "--inference", "trace", "--idata", "post.txt"], "ending in .nc"),
    (["--model", "vae", "--inference", "trace", "--eval-particles", "1", "--idata",
      "post.nc"], "give --eval-particles >= 2"),
    (["--model", "toy", "--inference", "svi,vi"], "unknown inference vi"),
    (["--model", "vae", "--inference", "trace", "--reference"], "no known parameters"),
    # budgets are named for what they count, and one that nothing asked for reads is refused
    (["--model", "toy", "--inference", "svi", "--epochs", "5"],
     "--epochs (training epochs) does not apply to --model toy; its budgets are --steps, "
     "--samples, --warmup"),
    (["--model", "vae", "--inference", "trace", "--steps", "5"],
     "--steps (SVI steps) does not apply to --model vae; its budgets are --epochs"),
    (["--model", "vae", "--inference", "trace", "--chains", "2"], "does not apply to --model vae"),
    (["--model", "toy", "--inference", "mle,svi", "--samples", "50"],
     "--samples (NUTS draws per chain) applies to none of --inference mle,svi; nuts, "
     "nuts-latent read it"),
    (["--model", "gmm", "--inference", "map,nuts", "--steps", "50"], "; vi read it"),
    (["--model", "toy", "--inference", "mle,svi", "--chains", "2"],
     "--chains (NUTS chains) applies to none of --inference mle,svi; nuts, nuts-latent read it"),
    (["--model", "gmm", "--inference", "nuts", "--chains", "0"],
     "--chains (NUTS chains) must be >= 1"),
    (["--model", "gmm", "--inference", "nuts", "--samples", "3"], "at least 4 draws"),
])
def test_compare_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    code = main(["compare", *argv, "--out", str(tmp_path / "bad")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "bad").exists()  # checked before anything is written


def test_compare_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    assert main(["compare", "--model", "toy", "--inference", "trace", "--out", str(out)]) == 2
