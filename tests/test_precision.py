"""precision = "auto": bfloat16 exactly where the hardware says it multiplies bfloat16."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_vae

from pyro_vae.train import fit, native_bfloat16, resolve_precision
from pyro_vae.train import precision as precision_module


def _flags(monkeypatch, flags: set[str]) -> None:
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: flags)


@pytest.mark.parametrize("flags, native", [
    ({"avx512f", "avx512_bf16"}, True),
    ({"avx512f", "amx_tile", "amx_bf16"}, True),
    ({"avx512f", "avx2", "fma3"}, False),  # AVX-512 alone emulates bfloat16 products
    (set(), False),
])
def test_auto_chooses_bfloat16_exactly_where_the_cpu_multiplies_it(monkeypatch, flags, native):
    _flags(monkeypatch, flags)
    assert native_bfloat16("cpu")[0] is native
    precision, reason = resolve_precision("auto", "cpu")
    assert precision == ("bfloat16" if native else "float32")
    assert reason.startswith("auto: ")
    if native:  # the reason names the flag that decided
        assert any(flag in reason for flag in flags & {"amx_bf16", "avx512_bf16"})


def test_a_set_precision_is_kept_whatever_the_hardware(monkeypatch):
    _flags(monkeypatch, set())
    assert resolve_precision("bfloat16", "cpu") == ("bfloat16", "set")
    assert resolve_precision("float32", "cpu") == ("float32", "set")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("float16", "cpu")


def test_the_cpu_report_agrees_with_linux_cpuinfo():
    """torch's capability report and /proc/cpuinfo name the same bfloat16 features."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this platform")
    line = next(x for x in cpuinfo.read_text().splitlines() if x.startswith("flags"))
    linux = set(line.split(":", 1)[1].split())
    assert native_bfloat16("cpu")[0] == bool(linux & {"avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize("flags, expected", [({"amx_bf16"}, "bfloat16"), (set(), "float32")])
def test_fit_trains_in_the_resolved_precision_and_says_so(monkeypatch, flags, expected):
    """auto gives bit for bit the run of the precision it resolves to."""
    _flags(monkeypatch, flags)
    torch.manual_seed(0)
    x = torch.rand(128, 12).round()
    runs = {}
    for setting in ("auto", expected):
        torch.manual_seed(1)
        model, guide = tiny_vae(12, latent_dim=2, hidden=16)
        runs[setting] = fit(model, guide, x, epochs=1, batch_size=32, elbo="auto",
                            precision=setting, progress=False)
    auto, chosen = runs["auto"], runs[expected]
    assert (auto.precision, chosen.precision) == (expected, expected)
    assert auto.precision_reason.startswith("auto: ") and chosen.precision_reason == "set"
    assert auto.train_elbo == chosen.train_elbo


def test_train_records_the_precision_in_its_metrics(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pyro_vae", "train", "--dataset", "digits", "--epochs", "1",
               "--eval-particles", "2", "--precision", "auto", "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    native, evidence = native_bfloat16("cpu")
    assert metrics["precision"] == ("bfloat16" if native else "float32")
    assert metrics["precision_reason"] == f"auto: {evidence}"
    assert f"precision: {metrics['precision']} (auto: {evidence})" in run.stderr
