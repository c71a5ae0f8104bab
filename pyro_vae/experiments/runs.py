"""What every experiment shares: its output folder, its metrics file, its device, its data."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import secrets
import time
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset
from ..errors import UserError
from ..files import remove_orphaned_temporaries, write_text_atomically
from .ownership import claim_folder
from .report import render_report

__all__ = [
    "RUN_FILES",
    "device_named",
    "first_rows",
    "folder_run_id",
    "hold_out",
    "holds_run",
    "new_run_id",
    "prepare_out",
    "strict_json",
    "write_metrics",
    "write_run_config",
]

RUN_FILES = ("metrics.json", "checkpoint.pt")


def device_named(name: str, distributed: bool = False) -> torch.device:
    """The torch device ``name``; a distributed process's own GPU for "cuda"."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was asked for but no CUDA GPU is available; use --device cpu"
        )
    if name == "cuda" and distributed:
        return torch.device("cuda", torch.cuda.current_device())  # set by init_process_group
    return torch.device(name)


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run's results (its metrics or checkpoint)."""
    return any((Path(folder) / name).exists() for name in RUN_FILES)


def prepare_out(out: str | Path, overwrite: bool) -> Path:
    """Create ``out`` and own it (:func:`claim_folder`), removing what killed writes left there;
    refuse a folder in use by another command, and one that holds another run unless
    ``overwrite``."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder")
        out.mkdir(parents=True, exist_ok=True)
        claim_folder(out)
        remove_orphaned_temporaries(out)  # owned now: a temporary file there is a killed write's
    except OSError as exc:  # under a file, too long a name, read-only, full disk...
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose "
                        "another folder") from None
    if not overwrite and holds_run(out):
        raise UserError(f"--out {out} holds another run; pass --overwrite or choose another folder")
    return out


def strict_json(value: Any, **options: Any) -> str:
    """JSON text that every parser reads: NaN and infinities (a diverged number) become
    null, which standard JSON has, instead of the ``NaN`` that ``json.dumps`` writes."""
    def finite(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {key: finite(item) for key, item in v.items()}
        if isinstance(v, list | tuple):
            return [finite(item) for item in v]
        return v

    return json.dumps(finite(value), allow_nan=False, **options)


def write_metrics(out: Path, metrics: dict[str, Any]) -> Path:
    """``metrics`` as indented, strict JSON in ``out/metrics.json``, and the folder's page for
    people, ``out/report.html`` (:func:`~pyro_vae.experiments.report.render_report`); the
    path of the metrics."""
    path = write_text_atomically(out / "metrics.json", strict_json(metrics, indent=2) + "\n")
    write_text_atomically(out / "report.html", render_report(out, metrics))
    return path


# The first line of a run folder's config.toml: a TOML comment, so the file stays the config
_RUN_ID_LINE = "# pyro-vae run "
_RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")


def new_run_id() -> str:
    """A fresh run id, ``<date>-<time>-<6 hex digits>``: sorts by start time, and two runs
    started in the same second still differ."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def write_run_config(out: Path, config_toml: str, run_id: str) -> Path:
    """``out/config.toml``: the run's config under a first line naming its run id."""
    return write_text_atomically(out / "config.toml", f"{_RUN_ID_LINE}{run_id}\n{config_toml}")


def folder_run_id(out: str | Path) -> str | None:
    """The run id that ``out/config.toml`` names (``None``: no config, or one written before
    run ids or by hand)."""
    path = Path(out) / "config.toml"
    try:
        with path.open() as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return None
    found = first.startswith(_RUN_ID_LINE) and _RUN_ID.fullmatch(first[len(_RUN_ID_LINE):].strip())
    return found.group(0) if found else None


def first_rows(dataset: Dataset, train: int | None, test: int | None) -> Dataset:
    """The first ``train`` / ``test`` rows of each split (all for ``None``): the splits are
    already shuffled, so these are random subsets (quick runs and tests)."""
    first = lambda t, n: None if t is None else t[:n]  # noqa: E731
    return dataclasses.replace(
        dataset,
        x_train=dataset.x_train[:train],
        x_test=dataset.x_test[:test],
        y_train=first(dataset.y_train, train),
        y_test=first(dataset.y_test, test),
    )


def hold_out(dataset: Dataset, num_validation: int) -> Dataset:
    """The last ``num_validation`` training rows as the evaluation split, the rest to train on
    (model selection without touching the test set)."""
    n = dataset.x_train.shape[0]
    if not 0 < num_validation < n:
        raise UserError(f"data.validation must be between 1 and the {n - 1} training rows "
                        f"it can hold out, got {num_validation}")
    keep = n - num_validation
    labels = dataset.y_train
    return dataclasses.replace(
        dataset,
        x_train=dataset.x_train[:keep],
        x_test=dataset.x_train[keep:],
        y_train=None if labels is None else labels[:keep],
        y_test=None if labels is None else labels[keep:],
    )
