"""Data-parallel training: one process per device, each with a shard of the data.

The ELBO of the data set is the sum of the ELBOs of its shards.  Each of W
processes holds a shard of N_r rows and estimates its shard's ELBO from a
mini-batch of b rows, scaled by N_r / b through the model's data plate; the sum of
these estimates over the processes is an unbiased estimate of the data set's
ELBO, and with equal shards (N_r = N / W) it is exactly the single-process
estimate from the combined batch of W b rows, scaled by N / (W b).  So the
gradients are *summed* across the processes (DDP's default averages them, which
would divide the step by W): :class:`DataParallelELBO` runs any ELBO of
:data:`pyro_vae.elbos.ELBOS` inside ``torch.nn.parallel.DistributedDataParallel``
over the model's and guide's modules with a summing communication hook.

Run it from the command line (``gloo`` on CPUs, ``nccl`` on GPUs)::

    pyro-vae train --distributed 2 --out runs/ddp [--config FILE] [--set k=v]       # 2 processes
    torchrun --nproc-per-node 4 -m pyro_vae train --distributed --out runs/ddp ...   # torchrun

Rank 0 writes ``metrics.json``, ``checkpoint.pt`` and the figures to ``--out``; every
rank trains on its shard with its own random numbers (seed + rank), see
:func:`pyro_vae.experiments.vae.train_vae`.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DataParallelELBO",
    "init_process_group",
    "rank_and_world_size",
    "under_launcher",
    "shard",
    "free_port",
]


def _allreduce_sum(process_group, bucket):
    """DDP communication hook: the sum of the processes' gradients (not their mean).

    ``bucket`` is a ``dist.GradBucket``; returns a future of the summed buffer.  (No
    annotations: DDP compares them with the classes, and postponed annotations are strings.)
    """
    work = dist.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


class _Pair(nn.Module):
    """The model and guide as one module, so that DDP sees all their parameters."""

    def __init__(self, model: nn.Module, guide: nn.Module):
        super().__init__()
        self.model = model
        self.guide = guide

    def forward(self, elbo, model, guide, *args, **kwargs) -> torch.Tensor:
        # model and guide may be the modules above wrapped in Pyro handlers (fit's KL weight)
        return elbo.differentiable_loss(model, guide, *args, **kwargs)


class DataParallelELBO:
    """``elbo`` whose gradients are summed over the processes of the default process group.

    Has the interface of a Pyro ELBO.  Building it broadcasts rank 0's parameters,
    so every process starts from the same weights.

    Parameters
    ----------
    elbo
        Any object with ``differentiable_loss`` and ``loss``: Pyro's ELBOs,
        :class:`~pyro_vae.elbos.fused.FusedELBO`.
    model, guide : nn.Module
        The modules whose parameters are trained (the ELBO may be given handler-wrapped
        versions of them).
    **ddp_options
        Passed to ``DistributedDataParallel`` (e.g. ``device_ids`` on GPUs).
    """

    def __init__(self, elbo, model: nn.Module, guide: nn.Module, **ddp_options):
        self.elbo = elbo
        self.module = DistributedDataParallel(_Pair(model, guide), **ddp_options)
        self.module.register_comm_hook(None, _allreduce_sum)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """This process's -ELBO; its ``backward`` leaves the summed gradient in every process."""
        return self.module(self.elbo, model, guide, *args, **kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        """This process's -ELBO (no gradient, no communication)."""
        return self.elbo.loss(model, guide, *args, **kwargs)


def init_process_group(device: str = "cpu") -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment; (rank, world size).

    ``gloo`` for CPUs, ``nccl`` for GPUs (each process then uses GPU ``LOCAL_RANK``).
    """
    if not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        dist.init_process_group(backend)
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def shard(x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rows ``rank, rank + W, rank + 2W, ...`` of x (N, D), the last N mod W rows left out.

    Equal shards give every process the same number of steps per epoch (a process with
    one more step would wait for the others' gradients forever) and make the summed
    gradient exactly the single-process one of the combined batch.
    """
    return x[rank : world_size * (x.shape[0] // world_size) : world_size]


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of this process in the initialized default process group."""
    return dist.get_rank(), dist.get_world_size()


def under_launcher() -> bool:
    """Whether a launcher (``torchrun``, :func:`launch`) started this process as one rank."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the rendezvous of local ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
