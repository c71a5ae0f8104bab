"""MNIST's IDX files (torchvision's ``MNIST/raw`` layout), and torchvision's download of them.

torchvision is optional and heavy: it is imported inside :func:`torchvision_download` only.
"""

from __future__ import annotations

import gzip
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..errors import UserError
from .common import MnistArrays, SourceUnavailable, one_line, say

__all__ = [
    "IDX_STEMS",
    "PROBE_TIMEOUT_S",
    "DOWNLOAD_TIMEOUT_S",
    "read_idx",
    "load_idx",
    "torchvision_download",
]

IDX_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
PROBE_TIMEOUT_S = 3.0  # a mirror that does not accept a connection by then is not there
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation while torchvision downloads


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file of unsigned bytes (MNIST's format), gzipped or not.

    Returns
    -------
    np.ndarray of uint8, shape as the file's header says, e.g. (60000, 28, 28); writable.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read IDX file {path} ({one_line(exc)})") from None
    # header: two zero bytes, type code 0x08 (unsigned byte), number of dimensions
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes; download it again")
    ndim = raw[3]
    start = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != start + int(np.prod(shape)):
        raise UserError(f"{path} holds {len(raw) - start} bytes, its header says {shape}")
    # a bytearray makes the array writable: torch.as_tensor warns about read-only buffers
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=start).reshape(shape)


def load_idx(raw_dir: str | Path) -> MnistArrays:
    """The four MNIST IDX files in ``raw_dir`` (torchvision's ``MNIST/raw``), ``.gz`` or not.

    Raises
    ------
    SourceUnavailable
        When a file is missing; a file that is there but broken is a ``UserError``.
    """
    raw_dir = Path(raw_dir)
    arrays = {}
    for key, stem in IDX_STEMS.items():
        found = [p for p in (raw_dir / stem, raw_dir / f"{stem}.gz") if p.is_file()]
        if not found:
            raise SourceUnavailable(f"no {stem}(.gz) in {raw_dir}")
        arrays[key] = read_idx(found[0])
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),):
            raise UserError(
                f"IDX files in {raw_dir}: {part} images {x.shape} and labels {y.shape} "
                "are not N x 28 x 28 and N"
            )
        arrays[f"x_{part}"] = x.reshape(len(x), 784)
    return MnistArrays(**arrays, source=f"IDX files in {raw_dir}")


def torchvision_download(root: Path) -> None:
    """torchvision's own MNIST download into ``root/MNIST/raw``, if it can happen quickly.

    Raises
    ------
    SourceUnavailable
        torchvision is not installed, no mirror accepts a connection within
        ``PROBE_TIMEOUT_S`` seconds, or the download fails.
    """
    try:
        # optional and heavy (imports torch's vision ops): only this source needs it
        from torchvision.datasets import MNIST
    except Exception:  # ImportError, or a torchvision built for another torch
        raise SourceUnavailable("torchvision is not installed") from None
    mirrors = getattr(MNIST, "mirrors", None) or ["https://ossci-datasets.s3.amazonaws.com/"]
    if not any(_reachable(url) for url in mirrors):
        raise SourceUnavailable("torchvision's MNIST mirrors are unreachable")
    say(f"downloading MNIST with torchvision into {root}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib would otherwise wait forever
    try:
        for train in (True, False):
            MNIST(str(root), train=train, download=True)
    except Exception as exc:  # urllib, checksum and file errors alike mean "not this way"
        raise SourceUnavailable(f"torchvision's download failed ({one_line(exc)})") from None
    finally:
        socket.setdefaulttimeout(previous)


def _reachable(url: str) -> bool:
    parts = urlparse(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True
