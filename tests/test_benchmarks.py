"""The VAE throughput benchmark runs end to end in a tiny setting (numbers not timed here)."""

import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_vae_throughput_runs_and_fit_matches_the_plain_loop():
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vae_throughput.py"), "--repeats", "1",
         "--batch-sizes", "1024", "--routes", "elbo=fused", "--quality-epochs", "1",
         "--quality-seeds", "0", "--example-epochs", "0", "--train-size", "6000",
         "--threads", "1"],
        capture_output=True, text=True, timeout=600, cwd=BENCHMARKS,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = completed.stdout
    assert "batch 1024: 6000 examples, 6 steps per epoch" in out
    assert re.search(r"\| fit, elbo=fused \| [\d.]+ \| [\d,]+ \| [\d.]+ \|", out)
    # fit draws the seed's random numbers in the plain loop's order: the same test ELBO
    seed_row = re.search(r"\| 0 \| (-[\d.]+) \| (-[\d.]+) \| ([+-][\d.]+) \| (-[\d.]+) \|", out)
    fused, plain, difference, bfloat16 = map(float, seed_row.groups())
    assert abs(difference) <= 0.002 and fused < -100 and plain < -100
    # mixed precision: other round-off (tests/test_reliability.py), the same objective
    assert abs(bfloat16 - fused) < 0.5
    assert re.search(r"\| fit, elbo=fused, precision=bfloat16 \| [\d.]+ \|", out)


def test_iwae_table1_runs_resumes_and_reuses_finished_cells(tmp_path):
    """A tiny stand-in for the paper's protocol (one stage, mnist5k rows, small nets): the
    table has the paper's number beside the measured one; a second run trains nothing."""
    command = [sys.executable, str(BENCHMARKS / "iwae_table1.py"), "--stages", "1",
               "--cells", "vae1,iwae5", "--eval-particles", "5", "--out", str(tmp_path),
               "--quiet", "--set", 'data.dataset="mnist5k"', "--set", "data.train_size=100",
               "--set", "data.test_size=20", "--set", "model.hidden=[8]",
               "--set", "model.latent_dim=2"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=BENCHMARKS)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = re.findall(r"\| 1 \| (vae1|iwae5) \| ([\d.]+) \| ([\d.]+) \| (-[\d.]+) \| 1 \|",
                      first.stdout)
    assert [(cell, paper) for cell, paper, _, _ in rows] == [("vae1", "86.76"), ("iwae5", "85.54")]
    # K = 5 importance sampling is at least the one-particle ELBO's mean: NLL <= -ELBO
    assert all(float(nll) <= -float(elbo) + 1e-6 for _, _, nll, elbo in rows)
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=BENCHMARKS)
    assert second.returncode == 0 and "layer(s)," not in second.stdout  # none trained again
    assert second.stdout == (tmp_path / "table1.md").read_text()
    assert re.findall(r"\| 1 \| (?:vae1|iwae5) .*", second.stdout) == re.findall(
        r"\| 1 \| (?:vae1|iwae5) .*", first.stdout)
    # one cell asked for alone still gets the table of every finished cell, also in --markdown
    alone = subprocess.run([*command[:command.index("--cells")], "--cells", "iwae5",
                            *command[command.index("--cells") + 2:], "--markdown",
                            str(tmp_path / "published.md")],
                           capture_output=True, text=True, timeout=600, cwd=BENCHMARKS)
    assert alone.returncode == 0 and alone.stdout == second.stdout
    assert (tmp_path / "published.md").read_text() == second.stdout
    # a finished cell of another length is never passed off as this budget's
    longer = subprocess.run([*command[:3], "2", *command[4:]], capture_output=True, text=True,
                            timeout=600, cwd=BENCHMARKS)
    assert longer.returncode == 1 and "holds a finished cell of 1 epochs, not the 4" in (
        longer.stderr)
