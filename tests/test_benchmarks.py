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
