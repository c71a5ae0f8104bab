"""Progress: plain lines on stderr when it is not a terminal (no carriage returns in logs)."""

import subprocess
import sys
from pathlib import Path

from pyro_vae.progress import PlainProgress, live_bars, progress_bar


def test_plain_progress_writes_whole_lines_to_stderr(capsys):
    bar = PlainProgress(total=4, desc="log p(x) with K=5", every=0.0)
    bar.set_postfix(elbo="-1.50")
    for _ in range(4):
        bar.update(1)
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and "\r" not in captured.err
    lines = captured.err.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "log p(x) with K=5: 1/4 (25%)", "log p(x) with K=5: 2/4 (50%)",
        "log p(x) with K=5: 3/4 (75%)", "log p(x) with K=5: 4/4 (100%)"]
    assert all(line.endswith(", elbo=-1.50") for line in lines)


def test_a_pipe_gets_plain_lines_and_quiet_gets_nothing(capsys):
    assert isinstance(progress_bar(10, "epoch 1/1"), PlainProgress)  # capsys: not a terminal
    assert not live_bars()  # so NUTS keeps Pyro's redrawn bar out of logs
    quiet = progress_bar(10, "epoch 1/1", enabled=False)
    quiet.update(10)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_a_training_log_has_no_carriage_returns(tmp_path):
    command = [str(Path(sys.executable).parent / "pyro-vae"), "train", "--dataset", "digits",
               "--epochs", "2", "--eval-particles", "5", "--out", str(tmp_path / "run")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "\r" not in run.stderr
    lines = run.stderr.splitlines()
    assert lines[0].startswith("threads: ")  # the thread count chosen, before the first epoch
    assert lines[1].startswith("precision: ")  # the training loss's arithmetic, and why
    assert lines[2].startswith("compile: off (auto: ")  # two short epochs never compile
    assert [line.split()[:2] for line in lines[3:]] == [["epoch", "1"], ["epoch", "2"]]
    assert run.stdout.splitlines()[-1] == f"run folder: {tmp_path / 'run'}"
