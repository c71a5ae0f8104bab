"""train --tensorboard: the event files, read back with TensorBoard's own reader, hold what a
run measured (at the checks, per epoch, at the end), a resumed run continues them, and the
loop's numbers are the same with and without them."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.errors import UserError
from pyro_vae.train import CHECK_EVERY
from pyro_vae.train.guards import tally
from pyro_vae.train.state import FitResult, Progress
from pyro_vae.train.step import svi_step

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

# 400 digits in batches of 16: 25 steps per epoch, so checks at steps 20 and 25 of each epoch
TINY = ["data.dataset='digits'", "model.latent_dim=2", "model.hidden=[16]",
        "inference.eval_particles=5", "data.train_size=400", "data.test_size=50",
        "train.batch_size=16"]
TINY_ARGS = [arg for item in TINY for arg in ("--set", item)]
STEPS = 25
TRAIN_TAGS = {"train/elbo", "train/grad_norm", "train/lr", "train/examples_per_second",
              "train/skipped_steps"}
TEST_TAGS = {"test/elbo", "test/reconstruction", "test/kl"}


def train(out: Path, log_dir: Path, epochs: int) -> dict:
    argv = ["train", *TINY_ARGS, "--epochs", str(epochs), "--quiet", "--out", str(out),
            "--tensorboard", str(log_dir)]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def events(folder) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    return accumulator.Reload()


def series(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def f32(value: float) -> float:
    """TensorBoard stores a scalar as float32."""
    return float(np.float32(value))


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    out, log_dir = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("tb")
    return out, log_dir, train(out, log_dir, 2)


def test_event_files_hold_the_run(two_epochs):
    out, log_dir, metrics = two_epochs
    (folder,) = log_dir.iterdir()  # one TensorBoard run, named by the run's id
    assert folder.name == metrics["run_id"] and metrics["tensorboard"] == str(folder)
    log = events(folder)
    tags = log.Tags()
    assert set(tags["scalars"]) == TRAIN_TAGS | TEST_TAGS | {"hparam/test_elbo",
                                                            "hparam/test_log_likelihood"}
    assert set(tags["images"]) == {"images/samples", "images/reconstructions"}
    checks = [CHECK_EVERY, STEPS, STEPS + CHECK_EVERY, 2 * STEPS]
    for tag in TRAIN_TAGS:
        assert [step for step, _ in series(log, tag)] == checks, tag
    for tag in TEST_TAGS:
        assert [step for step, _ in series(log, tag)] == [STEPS, 2 * STEPS], tag
    assert [value for _, value in series(log, "train/lr")] == [f32(1e-3)] * 4
    assert [value for _, value in series(log, "train/skipped_steps")] == [0] * 4
    assert all(value > 0 for _, value in series(log, "train/grad_norm"))
    assert all(value > 0 for _, value in series(log, "train/examples_per_second"))
    # the epoch's train ELBO is the examples-weighted mean of its two checks' (25 batches of
    # 16 rows: the first check read 20 of them, the second 5)
    elbos = [value for _, value in series(log, "train/elbo")]
    for epoch, (first, second) in enumerate(zip(elbos[::2], elbos[1::2], strict=True)):
        assert (20 * first + 5 * second) / 25 == pytest.approx(metrics["train_elbo"][epoch],
                                                               rel=1e-6)
    # per epoch: the test ELBO fit recorded, and its two terms add up to it (same draws of z)
    tests = {tag: [value for _, value in series(log, tag)] for tag in TEST_TAGS}
    assert tests["test/elbo"] == [f32(v) for v in metrics["test_elbo_per_epoch"]]
    for elbo, reconstruction, kl in zip(tests["test/elbo"], tests["test/reconstruction"],
                                        tests["test/kl"], strict=True):
        assert reconstruction - kl == pytest.approx(elbo, rel=1e-5)
    # at the end: the final numbers of metrics.json, and the config as hparams
    assert series(log, "hparam/test_elbo") == [(2 * STEPS, f32(metrics["test_elbo"]))]
    assert series(log, "hparam/test_log_likelihood") == [
        (2 * STEPS, f32(metrics["test_log_likelihood"]))]
    start = plugin_data_pb2.HParamsPluginData.FromString(
        log.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["train.batch_size"].number_value == 16
    assert start.hparams["model.hidden"].string_value == "[16]"
    assert start.hparams["train.log_dir"].string_value == str(log_dir)
    # images after the last epoch (the first set of every 5 is due at epoch 5): digits 8x8,
    # 64 samples in 8 rows of 8 and 16 test images over their reconstructions, 1 px apart
    samples, = log.Images("images/samples")
    reconstructions, = log.Images("images/reconstructions")
    assert (samples.step, samples.width, samples.height) == (2 * STEPS, 8 * 9 - 1, 8 * 9 - 1)
    assert (reconstructions.width, reconstructions.height) == (16 * 9 - 1, 2 * 9 - 1)


def test_a_resumed_run_continues_its_log(two_epochs, tmp_path):
    """Resumed from the checkpoint before the last (the newest one unreadable), the run
    relogs its last epoch: TensorBoard drops what the first attempt logged after that
    checkpoint, and the log equals the uninterrupted run's, each step once."""
    out, log_dir = tmp_path / "run", tmp_path / "tb"
    metrics = train(out, log_dir, 2)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")  # resumes from epoch 1's
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    (folder,) = log_dir.iterdir()
    assert resumed["run_id"] == metrics["run_id"] and resumed["tensorboard"] == str(folder)
    log, uninterrupted = events(folder), events(Path(two_epochs[2]["tensorboard"]))
    for tag in (TRAIN_TAGS | TEST_TAGS) - {"train/examples_per_second"}:
        assert series(log, tag) == series(uninterrupted, tag), tag
    assert series(log, "hparam/test_elbo") == [(2 * STEPS, f32(resumed["test_elbo"]))]
    assert len(log.Images("images/samples")) == 1


