"""One owner per run folder: a second command on a folder in use exits 2 naming the holder;
a lock left by a killed process is taken over with a notice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyro_vae.errors import UserError
from pyro_vae.experiments.ownership import LOCK_NAME, claim_folder, release_folders
from pyro_vae.experiments.runs import prepare_out

PYRO_VAE = str(Path(sys.executable).parent / "pyro-vae")
TRAIN = [PYRO_VAE, "train", "--dataset", "digits", "--eval-particles", "5", "--quiet"]


def wait_for_lock(lock: Path, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text():
            return json.loads(lock.read_text())
        time.sleep(0.1)
    raise AssertionError(f"{lock} never appeared")


def test_two_trainings_never_share_a_folder_and_a_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([*TRAIN, "--epochs", "1000", "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        holder = wait_for_lock(out / LOCK_NAME)
        assert holder["pid"] == first.pid and "train" in holder["command"]
        second = subprocess.run([*TRAIN, "--epochs", "1", "--out", str(out), "--overwrite"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.startswith(f"pyro-vae train: error: --out {out} is in use by "
                                        f"process {first.pid} (")
        assert len(second.stderr.splitlines()) == 1
        evaluate = subprocess.run([PYRO_VAE, "evaluate", "--checkpoint", "x.pt", "--out",
                                   str(out)], capture_output=True, text=True, timeout=120)
        assert evaluate.returncode == 2 and "is in use by" in evaluate.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / LOCK_NAME).exists()  # killed: the file stays, its lock went with the process
    third = subprocess.run([*TRAIN, "--epochs", "1", "--out", str(out), "--overwrite"],
                           capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"left locked by process {first.pid}" in third.stderr
    assert "taking it over" in third.stderr
    assert not (out / LOCK_NAME).exists()  # released when the command ended


def test_a_process_claims_again_freely_and_releases_everything(tmp_path):
    assert prepare_out(tmp_path / "a", overwrite=False) == tmp_path / "a"
    claim_folder(tmp_path / "a")  # the same process: already its own
    assert json.loads((tmp_path / "a" / LOCK_NAME).read_text())["pid"] == os.getpid()
    release_folders()
    assert not (tmp_path / "a" / LOCK_NAME).exists()


def test_a_folder_held_by_another_process_is_refused_in_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from pyro_vae.experiments.ownership import claim_folder; "
         f"claim_folder(Path({str(tmp_path)!r})); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(UserError, match=f"is in use by process {holder.pid}"):
            prepare_out(tmp_path, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
