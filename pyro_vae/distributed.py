"""Data-parallel training: one process per device, each with a shard of the data.

The ELBO of the data set is the sum of the ELBOs of its shards.  Each of W
processes holds a shard of N_r rows and estimates its shard's ELBO from a
mini-batch of b rows, scaled by N_r / b through the model's data plate; the sum of
these estimates over the processes is an unbiased estimate of the data set's
ELBO, and with equal shards (N_r = N / W) it is exactly the single-process
estimate from the combined batch of W b rows, scaled by N / (W b).  So the
gradients are *summed* across the processes (DDP's default averages them, which
would divide the step by W): :class:`DataParallelELBO` runs any ELBO of
:data:`pyro_vae.infer.ELBOS` inside ``torch.nn.parallel.DistributedDataParallel``
over the model's and guide's modules with a summing communication hook.

Launch with ``torchrun`` (``gloo`` on CPUs, ``nccl`` on GPUs)::

    torchrun --nproc-per-node 2 -m pyro_vae.distributed --out runs/ddp [--config FILE] [--set k=v]

Rank 0 writes ``metrics.json`` and ``checkpoint.pt`` to ``--out``; every rank
trains on its shard with its own random numbers (seed + rank).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import pyro
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DataParallelELBO", "init_process_group", "shard", "main"]


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
        :class:`~pyro_vae.fused.FusedELBO`.
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


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Train the configured VAE data-parallel; run under ``torchrun`` (see the module docstring)."""
    from .config import load_config
    from .data import binarize, load_dataset
    from .experiment import TrainedVAE, evaluate_vae, prepare_out, write_metrics
    from .infer import fit
    from .models import build_vae

    parser = argparse.ArgumentParser(
        prog="python -m pyro_vae.distributed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("runs/distributed"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    t = config.train
    rank, world = init_process_group(t.device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if t.device == "cuda" else torch.device("cpu")
    out = prepare_out(args.out, args.overwrite) if rank == 0 else None
    data = config.data
    dataset = load_dataset(data.dataset, path=data.path, data_dir=data.data_dir, device=device)
    x_train, x_test, transform = binarize(dataset.x_train, dataset.x_test, data.binarize)
    x_train, x_test = x_train[: data.train_size], x_test[: data.test_size]
    binary = data.binarize != "none"
    pyro.set_rng_seed(t.seed)  # the same initial weights everywhere (DDP broadcasts rank 0's too)
    model, guide = build_vae(
        config, dataset.dim, binary_data=binary, image_shape=dataset.image_shape
    )
    model.to(device)
    guide.to(device)
    # the per-process batch: W of them make the configured batch
    batch_size = max(1, t.batch_size // world)
    result = fit(
        model, guide, shard(x_train, rank, world), epochs=t.epochs, batch_size=batch_size, lr=t.lr,
        elbo=config.inference.elbo, num_particles=config.inference.num_particles,
        seed=t.seed + rank, batch_transform=transform, progress=rank == 0,
        checkpoint=out / "checkpoint.pt" if out else None, distributed=True,
        checkpoint_extra={
            "config": config.to_dict(), "data_dim": dataset.dim, "binary_data": binary,
            "image_shape": list(dataset.image_shape) if dataset.image_shape else None,
        },
    )
    metrics = None
    if rank == 0:
        start = time.perf_counter()
        trained = TrainedVAE(model, guide, config, dataset.dim, dataset.image_shape, binary)
        metrics = {
            "world_size": world,
            "backend": dist.get_backend(),
            "batch_size_per_process": batch_size,
            "elbo": result.elbo,
            "seconds_per_epoch": result.seconds_per_epoch,
            # every process saw as many examples as rank 0, in the same time
            "examples_per_second": world * result.examples_per_second,
            **evaluate_vae(trained, x_test, config.inference.eval_particles, seed=t.seed),
            "evaluation_seconds": time.perf_counter() - start,
        }
        write_metrics(out, metrics)
    dist.destroy_process_group()
    return metrics


if __name__ == "__main__":  # pragma: no cover
    main()