def test_logging_leaves_the_run_unchanged(two_epochs, tmp_path):
    """Logging (the test set's terms, the images) draws on forked generators only."""
    out, _, logged = two_epochs
    argv = ["train", *TINY_ARGS, "--epochs", "2", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    plain = json.loads((tmp_path / "metrics.json").read_text())
    assert "tensorboard" not in plain
    same = ("train_elbo", "test_elbo_per_epoch", "test_elbo", "test_log_likelihood",
            "active_units")
    assert {k: plain[k] for k in same} == {k: logged[k] for k in same}


def test_without_the_tensorboard_package_one_line_before_anything_changes(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    out = tmp_path / "run"
    argv = ["train", *TINY_ARGS, "--epochs", "1", "--quiet", "--out", str(out),
            "--tensorboard", str(tmp_path / "tb")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install tensorboard" in err
    assert not (out / "config.toml").exists() and not (tmp_path / "tb").exists()


@pytest.mark.parametrize("log_dir", ["''", "'   '", "'FILE'"])
def test_log_dir_must_be_a_folder(log_dir, tmp_path, capsys):
    (tmp_path / "FILE").write_text("")
    log_dir = log_dir.replace("FILE", str(tmp_path / "FILE"))
    argv = ["train", "--set", f"train.log_dir={log_dir}", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "train.log_dir must name a folder" in capsys.readouterr().err


def test_check_reads_elbo_and_gradient_norm_of_the_good_steps():
    """A check's ELBO is the batch-weighted mean over good steps of -loss / N, its gradient
    norm their mean; a bad step counts as work (examples) and as skipped, nothing else."""
    n, result, state = 100, FitResult(), Progress()
    pending = [(torch.tensor([300.0, 0.0, 2.0]), 10), (torch.tensor([float("nan"), 1.0,
               float("nan")]), 10), (torch.tensor([500.0, 0.0, 4.0]), 30)]
    read = tally(pending, state, result, n, bad_run=0, max_bad_steps=5)
    assert pending == [] and result.skipped_steps == 1 and read.bad_run == 0
    assert read.elbo == pytest.approx(-(300 * 10 / n + 500 * 30 / n) / 40)
    assert read.grad_norm == 3.0 and read.examples == 50
    assert state.total == pytest.approx(300 * 10 / n + 500 * 30 / n) and state.seen == 40


def test_svi_step_returns_the_gradient_norm():
    """loss = w . x has gradient x: the step reports ||x||_2 = 5 and updates w."""
    w = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=0.1, fused=True)
    row = svi_step(w @ torch.tensor([3.0, 4.0]), optimizer, [w])
    assert row.tolist() == [0.0, 0.0, 5.0] and not torch.equal(w, torch.zeros(2))


def test_training_log_needs_the_package(tmp_path, monkeypatch):
    from pyro_vae.train import TrainingLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UserError, match="pip install tensorboard"):
        TrainingLog(tmp_path)
