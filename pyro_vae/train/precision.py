"""The arithmetic of the training loss: float32, or bfloat16 where the hardware multiplies it.

``precision = "bfloat16"`` computes the training loss under ``torch.autocast``: the matrix
products in bfloat16 (8 bits of mantissa, float32's exponent range, so no loss scaling),
the reductions and log-densities in float32; the parameters, gradients, Adam's moments and
every evaluation stay float32.  That pays only where bfloat16 products run natively: CPUs
with AVX512-BF16 or AMX-BF16 (oneDNN uses them), CUDA GPUs of compute capability 8.0 or
more.  Elsewhere bfloat16 is emulated and slower than float32.

``precision = "auto"`` is therefore decided per device, from what the hardware reports
(never assumed from the device type):

    bfloat16  if the device multiplies bfloat16 natively
    float32   otherwise

The reason is printed before the first epoch and recorded with the run.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["PRECISIONS", "PRECISION_SETTINGS", "native_bfloat16", "resolve_precision"]

# a precision -> the dtype torch.autocast computes the training loss in
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PRECISION_SETTINGS = ("auto", *PRECISIONS)
# CPU feature flags (Linux's names, also the keys of torch's CPU capability report) of
# native bfloat16 products
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpu_flags() -> set[str]:
    """The CPU's feature flags: torch's own report (the cpuinfo library it links, on every
    platform), else the first ``flags`` line of Linux's /proc/cpuinfo, else none."""
    report = getattr(torch._C._cpu, "_get_cpu_capability", None)  # absent in older torch
    if report is not None:
        return {name for name, present in report().items() if present is True}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bfloat16(device: torch.device | str) -> tuple[bool, str]:
    """(whether ``device`` multiplies bfloat16 natively, what says so)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major >= 8, f"CUDA compute capability {major}.{minor}"
    if device.type == "cpu":
        flags = [flag for flag in _BF16_FLAGS if flag in _cpu_flags()]
        return bool(flags), " and ".join(flags) if flags else "no AVX512-BF16 or AMX-BF16"
    return False, f"{device.type} is not known to multiply bfloat16 natively"


def resolve_precision(setting: str, device: torch.device | str) -> tuple[str, str]:
    """(precision, why) for a setting in :data:`PRECISION_SETTINGS` on ``device``.

    Raises
    ------
    ValueError
        For a setting that is not one of :data:`PRECISION_SETTINGS`.
    """
    if setting not in PRECISION_SETTINGS:
        raise ValueError(f"precision must be one of {list(PRECISION_SETTINGS)}, not {setting!r}")
    if setting != "auto":
        return setting, "set"
    native, evidence = native_bfloat16(device)
    return ("bfloat16" if native else "float32"), f"auto: {evidence}"
