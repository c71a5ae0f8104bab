"""One training loop for every model: stochastic variational inference.

``fit`` minimises ``-ELBO`` estimated by a Pyro ELBO chosen by name from
:data:`~pyro_vae.elbos.ELBOS`, with ``torch.optim.Adam`` over the model's and guide's module
parameters.  Mini-batches are index slices of the data tensor; the loss of a
batch of B out of N is scaled by N / B through the model's data plate, so it
estimates the full-data ELBO.  Nothing is read back to the host per step: the
losses and the NaN/inf flags of the steps stay on the device until a check every
``CHECK_EVERY`` steps reads them in one synchronisation (a GPU's queue keeps
running ahead), and a bad step is skipped inside the fused Adam kernel.  The
progress bar shows the running ELBO.

The KL term: ``elbo="auto"`` becomes ``meanfield`` (closed-form KL) when
``kl_divergence(q, p)`` is registered for every latent site's guide and model
distributions, else ``trace`` (Monte Carlo), see :func:`~pyro_vae.elbos.resolve_elbo`, and is
computed by the fused path of that estimator (:mod:`pyro_vae.elbos.fused`).  KL warm-up
multiplies the log-densities of the latent sites (in model and guide, so the KL
term and nothing else) by beta rising linearly from ~0 to ``kl_weight`` (default 1)
over the first ``kl_warmup_epochs`` epochs; the recorded train ELBO is then the annealed
objective, the test ELBO the true one.  Free bits (Kingma et al., 2016) replace
each latent site's batch-mean KL by max(free_bits, KL) nats per example.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine
from torch import nn

from ..elbos import ScaleLatents, importance_estimate
from ..progress import progress_bar, say
from ..rng import forked_rng
from .checkpoint import checkpoint_payload, restore, save_checkpoint
from .compilation import CompiledStep, resolve_compile
from .guards import (
    CHECK_EVERY,
    TrainingInterrupted,
    all_finite,
    deferred_interrupt,
    roll_back,
    tally,
)
from .objective import training_objective
from .precision import PRECISIONS, resolve_precision
from .state import FitResult, Progress, set_lr
from .step import svi_step
from .tensorboard import TrainingLog, elbo_terms

__all__ = ["fit"]


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
    max_plate_nesting: int | None = None,
    seed: int = 0,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    progress: bool = True,
    kl_warmup_epochs: int = 0,
    free_bits: float = 0.0,
    kl_weight: float = 1.0,
    resume: dict[str, Any] | None = None,
    max_bad_steps: int = 10,
    max_rollbacks: int = 3,
    distributed: bool = False,
    precision: str = "float32",
    lr_schedule: Callable[[int], float] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    log: TrainingLog | None = None,
    compile: str = "off",
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
        Saved after every epoch (and on Ctrl-C, after the current step): state dicts,
        optimizer state, RNG state, the position in the epoch, ``checkpoint_extra``.
    elbo : str
        A name in :data:`~pyro_vae.elbos.ELBOS`.  "auto" is resolved by :func:`resolve_elbo` to
        ``meanfield`` or ``trace`` (the name recorded) and computed by the fused path of
        that estimator (``fused`` / ``fused_trace``: same values, less per-step overhead;
        plain Pyro for pairs it does not fuse).
    max_plate_nesting : int, optional
        The ELBO's bound on nested plates; None lets Pyro infer it.
    kl_warmup_epochs : int
        KL weight beta = step / (kl_warmup_epochs * steps per epoch), capped at 1.
    free_bits : float
        Nats per example and latent site below which the KL is not penalised
        (``trace`` or ``meanfield`` only).
    kl_weight : float
        The KL weight after warm-up (beta of a beta-VAE); 0 with the ``delta`` guide
        drops log p(z) and leaves the plain autoencoder's reconstruction loss.
    resume : dict, optional
        A checkpoint written by ``fit`` for the same model, guide and data: training
        continues from its position, with its optimizer and RNG states, so the end
        result equals that of one uninterrupted run on the CPU.
    max_bad_steps, max_rollbacks : int
        A step whose loss or gradient is not finite is skipped (its batch is dropped,
        the parameters and optimizer state stay as they were); when the next check
        finds ``max_bad_steps`` in a row the run returns to the state at the last epoch
        boundary with the learning rate halved, at most ``max_rollbacks`` times,
        then stops with :class:`TrainingDiverged`.
    distributed : bool
        This process is one of a ``torch.distributed`` group and ``x_train`` its shard:
        the gradients are summed over the processes (:mod:`pyro_vae.train.distributed`).
    precision : {"float32", "bfloat16", "auto"}
        "bfloat16" computes the training loss under ``torch.autocast`` (matrix products
        in bfloat16, reductions and log-densities in float32; parameters, gradients,
        Adam and the test ELBO stay float32).  Faster where the hardware multiplies
        bfloat16 natively (recent GPUs, CPUs with AVX512-BF16 or AMX); "auto" chooses it
        there and float32 elsewhere (:mod:`.precision`).  The choice and its reason are
        printed before the first epoch (with ``progress``) and kept in the result.

    compile : {"off", "on", "auto"}
        "on" computes each full batch's fused VAE loss, its gradient and the NaN guard's flag
        as one ``torch.compile`` graph, then takes the fused Adam step (:mod:`.compilation`);
        compiled once before the first epoch; "auto" only when the run is long enough to pay.
        The choice, its reason and the compile's seconds are printed and kept in the result.
    lr_schedule : callable, optional
        Epoch (0-based) -> multiplier of ``lr`` for that epoch (:mod:`.schedules`); the
        rollbacks' halving multiplies the base rate, so a schedule goes on after one.
    betas, eps : Adam's moment decay rates and denominator constant.
    log : TrainingLog, optional
        TensorBoard event files (:mod:`.tensorboard`): the scalars each check reads anyway,
        the test ELBO and its terms per epoch, images on forked random generators.  A run
        logs the same numbers with or without it.

    Returns
    -------
    FitResult with per-epoch train and test ELBO (nats per example) and timings.

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C (SIGINT) when ``checkpoint`` is given, after saving it.
    """
    precision, precision_reason = resolve_precision(precision, x_train.device)
    pyro.set_rng_seed(seed)
    n = x_train.shape[0]
    # run the guide once so lazily built parameters (autoguides) exist before Adam sees them;
    # on forked generators, so that training draws the seed's random numbers from the first
    with torch.no_grad(), poutine.trace(), forked_rng(x_train):
        guide(x_train[:batch_size], n=n)
    loss_fn, elbo = training_objective(
        model, guide, x_train[:batch_size], n, elbo, num_particles, free_bits, distributed,
        max_plate_nesting,
    )
    # float32 enters no autocast context at all: entering a disabled one still costs two
    # calls per step
    dtype = None if precision == "float32" else PRECISIONS[precision]  # the loss's autocast
    autocast = (nullcontext() if dtype is None
                else torch.autocast(x_train.device.type, dtype=dtype))
    latent_scale = ScaleLatents()
    scaled_model, scaled_guide = latent_scale(model), latent_scale(guide)
    steps_per_epoch = -(-n // batch_size)
    warmup_steps = kl_warmup_epochs * steps_per_epoch
    params = [p for p in (*model.parameters(), *guide.parameters()) if p.requires_grad]
    first = x_train[:batch_size]  # a batch like the training batches, drawn on the side
    if batch_transform is not None and compile != "off":
        with forked_rng(x_train):
            first = batch_transform(first)
    compiled, compile_reason = resolve_compile(
        compile, epochs * steps_per_epoch, loss_fn, scaled_model, scaled_guide, first, n
    )
    # fused Adam: one kernel for all parameters instead of ~10 per tensor (torch >= 2.4)
    fused_adam = all(p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, fused=fused_adam)
    result = FitResult(elbo=elbo, checkpoint=Path(checkpoint) if checkpoint else None,
                       precision=precision, precision_reason=precision_reason)
    if progress:
        say(f"precision: {precision} ({precision_reason})")
    compiled_step = None  # the full batches' step when compiled, else None
    if compiled and n >= batch_size:
        compiled_step = CompiledStep(loss_fn.plan(scaled_model, scaled_guide, first, n=n),
                                     num_particles, optimizer, dtype)
        result.compile_seconds = compiled_step.compile(first, n)
    result.compiled, result.compile_reason = compiled, compile_reason
    if progress and compile != "off":
        spent = f"; compiled in {result.compile_seconds:.1f} s" if compiled else ""
        say(f"compile: {'on' if compiled else 'off'} ({compile_reason}{spent})")
    state = Progress(lr=lr)
    if resume is not None:
        state = restore(resume, model, guide, optimizer, result)
        state.check(n, batch_size)

    def snapshot():
        return copy.deepcopy(
            (model.state_dict(), guide.state_dict(), optimizer.state_dict(), state)
        )

    def save():
        if not all_finite(params):  # never write a diverged model over a good one
            return
        save_checkpoint(
            checkpoint, checkpoint_payload(model, guide, optimizer, state, result, checkpoint_extra)
        )

    last_good = snapshot()
    # the steps' (loss, bad, grad norm) stay on the device until the next check reads them
    pending: list[tuple[torch.Tensor, int]] = []
    bad_run = 0
    if log is not None:
        log.start(state.global_step)
    with deferred_interrupt(enabled=checkpoint is not None) as interrupted, _flushing(log):
        while state.epoch < epochs:
            epoch = state.epoch + 1
            if lr_schedule is not None:
                set_lr(optimizer, state.lr * lr_schedule(state.epoch))
            if state.order is None:
                state.order = torch.randperm(n, device=x_train.device)
            batches = state.order.split(batch_size)
            start = last_check = time.perf_counter()
            bar = progress_bar(len(batches), f"epoch {epoch}/{epochs}", progress, state.step)
            while state.step < len(batches):
                idx = batches[state.step]
                x = x_train[idx] if batch_transform is None else batch_transform(x_train[idx])
                warm = min(1.0, (state.global_step + 1) / warmup_steps) if warmup_steps else 1.0
                latent_scale.weight = kl_weight * warm
                if compiled_step is not None and len(idx) == batch_size:
                    pending.append((compiled_step(x, n), len(idx)))
                else:
                    with autocast:
                        loss = loss_fn.differentiable_loss(scaled_model, scaled_guide, x, n=n)
                    pending.append((svi_step(loss, optimizer, params), len(idx)))
                state.step += 1
                state.global_step += 1
                bar.update()
                at_check = state.step % CHECK_EVERY == 0 or state.step == len(batches)
                if not (at_check or interrupted["set"]):
                    continue
                # the check: read the pending steps' losses in one host synchronisation
                read = tally(pending, state, result, n, bad_run, max_bad_steps)
                bad_run = read.bad_run
                if log is not None:
                    now = time.perf_counter()  # after the check's synchronisation: true time
                    log.check(state.global_step, read, optimizer.param_groups[0]["lr"],
                              now - last_check, result.skipped_steps)
                    last_check = now
                if bad_run >= max_bad_steps:
                    bad_run = 0
                    state = roll_back(last_good, model, guide, optimizer, result, max_rollbacks)
                    if log is not None:  # TensorBoard forgets the steps rolled back
                        log.start(state.global_step)
                    break
                if progress and state.seen:
                    bar.set_postfix(elbo=f"{-state.total / state.seen:.2f}")
                if interrupted["set"]:
                    state.train_seconds += time.perf_counter() - start
                    bar.close()
                    if checkpoint is not None:
                        save()
                    raise TrainingInterrupted(result.checkpoint)
            else:  # the epoch ran to its end (no rollback)
                bar.close()
                _close_epoch(state, result, time.perf_counter() - start, model, guide, x_test,
                             progress, epoch)
                if log is not None:
                    _log_epoch(log, state.global_step, epoch, epoch == epochs, result, model,
                               guide, x_train, x_test)
                state.epoch, state.step, state.order = epoch, 0, None
                state.total, state.seen = 0.0, 0
                if checkpoint is not None:
                    save()
                last_good = snapshot()
                continue
            bar.close()
    result.examples_per_second = state.examples / max(state.train_seconds, 1e-12)
    return result


@contextmanager
def _flushing(log: TrainingLog | None):
    """Whatever ends the loop (the end, Ctrl-C, divergence), what was logged is on disk."""
    try:
        yield
    finally:
        if log is not None:
            log.flush()


def _log_epoch(log: TrainingLog, global_step: int, epoch: int, last: bool, result: FitResult,
               model, guide, x_train: torch.Tensor, x_test: torch.Tensor | None) -> None:
    """Log the epoch's test ELBO, its two terms and the images, on forked generators (the run
    is unchanged); the terms start from the generators' state the test ELBO started from,
    so they are computed from the same draws of z."""
    with forked_rng(x_train):
        test = {} if x_test is None else {"elbo": result.test_elbo[-1],
                                          **elbo_terms(model, guide, x_test)}
        log.epoch(global_step, epoch, last, test)


def _close_epoch(state: Progress, result: FitResult, seconds: float, model, guide,
                 x_test: torch.Tensor | None, progress: bool, epoch: int) -> None:
    """Record a finished epoch: its time, train ELBO and test ELBO; print them if asked."""
    state.examples += state.seen
    state.train_seconds += seconds
    result.seconds_per_epoch.append(seconds)
    result.train_elbo.append(-state.total / state.seen if state.seen else math.nan)
    if x_test is not None:  # on forked generators: watching does not change a run
        with forked_rng(x_test):
            test = importance_estimate(model, guide, x_test, num_particles=1)
        result.test_elbo.append(test.elbo.mean().item())
    if progress:
        test_text = f"  test ELBO {result.test_elbo[-1]:.2f}" if result.test_elbo else ""
        say(f"epoch {epoch:3d}  train ELBO {result.train_elbo[-1]:.2f}{test_text}"
                   f"  ({seconds:.2f} s)")
