"""``pyro-vae compare``: one table row per algorithm, CSV + Markdown + PNG; bad input exits 2."""

import csv
import json

import pytest

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
                 "--seeds", "2", "--particles", "2", "--eval-particles", "10", "--out", str(out),
                 "--json", *TINY_VAE])
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


def test_compare_toy_has_reference_rows(tmp_path):
    out = tmp_path / "toy"
    code = main(["compare", "--model", "toy", "--inference", "trace,score", "--epochs", "20",
                 "--seeds", "1", "--particles", "2", "--out", str(out)])
    assert code == 0
    rows = _table(out)
    assert [row["algorithm"] for row in rows] == [
        "trace", "score", "exact MLE", "NUTS (z integrated out)"]
    # the exact MLE maximizes the training log-likelihood: no SVI fit beats it on train
    mle = float(rows[2]["final_bound_mean"])
    assert all(float(row["final_bound_mean"]) <= mle + 1e-6 for row in rows[:2])


@pytest.mark.parametrize("argv, message", [
    (["--model", "vae", "--inference", "trace,nope"], "unknown inference nope"),
    (["--model", "toy", "--inference", "trace", "--seeds", "0"], "--seeds must be >= 1"),
    (["--model", "gmm", "--inference", "trace"], "unknown inference trace"),
    (["--model", "toy", "--inference", "trace,trace"], "distinct"),
    (["--model", "toy", "--inference", "trace", "--set", "model.latent_dim=2"], "VAE"),
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
