"""One training loop for every model: stochastic variational inference.

``fit`` minimises ``-ELBO`` estimated by a Pyro ELBO chosen by name from
:data:`ELBOS`, with ``torch.optim.Adam`` over the model's and guide's module
parameters.  Mini-batches are index slices of the data tensor; the loss of a
batch of B out of N is scaled by N / B through the model's data plate, so it
estimates the full-data ELBO.  Losses stay on the device during an epoch (no
per-step host synchronisation); the progress bar shows the running ELBO.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .data import minibatch_indices
from .evaluate import importance_estimate
from .registry import Registry

__all__ = ["ELBOS", "FitResult", "fit", "make_elbo"]

ELBOS = Registry("elbo")


@ELBOS.register("trace")
def trace_elbo(num_particles: int = 1) -> pyro.infer.ELBO:
    """Monte Carlo ELBO with reparameterized samples (``Trace_ELBO``)."""
    return pyro.infer.Trace_ELBO(
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    )


@ELBOS.register("meanfield")
def meanfield_elbo(num_particles: int = 1) -> pyro.infer.ELBO:
    """ELBO with the KL(q || p) term in closed form where one exists (``TraceMeanField_ELBO``)."""
    return pyro.infer.TraceMeanField_ELBO(
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    )


def make_elbo(name: str, num_particles: int = 1) -> pyro.infer.ELBO:
    """The registered ELBO ``name`` with ``num_particles`` (vectorized when > 1)."""
    return ELBOS.get(name)(num_particles=num_particles)


@dataclass
class FitResult:
    """What ``fit`` measured; ELBOs are nats per example (higher is better)."""

    train_elbo: list[float] = field(default_factory=list)
    test_elbo: list[float] = field(default_factory=list)
    seconds_per_epoch: list[float] = field(default_factory=list)
    examples_per_second: float = float("nan")
    checkpoint: Path | None = None


def fit(
    model: nn.Module,
    guide: nn.Module,
    x_train: torch.Tensor,
    *,
    x_test: torch.Tensor | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    elbo: str = "trace",
    num_particles: int = 1,
    seed: int = 0,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` and ``guide`` by SVI on ``x_train`` (N, D).

    Parameters
    ----------
    model, guide : nn.Module
        Pyro model and guide called as ``model(x, n=N)`` / ``guide(x, n=N)``.
    x_test : (M, D) tensor, optional
        Held-out data; its ELBO (one particle per example) is recorded each epoch.
    batch_transform : callable, optional
        Applied to each mini-batch (dynamic binarization draws fresh pixels here).
    checkpoint : path, optional
        Saved after every epoch: state dicts, optimizer state, ``checkpoint_extra``.

    Returns
    -------
    FitResult with per-epoch train and test ELBO (nats per example) and timings.
    """
    pyro.set_rng_seed(seed)
    n = x_train.shape[0]
    loss_fn = make_elbo(elbo, num_particles)
    # run the guide once so lazily built parameters (autoguides) exist before Adam sees them
    with torch.no_grad(), poutine.trace():
        guide(x_train[:batch_size], n=n)
    params = [p for p in (*model.parameters(), *guide.parameters()) if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    result = FitResult(checkpoint=Path(checkpoint) if checkpoint else None)
    examples, train_seconds = 0, 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        total = torch.zeros((), device=x_train.device)
        seen = 0
        batches = tqdm(
            list(minibatch_indices(n, batch_size, device=x_train.device)),
            desc=f"epoch {epoch}/{epochs}",
            disable=not progress,
            leave=False,
        )
        for step, idx in enumerate(batches):
            x = x_train[idx] if batch_transform is None else batch_transform(x_train[idx])
            loss = loss_fn.differentiable_loss(model, guide, x, n=n)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # loss ~ n * mean per-example -ELBO; weight by this batch's share of the epoch
            total += loss.detach() * (len(idx) / n)
            seen += len(idx)
            if progress and step % 20 == 0:  # .item() syncs: only now and then
                batches.set_postfix(elbo=f"{-total.item() / seen:.2f}")
        seconds = time.perf_counter() - start
        examples += seen
        train_seconds += seconds
        result.seconds_per_epoch.append(seconds)
        result.train_elbo.append(-total.item() / n)
        if x_test is not None:
            test = importance_estimate(model, guide, x_test, num_particles=1)
            result.test_elbo.append(test.elbo.mean().item())
        if progress:
            test_text = f"  test ELBO {result.test_elbo[-1]:.2f}" if result.test_elbo else ""
            tqdm.write(
                f"epoch {epoch:3d}  train ELBO {result.train_elbo[-1]:.2f}{test_text}"
                f"  ({seconds:.2f} s)"
            )
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    **(checkpoint_extra or {}),
                    "epoch": epoch,
                    "model_state": model.state_dict(),
                    "guide_state": guide.state_dict(),
                    "optimizer_state": optimizer.state_dict(),
                    "metrics": {
                        "train_elbo": result.train_elbo,
                        "test_elbo": result.test_elbo,
                        "seconds_per_epoch": result.seconds_per_epoch,
                    },
                },
            )
    result.examples_per_second = examples / train_seconds
    return result
