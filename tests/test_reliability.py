"""Checkpoints that survive crashes and refuse hostile files; resume; the NaN guard; determinism."""

import copy
import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pytest
import torch
from conftest import tiny_vae
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_vae.cli import main
from pyro_vae.config import load_config
from pyro_vae.errors import UserError
from pyro_vae.experiments import vae as vae_experiment
from pyro_vae.experiments.runs import folder_run_id, prepare_out
from pyro_vae.experiments.vae import train_vae
from pyro_vae.files import remove_orphaned_temporaries
from pyro_vae.train import CHECK_EVERY, TrainingDiverged, fit
from pyro_vae.train.checkpoint import load_checkpoint
from pyro_vae.train.step import bad_step, step_unless

TINY = [
    "data.dataset='digits'",
    "model.latent_dim=2",
    "model.hidden=[16]",
    "inference.eval_particles=5",
    "data.train_size=400",
    "data.test_size=50",
]
TINY_ARGS = [arg for item in TINY for arg in ("--set", item)]
# what differs between two runs of the same numbers: timings, paths and the run's own id
NOT_NUMBERS = {
    "run_id",
    "seconds_per_epoch",
    "examples_per_second",
    "evaluation_seconds",
    "checkpoint",
    "figures",
}


def tiny_run(out, epochs, **kwargs):
    return train_vae(
        load_config(None, [*TINY, f"train.epochs={epochs}"]), out, progress=False, **kwargs
    )


def params(path):
    payload = load_checkpoint(path)
    return {
        **payload["model_state"],
        **{f"guide.{k}": v for k, v in payload["guide_state"].items()},
    }


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def numbers(metrics):
    return {k: v for k, v in metrics.items() if k not in NOT_NUMBERS}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, tiny_run(out, 4)


def test_same_seed_same_numbers(uninterrupted, tmp_path):
    out, metrics = uninterrupted
    again = tiny_run(tmp_path, 4)
    assert numbers(again) == numbers(metrics)
    assert_same_params(params(tmp_path / "checkpoint.pt"), params(out / "checkpoint.pt"))


def test_resume_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    out, metrics = uninterrupted
    tiny_run(tmp_path, 2)
    assert main(["train", "--resume", str(tmp_path), "--epochs", "4", "--quiet"]) == 0
    resumed = json.loads((tmp_path / "metrics.json").read_text())
    assert numbers(resumed) == numbers(metrics)
    assert_same_params(params(tmp_path / "checkpoint.pt"), params(out / "checkpoint.pt"))


