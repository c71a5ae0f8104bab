"""benchmarks/vs_numpyro.py in its tiny setting, where the optional ``bench`` extra (numpyro,
jax) is installed: NumPyro's VAE learns, it is the project's model (the project's evaluator
and NumPyro's own ELBO agree on its weights), and the table has every route.  Speed is not
asserted."""

import math
from pathlib import Path

import pytest

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
    assert set(routes) == {"numpyro", "fit", "plain"}
    assert routes["numpyro"]["ratio"] == 1.0
    assert all(row["examples_per_s"] > 0 and row["batch"] == 128 for row in routes.values())
    table = written.read_text()
    assert table.startswith("<!-- written by benchmarks/vs_numpyro.py --quick -->\n")
    for row in routes.values():
        assert f"| {row['route']} | 128 |" in table
    assert "| 0 | " in table and "fit - NumPyro" in table
