"""Checkpoints: plain tensors, numbers and strings, written atomically, loaded without pickle code.

A checkpoint is a dict with ``format_version``, ``epoch``, ``config`` (nested dict),
``model_state`` and ``guide_state`` (state dicts), ``optimizer_state`` and
``metrics``.  ``torch.load(weights_only=True)`` refuses anything that would
execute code, so loading a hostile file cannot run it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import atomic_write
from .state import FitResult, Progress, rng_state, set_lr, set_rng_state

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_KEYS",
    "save_tensors",
    "load_tensors",
    "save_checkpoint",
    "load_checkpoint",
    "previous_checkpoint",
    "checkpoint_payload",
    "restore",
]

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "epoch", "config", "model_state", "guide_state")


def save_tensors(path: str | Path, payload: Any, *, keep_previous: bool = False) -> Path:
    """``torch.save`` ``payload`` to ``path`` atomically; ``OSError`` (a full disk...) as raised.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, and only
    then renamed over ``path`` (:func:`~pyro_vae.files.atomic_write`); with ``keep_previous``
    the old file is first hard-linked to ``*.prev.pt``, so ``path`` itself never goes
    missing.  A crash at any moment leaves the old or the new file complete at ``path``.

    ``PYRO_VAE_TEST_SAVE_DELAY`` (seconds) pauses between writing and renaming: a
    test hook that lets the kill tests strike in the middle of a save.
    """
    path = Path(path)
    with atomic_write(path, durable=True) as file:
        torch.save(payload, file)
        time.sleep(float(os.environ.get("PYRO_VAE_TEST_SAVE_DELAY", 0)))
        if keep_previous and path.exists():
            prev_tmp = path.with_name(f".{path.name}.prev.tmp")
            prev_tmp.unlink(missing_ok=True)
            os.link(path, prev_tmp)
            os.replace(prev_tmp, previous_checkpoint(path))
    return path


def load_tensors(path: str | Path, kind: str, hint: str) -> Any:
    """What :func:`save_tensors` wrote to ``path``, read with ``weights_only=True`` (no code in
    the file can run); a :class:`UserError` naming the ``kind`` of file wanted and, for a
    missing file or a folder, the ``hint`` of where it is."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{kind} {path} is a folder; {hint}")
    if not path.exists():
        raise UserError(f"{kind} {path} does not exist; {hint}")
    if not path.is_file():  # a FIFO, a device: reading it could block or never end
        raise UserError(f"{kind} {path} is not a regular file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, or a pickle carrying code
        # not torch's whole message: it suggests weights_only=False, which would run the code
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a readable pyro-vae {kind} ({reason[:200]})") from None


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write the checkpoint ``payload`` to ``path`` atomically (:func:`save_tensors`); the file
    replaced is kept as ``*.prev.pt``."""
    path = Path(path)
    try:
        return save_tensors(path, {"format_version": FORMAT_VERSION, **payload},
                            keep_previous=True)
    except OSError as exc:  # a full disk, a quota, a folder made read-only meanwhile
        state = "still holds the last complete one" if path.exists() else "was not written"
        raise UserError(f"cannot write the checkpoint {path} ({exc.strerror or exc}); "
                        f"{path.name} {state}: free space, then resume") from None


def previous_checkpoint(path: str | Path) -> Path:
    """Where the checkpoint that ``path`` replaced is kept."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint; ``UserError`` for anything that is not one of ours."""
    payload = load_tensors(path, "checkpoint", "give a run's checkpoint.pt")
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED_KEYS):
        raise UserError(f"{path} is not a pyro-vae checkpoint (missing {', '.join(REQUIRED_KEYS)})")
    if payload["format_version"] != FORMAT_VERSION:
        raise UserError(
            f"{path} has checkpoint format {payload['format_version']!r}; "
            f"this pyro-vae reads format {FORMAT_VERSION}"
        )
    return payload


def restore(payload: dict[str, Any], model, guide, optimizer, result: FitResult) -> Progress:
    """Load a checkpoint's states into the live objects; return the saved position."""
    try:
        model.load_state_dict(payload["model_state"])
        guide.load_state_dict(payload["guide_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        state = Progress(**payload["train_state"])
        metrics = payload["metrics"]
        result.train_elbo = list(metrics["train_elbo"])
        result.test_elbo = list(metrics["test_elbo"])
        result.seconds_per_epoch = list(metrics["seconds_per_epoch"])
        set_rng_state(payload["rng_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot resume from this checkpoint ({first})") from None
    set_lr(optimizer, state.lr)
    return state


def checkpoint_payload(model, guide, optimizer, state: Progress, result: FitResult,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``fit`` saves: ``extra`` (config, data shape), the states, the position, metrics.

    :func:`restore` reads it back into live objects.
    """
    return {
        **(extra or {}),
        "epoch": state.epoch,
        "model_state": model.state_dict(),
        "guide_state": guide.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "train_state": state.state(),
        "rng_state": rng_state(),
        "metrics": {
            "elbo": result.elbo,
            "train_elbo": result.train_elbo,
            "test_elbo": result.test_elbo,
            "seconds_per_epoch": result.seconds_per_epoch,
        },
    }
