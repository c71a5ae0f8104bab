"""Every example script runs end to end with tiny budgets (figures go to a scratch folder)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"

RUNS = {
    "autoencoder_vs_vae.py": ["--epochs", "1", "--set", "data.train_size=300",
                              "--set", "data.test_size=100", "--set", "inference.eval_particles=5"],
    "gmm_vs_vae.py": ["--epochs", "1", "--eval-particles", "5", "--em-iters", "3"],
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(RUNS)


@pytest.mark.parametrize("script", sorted(RUNS))
def test_example_runs(script, tmp_path):
    figure = tmp_path / "figure.png"
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *RUNS[script], "--out", str(tmp_path / "runs"),
         "--figure", str(figure)],
        capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert figure.stat().st_size > 10_000
