"""benchmarks/vs_numpyro.py in its tiny setting, where the optional ``bench`` extra (numpyro,
jax) is installed: NumPyro's VAE learns, it is the project's model (the project's evaluator
and NumPyro's own ELBO agree on its weights), and the table has every route.  Speed is not
asserted."""

import math
from pathlib import Path

import pytest
import torch

from pyro_vae.config import load_config
from pyro_vae.train import resolve_precision

pytest.importorskip("numpyro")
pytest.importorskip("jax")

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_numpyro_vae_learns_the_same_model_and_the_table_has_every_route(
    tmp_path, monkeypatch, one_thread
):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the benchmarks import their siblings
    vs_numpyro = pytest.importorskip("vs_numpyro")
    assert vs_numpyro.numpyro_available()
    written = tmp_path / "vs_numpyro.md"
    result = vs_numpyro.main(["--quick", "--markdown", str(written)])

    (quality,) = result["quality"]
    losses = quality["numpyro_losses"]  # -ELBO per example, the training batches' mean
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    assert math.isfinite(quality["numpyro"])
    assert quality["numpyro"] > quality["numpyro_initial"] + 50
    # the same initial weights, so the same ELBO at the start as the project's untrained VAE,
    # far below a trained one; and fit, trained as long from them, lands near NumPyro
    assert quality["numpyro_initial"] < -500
    assert abs(quality["fit"] - quality["numpyro"]) < 0.2 * abs(quality["numpyro_initial"]
                                                                   - quality["numpyro"])
    # NumPyro's Trace_ELBO on its own parameters agrees with the project's evaluator of those
    # parameters copied into the PyTorch networks: the two programs are the same model
    # (10 particles on 1000 test images: Monte Carlo noise well under a nat)
    assert abs(quality["numpyro_own"] - quality["numpyro"]) < 1.0

    routes = {row["key"]: row for row in result["rows"]}
    default_is_float32 = resolve_precision(load_config(None).train.precision, "cpu")[0] == "float32"
    assert set(routes) == {"numpyro", "fit", "fitc", "loop", "plain"} | (
        set() if default_is_float32 else {"fit32", "fitc32"})
    assert routes["numpyro"]["ratio"] == 1.0
    assert all(row["examples_per_s"] > 0 and row["batch"] == 128 for row in routes.values())
    table = written.read_text()
    assert table.startswith("<!-- written by benchmarks/vs_numpyro.py --quick -->\n")
    for row in routes.values():
        assert f"| {row['route']} | 128 |" in table
    assert "| 0 | " in table and "fit - NumPyro" in table
    assert "- batch 128: default fit / NumPyro = " in table
    assert "fit float32 / bare loop = " in table
    assert f"{routes['fitc']['route']} / NumPyro = " in table
    # the full-MNIST-size epochs: NumPyro and fit on the tiled images
    full = {row["key"] for row in result["full_rows"]}
    assert full == {"numpyro", "fit", "fitc", "loop"} | (
        set() if default_is_float32 else {"fit32"})
    assert all(row["n"] == 1024 for row in result["full_rows"])
    assert "Epochs of full-MNIST size (1024 rows" in table
    assert table.count("- batch 128: default fit / NumPyro = ") == 2  # both tables summarised


def test_the_ceiling_counts_the_matrix_products_of_a_step(monkeypatch):
    """784-400-100 encoder, 50-400-784 decoder: 687,200 multiply-adds forward, as many for the
    weights' gradients, as many less 784 x 400 for the inputs' (the data needs none)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    vs_numpyro = pytest.importorskip("vs_numpyro")
    assert vs_numpyro.flop_per_example(784, 50, [400]) == 2 * (3 * 687_200 - 784 * 400)
    assert vs_numpyro.gemm_peak(torch.float32, size=64, repeats=2) > 0