def _start(out: Path, *extra: str, delay: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYRO_VAE_TEST_SAVE_DELAY": str(delay)}
    return subprocess.Popen(
        [sys.executable, "-m", "pyro_vae", "train", *extra, "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_sigkill_at_random_moments_then_resume(uninterrupted, tmp_path):
    """Killed three times (saves are slowed so kills land mid-save too), resumed: same result."""
    out, _ = uninterrupted
    rng = random.Random(0)
    process = _start(tmp_path, *TINY_ARGS, "--epochs", "4", "--out", str(tmp_path), delay=0.2)
    for _ in range(3):
        _wait_for(tmp_path / "checkpoint.pt", process)
        time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is not None:
            break
        process.kill()
        process.communicate()  # reap it and close its pipe
        load_checkpoint(tmp_path / "checkpoint.pt")  # whatever the moment, it is loadable
        process = _start(tmp_path, "--resume", str(tmp_path), delay=0.2)
    stderr = process.communicate(timeout=300)[1]
    assert process.returncode == 0, stderr
    assert_same_params(params(tmp_path / "checkpoint.pt"), params(out / "checkpoint.pt"))
    assert not list(tmp_path.glob(".checkpoint.pt.*tmp"))  # a killed save's files are gone


def test_orphaned_temporaries_of_a_killed_save_are_removed(tmp_path):
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".checkpoint.pt.prev.tmp").write_bytes(b"a link never renamed")
    (tmp_path / ".metrics.json.0a1b2c3d.tmp").write_bytes(b"half the metrics")
    (tmp_path / "keep.tmp").write_bytes(b"not ours")
    (tmp_path / ".keep.tmp").write_bytes(b"not ours either")
    removed = remove_orphaned_temporaries(tmp_path)
    assert [p.name for p in removed] == [".checkpoint.pt.abc123.tmp", ".checkpoint.pt.prev.tmp",
                                         ".metrics.json.0a1b2c3d.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep.tmp", "keep.tmp"]


def test_a_command_taking_a_folder_removes_what_killed_writes_left_there(tmp_path):
    """Every command's ``--out`` goes through ``prepare_out``: once it owns the folder, the
    temporary files of writes killed midway (metrics, figures, checkpoints) are gone, and
    nothing else is touched."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".samples.png.0a1b2c3d.tmp").write_bytes(b"half a figure")
    (out / "notes.txt").write_text("the user's")
    prepare_out(out, overwrite=False)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".pyro-vae")) == [
        "notes.txt"]


def test_sigint_saves_and_resume_finishes_the_same(uninterrupted, tmp_path):
    out, _ = uninterrupted
    process = _start(tmp_path, *TINY_ARGS, "--epochs", "4", "--out", str(tmp_path), delay=0.2)
    _wait_for(tmp_path / "checkpoint.pt", process)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130, stderr
    assert f"pyro-vae train --resume {tmp_path}" in stderr
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 0
    assert_same_params(params(tmp_path / "checkpoint.pt"), params(out / "checkpoint.pt"))


class _Marker:
    """Unpickling this would create a file: the payload a hostile checkpoint carries."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_pickle_carrying_code_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "checkpoint.pt", "wb") as f:
        pickle.dump({"format_version": 1, "payload": _Marker(marker)}, f)
    torch.save({"format_version": 1, "x": _Marker(marker)}, run / "checkpoint.prev.pt")
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint.pt")]) == 2
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint.prev.pt")]) == 2
    assert main(["train", "--resume", str(run)]) == 2
    assert not marker.exists()
    assert "not a readable pyro-vae checkpoint" in capsys.readouterr().err


def test_truncated_random_and_mismatched_checkpoints_are_refused(uninterrupted, tmp_path, capsys):
    out, _ = uninterrupted
    good = (out / "checkpoint.pt").read_bytes()
    bad = tmp_path / "checkpoint.pt"
    for tenth in range(10):
        bad.write_bytes(good[: len(good) * tenth // 10])
        assert main(["evaluate", "--checkpoint", str(bad)]) == 2
    bad.write_bytes(random.Random(1).randbytes(5000))
    assert main(["evaluate", "--checkpoint", str(bad)]) == 2
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    payload["config"]["model"]["latent_dim"] = 3  # weights of a 2-d model, config of a 3-d one
    torch.save(payload, bad)
    assert main(["evaluate", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 12 and "does not match the model its config builds" in err[-1]


def test_overwrite_then_damage_never_resumes_the_replaced_run(tmp_path, capsys):
    """After --overwrite no checkpoint of the replaced run is left to fall back to; a fallback
    to the new run's previous checkpoint is announced and recorded."""
    out = tmp_path / "run"
    train = ["train", *TINY_ARGS, "--quiet", "--out", str(out)]
    assert main([*train, "--epochs", "2", "--seed", "1"]) == 0
    assert main([*train, "--epochs", "1", "--seed", "2", "--overwrite"]) == 0
    assert not (out / "checkpoint.prev.pt").exists()  # the seed-1 run's files are gone
    (out / "checkpoint.pt").write_bytes(b"damaged")
    assert main(["train", "--resume", str(out), "--epochs", "3"]) == 2
    assert "not a readable pyro-vae checkpoint" in capsys.readouterr().err
    # a run of its own with two checkpoints: the damaged newest falls back, and says so
    assert main([*train, "--epochs", "2", "--seed", "2", "--overwrite"]) == 0
    assert load_checkpoint(out / "checkpoint.prev.pt")["epoch"] == 1
    (out / "checkpoint.pt").write_bytes(b"damaged")
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint.pt is unreadable" in err and "resuming from checkpoint.prev.pt, saved " \
        "after epoch 1" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["train"]["seed"] == 2 and len(metrics["train_elbo"]) == 3
    assert metrics["resumed_from_previous_checkpoint"].startswith("checkpoint.pt unreadable")
    # fewer epochs than the run has done is a mistake, not a silent no-op
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 2
    assert capsys.readouterr().err.strip().endswith("the run has done 3 epochs; give --epochs 3 "
                                                   "or more")


def test_a_run_id_names_the_run_in_its_config_metrics_and_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", *TINY_ARGS, "--quiet", "--epochs", "2", "--out", str(out)]
    assert main(train) == 0
    run_id = folder_run_id(out)
    assert run_id is not None and load_config(out / "config.toml").train.epochs == 2
    assert json.loads((out / "metrics.json").read_text())["run_id"] == run_id
    assert {load_checkpoint(out / name)["run_id"] for name in ("checkpoint.pt",
                                                               "checkpoint.prev.pt")} == {run_id}
    assert main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    assert folder_run_id(out) == run_id  # a resume continues the same run
    assert main([*train, "--overwrite"]) == 0
    assert folder_run_id(out) not in (None, run_id)  # a replacement is another run


def test_an_overwrite_killed_before_its_first_checkpoint_never_resumes_the_old_run(
        tmp_path, capsys, monkeypatch):
    """The new run's config.toml (with its run id) is written before the replaced run's
    checkpoints are removed: a kill between the two leaves checkpoints that name another run,
    and a resume refuses them instead of continuing the replaced run."""
    out = tmp_path / "run"
    train = ["train", *TINY_ARGS, "--quiet", "--epochs", "2", "--out", str(out)]
    assert main(train) == 0
    old_run = folder_run_id(out)

    def killed(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(vae_experiment, "discard_replaced_run", killed)
    assert main([*train, "--seed", "5", "--overwrite"]) == 130
    monkeypatch.undo()
    assert folder_run_id(out) != old_run and (out / "checkpoint.pt").exists()
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert f"was saved by run {old_run}, but the folder now holds run {folder_run_id(out)}" in err
    assert err.count("\n") == 1


def test_a_full_disk_mid_run_keeps_the_last_checkpoint_and_resumes(tmp_path, capsys, monkeypatch):
    """The second epoch's checkpoint cannot be written (its bytes go to /dev/full, as on a
    full disk): exit 2 and one line; the first epoch's checkpoint is intact, no temporary
    file is left, and a resume finishes the run."""
    out = tmp_path / "run"
    saves = []
    real_save = torch.save

    def disk_fills_after_one_save(payload, file):
        saves.append(file)
        if len(saves) == 1:
            return real_save(payload, file)
        with open("/dev/full", "wb") as full:  # writing or closing it raises ENOSPC
            real_save(payload, full)

    monkeypatch.setattr(torch, "save", disk_fills_after_one_save)
    assert main(["train", *TINY_ARGS, "--quiet", "--epochs", "3", "--out", str(out)]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert "checkpoint.pt still holds the last complete one: free space, then resume" in err
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert not list(out.glob(".*tmp")) and not (out / "metrics.json").exists()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["train_elbo"]) == 3


def test_a_full_disk_while_writing_results_is_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(vae_experiment, "write_metrics", lambda out, metrics: full(
        out / "metrics.json", ""))
    assert main(["train", *TINY_ARGS, "--quiet", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"pyro-vae train: error: cannot write {out / 'metrics.json'} (No space left "
                   "on device); free space or choose another --out\n")


@pytest.mark.parametrize("where", ["load_dataset", "evaluate_vae"])
def test_ctrl_c_before_or_after_the_training_loop_is_one_line_and_130(where, tmp_path, capsys,
                                                                      monkeypatch):
    """Ctrl-C while the data load or the final evaluation runs (outside the loop, which saves
    and says how to resume): exit 130, one line, and a checkpoint of every finished epoch."""
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vae_experiment, where, interrupted)
    assert main(["train", *TINY_ARGS, "--quiet", "--epochs", "1", "--out", str(out)]) == 130
    assert capsys.readouterr().err == "pyro-vae train: interrupted\n"
    if where == "evaluate_vae":
        assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_a_resume_refuses_an_edited_config_and_another_out(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY_ARGS, "--quiet", "--epochs", "1", "--out", str(out)]) == 0
    config = out / "config.toml"
    original = config.read_text()
    config.write_text(original.replace("latent_dim = 2", "latent_dim = 5"))
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 2
    assert "config.toml was edited (model.latent_dim); --resume continues the run as saved" in (
        capsys.readouterr().err)
    config.write_text(original)
    assert main(["train", "--resume", str(out), "--epochs", "2", "--out", str(tmp_path)]) == 2
    assert "continues in its own folder; drop --out" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0


def test_a_failed_overwrite_changes_nothing(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY_ARGS, "--quiet", "--epochs", "1", "--out", str(out)]) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an array")
    assert main(["train", "--data", str(bad), "--out", str(out), "--overwrite"]) == 2
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


@pytest.mark.parametrize("tamper, message", [
    (lambda p: p["config"]["model"].update(hidden=[10**12]), "model.hidden must be an integer"),
    (lambda p: p["config"]["model"].update(latent_dim=2**40), "model.latent_dim must be"),
    (lambda p: p["config"]["inference"].update(eval_particles=10**15), "eval_particles must be"),
    (lambda p: p.update(data_dim=-5), "is invalid: data_dim -5"),
    (lambda p: p.update(data_dim=10**12, image_shape=None), "is invalid: data_dim"),
    (lambda p: p.update(image_shape=[10**6, 10**6]), "is invalid: data_dim 64"),
    (lambda p: p.update(image_shape=["eight", 8]), "lacks the data shape"),
])
def test_a_checkpoint_bomb_is_refused_before_anything_is_built(tamper, message, uninterrupted,
                                                               tmp_path, capsys):
    """Declared sizes that would ask for terabytes end in exit 2 and one line: the config is
    validated with its bounds and the data shape checked before any module is constructed."""
    out, _ = uninterrupted
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    tamper(payload)
    torch.save(payload, tmp_path / "checkpoint.pt")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "checkpoint.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("order", [[0] * 400, list(range(10**6, 10**6 + 400)), list(range(5))])
def test_a_resume_position_outside_the_data_is_refused(order, uninterrupted, tmp_path, capsys):
    out, _ = uninterrupted
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    payload["train_state"]["order"] = torch.tensor(order)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(payload, run / "checkpoint.pt")
    assert main(["train", "--resume", str(run), "--epochs", "5"]) == 2
    assert "cannot resume from this checkpoint: its shuffle is not an order of the 400 " \
        "training rows" in capsys.readouterr().err


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=8))
def test_random_byte_edits_of_a_real_checkpoint_never_end_in_a_traceback(
        edits, uninterrupted, tmp_path_factory, capsys):
    """Whatever bytes change, evaluate and --resume either work or exit 2 with one line."""
    out, _ = uninterrupted
    data = bytearray((out / "checkpoint.pt").read_bytes())
    for where, value in edits:
        data[int(where * len(data))] = value
    run = tmp_path_factory.mktemp("edited")
    (run / "checkpoint.pt").write_bytes(bytes(data))
    capsys.readouterr()
    for argv in (["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--eval-particles",
                  "2"], ["train", "--resume", str(run), "--epochs", "5", "--quiet"]):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code in (0, 2), err
        if code == 2:
            assert len(err.splitlines()) == 1 and "Traceback" not in err, err


class _NaNAt(torch.nn.Module):
    """A model that returns a NaN likelihood on the calls listed (a fault injected on purpose)."""

    def __init__(self, model, bad_calls):
        super().__init__()
        self.model, self.bad_calls, self.calls = model, set(bad_calls), 0

    def forward(self, x=None, *, n=None):
        self.calls += 1
        if self.calls in self.bad_calls:
            with pyro.validation_enabled(False):  # validation would refuse the NaN up front
                pyro.factor("fault", torch.tensor(float("nan")))
        return self.model(x, n=n)


def _tiny_pair():
    return tiny_vae(64, latent_dim=2, hidden=16)


@pytest.mark.filterwarnings("ignore:Encountered NaN")  # Pyro's own notice of the fault
def test_one_nan_step_is_skipped():
    model, guide = _tiny_pair()
    x = torch.rand(256, 64).round()
    result = fit(_NaNAt(model, {3}), guide, x, epochs=2, batch_size=64, progress=False)
    assert result.skipped_steps == 1 and result.rollbacks == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(map(lambda v: v == v, result.train_elbo))  # no NaN recorded


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_persistent_nan_rolls_back_then_stops_with_the_good_checkpoint_intact(tmp_path):
    model, guide = _tiny_pair()
    x = torch.rand(256, 64).round()
    nan_from_epoch_2 = _NaNAt(model, range(6, 10_000))  # 4 steps per epoch: epoch 1 is clean
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        fit(
            nan_from_epoch_2,
            guide,
            x,
            epochs=5,
            batch_size=64,
            progress=False,
            checkpoint=tmp_path / "checkpoint.pt",
            max_bad_steps=3,
            max_rollbacks=2,
        )
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in payload["model_state"].values())
    assert payload["model_state"].keys() == {f"model.{k}" for k in model.state_dict()}


def test_nan_guard_error_is_a_user_error():
    assert issubclass(TrainingDiverged, UserError)


@pytest.mark.parametrize("fused", [True, False], ids=["fused Adam", "foreach Adam"])
def test_a_bad_step_leaves_parameters_and_adam_state_as_they_were(fused):
    weights = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    optimizer = torch.optim.Adam([weights], lr=0.1, fused=fused)
    twin = torch.nn.Parameter(weights.detach().clone())
    reference = torch.optim.Adam([twin], lr=0.1, fused=fused)
    for p, opt, grads in (
        (weights, optimizer, ([1.0, 2.0, 3.0], [float("nan"), 1.0, 1.0])),
        (twin, reference, ([1.0, 2.0, 3.0],)),
    ):
        for grad in grads:
            p.grad = torch.tensor(grad)
            step_unless(opt, bad_step(torch.tensor(5.0), [p.grad]))
    # the NaN step changed nothing: one good step each, the same result
    assert torch.equal(weights, twin)
    assert torch.equal(optimizer.state[weights]["exp_avg"], reference.state[twin]["exp_avg"])
    assert float(optimizer.state[weights]["step"]) == 1.0
    assert bad_step(torch.tensor(float("inf")), [torch.ones(2)]).item() == 1.0
    assert bad_step(torch.tensor(1.0), [torch.ones(2)]).item() == 0.0


def _count_host_reads(monkeypatch, train) -> int:
    """How many times ``train()`` read a tensor's value to the host (each read a GPU sync)."""
    reads = []
    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            reads.append(1)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        train()
    finally:
        monkeypatch.undo()
    return len(reads)


def reads_added_by_one_epoch(count, device="cpu") -> int:
    """``count(train)`` (the host reads ``train()`` makes) for a 2-epoch fit of the tiny VAE
    minus that for a 1-epoch fit, 60 steps an epoch: what one epoch adds, set-up left out."""
    model, guide = (m.to(device) for m in _tiny_pair())
    x = torch.rand(960, 64, device=device).round()
    counts = []
    for epochs in (1, 2):
        pyro.clear_param_store()
        pair = [copy.deepcopy(m) for m in (model, guide)]
        counts.append(count(
            lambda pair=pair, epochs=epochs: fit(
                *pair, x, epochs=epochs, batch_size=16, elbo="auto", progress=False
            )
        ))
    return counts[1] - counts[0]


def test_training_reads_the_device_once_per_check_not_once_per_step(monkeypatch):
    """An epoch of 60 steps adds 60 / CHECK_EVERY = 3 reads (the per-step NaN guard of a
    loop that calls .item() would add 60)."""
    added = reads_added_by_one_epoch(lambda train: _count_host_reads(monkeypatch, train))
    assert added == 60 // CHECK_EVERY


def test_bfloat16_precision_changes_the_arithmetic_not_the_objective():
    model, guide = _tiny_pair()
    x = torch.rand(256, 64).round()
    runs = {}
    for precision in ("float32", "bfloat16"):
        pair = [copy.deepcopy(m) for m in (model, guide)]
        runs[precision] = fit(*pair, x, epochs=2, batch_size=64, precision=precision,
                              elbo="auto", progress=False), pair
    (full, _), (half, half_pair) = runs["float32"], runs["bfloat16"]
    # the loss ran in bfloat16 (not bit for bit the float32 run) yet estimates the same ELBO
    assert full.train_elbo != half.train_elbo
    torch.testing.assert_close(torch.tensor(half.train_elbo), torch.tensor(full.train_elbo),
                               rtol=5e-3, atol=0.0)
    assert all(p.dtype == torch.float32 for m in half_pair for p in m.parameters())
    with pytest.raises(ValueError, match="precision must be one of"):
        fit(model, guide, x, epochs=1, precision="float16", progress=False)
