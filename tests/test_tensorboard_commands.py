"""``--tensorboard`` of toy (svi and the ELBOs' names), gmm (vi) and compare: the event files
read back with TensorBoard's own reader; tags, steps, final numbers = metrics.json's, and the
same numbers with and without the log."""

import json

import pytest

from pyro_vae.cli import main

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

TINY_VAE = ["--set", "data.dataset=digits", "--set", "data.train_size=64",
            "--set", "data.test_size=16", "--set", "model.hidden=[8]",
            "--set", "model.latent_dim=2", "--set", "train.batch_size=32"]


def _events(folder) -> dict[str, list]:
    """tag -> [(step, value)] of the scalars in one run folder."""
    log = EventAccumulator(str(folder))
    log.Reload()
    return {tag: [(e.step, e.value) for e in log.Scalars(tag)] for tag in log.Tags()["scalars"]}


def _run(argv, capsys) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _without(metrics: dict, *keys) -> dict:
    """The metrics but their timings, the log's folder and ``keys`` (paths of the run)."""
    dropped = {"seconds", "seconds_per_epoch", "tensorboard", *keys}
    return {k: v for k, v in metrics.items() if k not in dropped}


@pytest.mark.parametrize("inference", ["svi", "iwae"])
def test_toy_svi_logs_every_step_and_its_final_numbers(inference, tmp_path, capsys):
    args = ["toy", "--simulate", "0.5,2,1,60", "--inference", inference, "--steps", "30"]
    plain = _run([*args, "--out", str(tmp_path / "plain")], capsys)
    logged = _run([*args, "--out", str(tmp_path / "logged"), "--tensorboard",
                   str(tmp_path / "tb")], capsys)
    assert logged["tensorboard"] == str(tmp_path / "tb")
    assert _without(logged, "figures") == _without(plain, "figures")  # logging changes nothing
    events = _events(tmp_path / "tb")
    assert [step for step, _ in events["train/elbo"]] == list(range(1, 31))  # a check a step
    assert events["train/lr"][-1][1] == pytest.approx(0.02)
    assert events["train/elbo"][-1][1] == pytest.approx(logged["final_train_elbo"], rel=1e-6)
    for name in ("final_train_elbo", "elbo", "log_likelihood"):
        assert events[f"hparam/{name}"] == [(30, pytest.approx(logged[name], rel=1e-6))]


def test_toy_tensorboard_needs_steps(tmp_path, capsys):
    assert main(["toy", "--simulate", "0.5,2,1,60", "--inference", "mle",
                 "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "--tensorboard logs SVI's steps" in capsys.readouterr().err
    assert not (tmp_path / "tb").exists()


def test_gmm_vi_logs_the_elbo_every_check_and_its_final_numbers(tmp_path, capsys):
    args = ["gmm", "--simulate", "120,2,2", "--inference", "vi", "--steps", "45",
            "--restarts", "1"]
    plain = _run([*args, "--components", "2", "--out", str(tmp_path / "plain")], capsys)
    logged = _run([*args, "--components", "2", "--out", str(tmp_path / "logged"),
                   "--tensorboard", str(tmp_path / "tb")], capsys)
    assert _without(logged, "figures", "mixture") == _without(plain, "figures", "mixture")
    events = _events(tmp_path / "tb")
    assert [step for step, _ in events["train/elbo"]] == [20, 40, 45]  # CHECK_EVERY, the last
    final = logged["diagnostics"]["final_elbo_per_point"]
    assert events["hparam/final_elbo_per_point"][0][1] == pytest.approx(final, rel=1e-6)
    assert events["hparam/test_log_likelihood"][0][1] == pytest.approx(
        logged["test_log_likelihood"], rel=1e-6)
    assert events["hparam/bic"][0][1] == pytest.approx(logged["bic"], rel=1e-6)
    # the mean of the last 5 steps' ELBOs, whose last one is the final ELBO: close to it
    assert events["train/elbo"][-1][1] == pytest.approx(final, abs=0.05)


def test_gmm_range_logs_a_run_per_k_and_only_vi_has_steps(tmp_path, capsys):
    args = ["gmm", "--simulate", "120,2,2", "--inference", "vi", "--steps", "45",
            "--restarts", "1"]
    ranged = _run([*args, "--components", "1:2", "--out", str(tmp_path / "range"),
                   "--tensorboard", str(tmp_path / "tb_range")], capsys)
    for row in ranged["selection"]:
        k = row["components"]
        events = _events(tmp_path / "tb_range" / f"K{k}")
        assert events["hparam/test_log_likelihood"][0][1] == pytest.approx(
            row["test_log_likelihood"], rel=1e-6)
    assert main([*args, "--components", "2", "--inference", "map",
                 "--tensorboard", str(tmp_path / "x")]) == 2


def test_compare_writes_one_run_per_algorithm_and_seed(tmp_path, capsys):
    args = ["compare", "--model", "toy", "--inference", "svi,mle", "--steps", "25",
            "--seeds", "2"]
    plain = _run([*args, "--out", str(tmp_path / "plain")], capsys)
    logged = _run([*args, "--out", str(tmp_path / "logged"), "--tensorboard",
                   str(tmp_path / "tb")], capsys)
    assert [_without(r) for r in logged["runs"]] == [_without(r) for r in plain["runs"]]
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == [
        "mle-seed0", "mle-seed1", "svi-seed0", "svi-seed1"]
    for row in logged["runs"]:
        events = _events(tmp_path / "tb" / f"{row['algorithm']}-seed{row['seed']}")
        for name in ("final_bound", "test_log_likelihood"):
            assert events[f"hparam/{name}"][0][1] == pytest.approx(row[name], rel=1e-6)
        if row["algorithm"] == "svi":
            assert len(events["train/elbo"]) == 25
            assert events["train/elbo"][-1][1] == pytest.approx(row["final_bound"], rel=1e-6)
        else:  # no steps: its numbers only
            assert "train/elbo" not in events


def test_compare_vae_passes_the_log_to_fit(tmp_path, capsys):
    metrics = _run(["compare", "--model", "vae", "--inference", "trace", "--epochs", "2",
                    "--seeds", "1", "--train-particles", "1", "--eval-particles", "4",
                    "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb"),
                    *TINY_VAE], capsys)
    row = metrics["runs"][0]
    events = _events(tmp_path / "tb" / "trace-seed0")
    # a check at each epoch's end (64 / 32 = 2 steps), whose ELBO is the epoch's
    assert [step for step, _ in events["train/elbo"]] == [2, 4]
    assert events["train/elbo"][-1][1] == pytest.approx(row["final_bound"], rel=1e-6)
    assert events["hparam/final_bound"][0][1] == pytest.approx(row["final_bound"], rel=1e-6)
    assert events["hparam/test_log_likelihood"][0][1] == pytest.approx(
        row["test_log_likelihood"], rel=1e-6)
