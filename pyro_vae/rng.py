"""Random number generators and threads: what a run may change and what it must leave alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["forked_rng", "single_thread"]


def forked_rng(*tensors):
    """``torch.random.fork_rng`` over the CPU and the GPU of the first CUDA tensor given:
    random numbers drawn inside leave the generators as they were (set-up and monitoring
    must not shift a run's stream)."""
    cuda = [t.device for t in tensors if torch.is_tensor(t) and t.is_cuda]
    return torch.random.fork_rng(cuda[:1])


@contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread: on 1-D data, waking a second thread costs more than each op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
