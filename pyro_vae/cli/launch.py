"""``train --distributed N``: start N local processes, each one rank of a process group.

Each process gets a rank, the world size and a rendezvous address in its environment, as
under ``torchrun``, and runs the command line's ``main`` with the same arguments; the
training itself is :mod:`pyro_vae.train.distributed`.  ``main`` is handed in, not imported,
so that this module stays below the command line that calls it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch
import torch.multiprocessing as mp

from ..train.distributed import free_port

__all__ = ["launch"]

Entry = Callable[[list[str]], int]  # the command line's main: argv -> exit status


def _rank_main(rank: int, world_size: int, port: int, argv: list[str], main: Entry) -> None:
    """One process of :func:`launch`: the environment ``torchrun`` would give it, then ``main``."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # the processes share the cores: threads beyond them only contend
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    code = main(argv)
    if code:
        sys.exit(code)


def launch(num_processes: int, argv: list[str], main: Entry) -> int:
    """Run ``main(argv)`` (``pyro-vae <argv>``) in ``num_processes`` processes on this machine;
    the exit status.

    Each process gets a rank, the world size and a rendezvous address in its environment,
    as under ``torchrun`` (which is the way to use several machines).  A failing process
    stops the others; its exit status is returned (2 for a user error it reported).
    """
    try:
        mp.spawn(_rank_main, args=(num_processes, free_port(), argv, main), nprocs=num_processes)
    except mp.ProcessExitedException as exc:
        return exc.exit_code if exc.exit_code and exc.exit_code > 0 else 1
    except mp.ProcessRaisedException as exc:
        last = str(exc).strip().splitlines()[-1]
        print(f"pyro-vae: a training process failed: {last}", file=sys.stderr)
        return 1
    return 0
