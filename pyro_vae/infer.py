"""One training loop for every model: stochastic variational inference.

``fit`` minimises ``-ELBO`` estimated by a Pyro ELBO chosen by name from
:data:`ELBOS`, with ``torch.optim.Adam`` over the model's and guide's module
parameters.  Mini-batches are index slices of the data tensor; the loss of a
batch of B out of N is scaled by N / B through the model's data plate, so it
estimates the full-data ELBO.  Nothing is read back to the host per step: the
losses and the NaN/inf flags of the steps stay on the device until a check every
``_CHECK_EVERY`` steps reads them in one synchronisation (a GPU's queue keeps
running ahead), and a bad step is skipped inside the fused Adam kernel.  The
progress bar shows the running ELBO.

The KL term: ``elbo="auto"`` becomes ``meanfield`` (closed-form KL) when
``kl_divergence(q, p)`` is registered for every latent site's guide and model
distributions, else ``trace`` (Monte Carlo), see :func:`resolve_elbo`, and is computed
by the fused path of that estimator (:mod:`pyro_vae.fused`).  KL warm-up
multiplies the log-densities of the latent sites (in model and guide, so the KL
term and nothing else) by beta rising linearly from ~0 to ``kl_weight`` (default 1)
over the first ``kl_warmup_epochs`` epochs; the recorded train ELBO is then the annealed
objective, the test ELBO the true one.  Free bits (Kingma et al., 2016) replace
each latent site's batch-mean KL by max(free_bits, KL) nats per example.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer.util import check_fully_reparametrized
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .errors import UserError
from .evaluate import importance_estimate
from .registry import Registry

__all__ = [
    "ELBOS",
    "FitResult",
    "FreeBitsELBO",
    "PRECISIONS",
    "TrainingDiverged",
    "TrainingInterrupted",
    "fit",
    "make_elbo",
    "resolve_elbo",
]

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


@ELBOS.register("fused")
def fused_elbo(num_particles: int = 1):
    """``meanfield`` computed without Pyro's per-step tracing (:mod:`pyro_vae.fused`).

    The same estimator from the same random numbers; a pair it cannot fuse gets
    ``TraceMeanField_ELBO`` itself.
    """
    from .fused import FusedELBO  # fused imports the VAE, whose config imports this module

    return FusedELBO(analytic_kl=True, num_particles=num_particles)


@ELBOS.register("fused_trace")
def fused_trace_elbo(num_particles: int = 1):
    """``trace`` (Monte Carlo KL) computed without Pyro's per-step tracing; else ``Trace_ELBO``."""
    from .fused import FusedELBO

    return FusedELBO(analytic_kl=False, num_particles=num_particles)


@ELBOS.register("auto")
def auto_elbo(num_particles: int = 1) -> pyro.infer.ELBO:
    """Closed-form KL where registered, Monte Carlo elsewhere, site by site.

    This is what ``TraceMeanField_ELBO`` does; ``fit`` resolves "auto" to the name
    of what it amounts to for a given pair with :func:`resolve_elbo`.
    """
    return meanfield_elbo(num_particles)


@ELBOS.register("graph")
def graph_elbo(num_particles: int = 1):
    """``TraceGraph_ELBO``: Rao-Blackwellized score-function terms for non-reparameterized sites."""
    from .bounds import GraphELBO

    return GraphELBO(
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    )


@ELBOS.register("enum")
def enum_elbo(num_particles: int = 1) -> pyro.infer.ELBO:
    """``TraceEnum_ELBO``: discrete sites marked for enumeration are summed out exactly.

    A model without such sites (the VAE) gets ``Trace_ELBO``'s estimate, without the warning.
    """
    return pyro.infer.TraceEnum_ELBO(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=1,
        strict_enumeration_warning=False,
    )


@ELBOS.register("renyi")
def renyi_elbo(num_particles: int = 1, alpha: float = 0.5):
    """Per-point Renyi bound with ``num_particles`` importance samples (:mod:`pyro_vae.bounds`)."""
    from .bounds import RenyiBound

    return RenyiBound(alpha=alpha, num_particles=num_particles)


@ELBOS.register("iwae")
def iwae_elbo(num_particles: int = 1):
    """Importance-weighted bound, per data point, K = ``num_particles`` (:mod:`pyro_vae.bounds`)."""
    from .bounds import IWAEBound

    return IWAEBound(num_particles=num_particles)


@ELBOS.register("score")
def score_elbo(num_particles: int = 1) -> pyro.infer.ELBO:
    """``Trace_ELBO`` with the score-function (REINFORCE) estimator at every latent site."""
    from .bounds import ScoreFunctionELBO

    return ScoreFunctionELBO(
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    )


# the fused computation of each estimator "auto" resolves to
_FUSED = {"meanfield": "fused", "trace": "fused_trace"}


# fit's precision -> the dtype torch.autocast computes the training loss in
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# steps between the checks that read the losses (and NaN flags) to the host: one
# synchronisation per check instead of one per step, which would stall a GPU's queue
_CHECK_EVERY = 20


def forked_rng(*tensors):
    """``torch.random.fork_rng`` over the CPU and the GPU of the first CUDA tensor given:
    random numbers drawn inside leave the generators as they were (set-up and monitoring
    must not shift a run's stream)."""
    cuda = [t.device for t in tensors if torch.is_tensor(t) and t.is_cuda]
    return torch.random.fork_rng(cuda[:1])


def resolve_elbo(model, guide, *args, **kwargs) -> str:
    """ "meanfield" if ``kl_divergence(q, p)`` is registered at every latent site, else "trace".

    Runs the guide once on ``args`` (e.g. one mini-batch) and the model replayed on
    its samples, and asks torch/Pyro's KL registry about each pair of distributions.
    The random number generators are left as they were: asking does not change a run.
    """
    with torch.no_grad(), forked_rng(*args):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        try:
            kl_divergence(site["fn"], model_trace.nodes[name]["fn"])
        except NotImplementedError:
            return "trace"
    return "meanfield"


class FreeBitsELBO(pyro.infer.Trace_ELBO):
    """-ELBO whose KL term per latent site is max(free_bits, batch-mean KL) nats per example.

    The KL of each example is the closed form when ``analytic`` and registered, else
    log q(z|x) - log p(z) at the guide's sample (reparameterized guides only).  Below
    the floor the KL gets no gradient, so the encoder is free to use those nats.
    """

    def __init__(self, free_bits: float, analytic: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.free_bits = free_bits
        self.analytic = analytic

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss + self._free_bits_loss(model_trace, guide_trace) / self.num_particles
        return loss

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def _free_bits_loss(self, model_trace, guide_trace) -> torch.Tensor:
        loss = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                loss = loss - site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            check_fully_reparametrized(guide_site)
            kl = None
            if self.analytic:
                try:
                    kl = kl_divergence(guide_site["fn"], site["fn"])
                except NotImplementedError:
                    pass
            if kl is None:
                kl = guide_site["unscaled_log_prob"] - site["unscaled_log_prob"]
            # kl: (B,) or (particles, B), the data plate last; the site scale carries n / B and beta
            floored = kl.mean(-1).clamp(min=self.free_bits) * kl.shape[-1]
            loss = loss + (guide_site["scale"] * floored).sum()
        return loss


class _ScaleLatents(Messenger):
    """Multiply the log-density of every unobserved sample site by ``weight`` (KL weight beta)."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.weight


def make_elbo(name: str, num_particles: int = 1) -> pyro.infer.ELBO:
    """The registered ELBO ``name`` with ``num_particles`` (vectorized when > 1)."""
    return ELBOS.get(name)(num_particles=num_particles)


@dataclass
class FitResult:
    """What ``fit`` measured; ELBOs are nats per example (higher is better)."""

    elbo: str = ""  # the ELBO used ("auto" resolved)
    train_elbo: list[float] = field(default_factory=list)
    test_elbo: list[float] = field(default_factory=list)
    seconds_per_epoch: list[float] = field(default_factory=list)
    examples_per_second: float = float("nan")
    checkpoint: Path | None = None
    skipped_steps: int = 0  # steps dropped for a non-finite loss or gradient
    rollbacks: int = 0  # returns to the last good state with the learning rate halved


class TrainingInterrupted(Exception):
    """Ctrl-C during ``fit``: the current step finished and a checkpoint was written."""

    def __init__(self, checkpoint: Path | None):
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint was asked for"
        super().__init__(f"interrupted; {where}")
        self.checkpoint = checkpoint


class TrainingDiverged(UserError):
    """The loss or gradients stayed non-finite even after rolling back with smaller steps."""


@dataclass
class _Progress:
    """Everything needed to continue training exactly where it stopped (saved in checkpoints)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # steps done in the current epoch
    order: torch.Tensor | None = None  # the current epoch's shuffle of the training rows
    total: float = 0.0  # sum over the epoch's examples so far of -ELBO (nats)
    seen: int = 0
    global_step: int = 0
    lr: float = 1e-3
    examples: int = 0
    train_seconds: float = 0.0

    def state(self) -> dict[str, Any]:
        return dict(vars(self))


@contextmanager
def _deferred_interrupt(enabled: bool):
    """While active, Ctrl-C only sets ``flag["set"]``; the loop checks it after each step."""
    flag = {"set": False}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _rng_state() -> dict[str, Any]:
    # training draws only from torch's generators (shuffles, binarization, z samples)
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _all_finite(tensors) -> bool:
    """One host synchronisation: a sum is NaN/inf when any of its terms is."""
    return bool(torch.isfinite(torch.stack([t.detach().sum() for t in tensors])).all())


def _tally(
    pending: list[tuple[torch.Tensor, int]], state: _Progress, result: FitResult, n: int,
    bad_run: int, max_bad_steps: int,
) -> int:
    """Add the pending steps' losses to the epoch's total and empty ``pending``, in one host
    synchronisation for them all; the run of bad steps in a row after them (``bad_run``
    before them), or ``max_bad_steps`` as soon as a run reaches it."""
    values = torch.stack([row for row, _ in pending]).tolist()
    sizes = [size for _, size in pending]
    pending.clear()
    for (loss, bad), size in zip(values, sizes, strict=True):
        if bad:
            result.skipped_steps += 1
            bad_run += 1
            if bad_run >= max_bad_steps:
                break
            continue
        bad_run = 0
        # loss ~ n * mean per-example -ELBO; weight by this batch's share of the epoch
        state.total += loss * (size / n)
        state.seen += size
    return bad_run


def _bad_step(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """1.0 when the loss or any gradient is NaN/inf, else 0.0: a float tensor on the loss's
    device, computed without reading it (one foreach kernel for the gradients' norm; the
    norm is NaN/inf when any gradient element is)."""
    norm = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else loss.new_zeros(())
    return torch.isfinite(loss.detach() + norm.to(loss.dtype)).logical_not().float()


def _step_unless(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``bad`` (a 0-dim float tensor) is 1, decided on the device.

    Fused Adam reads ``found_inf`` (the attribute ``torch.amp.GradScaler`` sets) inside its
    kernel and leaves the parameters, moments and step count as they were; other optimizers
    need the flag on the host.
    """
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = bad
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bad.item():
        optimizer.step()


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
    kl_warmup_epochs: int = 0,
    free_bits: float = 0.0,
    kl_weight: float = 1.0,
    resume: dict[str, Any] | None = None,
    max_bad_steps: int = 10,
    max_rollbacks: int = 3,
    distributed: bool = False,
    precision: str = "float32",
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
        A name in :data:`ELBOS`.  "auto" is resolved by :func:`resolve_elbo` to
        ``meanfield`` or ``trace`` (the name recorded) and computed by the fused path of
        that estimator (``fused`` / ``fused_trace``: same values, less per-step overhead;
        plain Pyro for pairs it does not fuse).
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
        the gradients are summed over the processes (:mod:`pyro_vae.distributed`).
    precision : {"float32", "bfloat16"}
        "bfloat16" computes the training loss under ``torch.autocast`` (matrix products
        in bfloat16, reductions and log-densities in float32; parameters, gradients,
        Adam and the test ELBO stay float32).  Faster where the hardware multiplies
        bfloat16 natively (recent GPUs, CPUs with AVX512-BF16 or AMX).

    Returns
    -------
    FitResult with per-epoch train and test ELBO (nats per example) and timings.

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C (SIGINT) when ``checkpoint`` is given, after saving it.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    pyro.set_rng_seed(seed)
    n = x_train.shape[0]
    # run the guide once so lazily built parameters (autoguides) exist before Adam sees them;
    # on forked generators, so that training draws the seed's random numbers from the first
    with torch.no_grad(), poutine.trace(), forked_rng(x_train):
        guide(x_train[:batch_size], n=n)
    fused = elbo == "auto"
    if fused:
        elbo = resolve_elbo(model, guide, x_train[:batch_size], n=n)
    if free_bits > 0:
        if elbo not in ("trace", "meanfield"):
            raise ValueError(f"free bits work with elbo 'trace' or 'meanfield', not {elbo!r}")
        loss_fn = FreeBitsELBO(
            free_bits,
            analytic=elbo == "meanfield",
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=1,
        )
    else:
        loss_fn = make_elbo(_FUSED[elbo] if fused else elbo, num_particles)
    if distributed:
        from .distributed import DataParallelELBO  # torch.distributed only when asked for

        loss_fn = DataParallelELBO(loss_fn, model, guide)
    autocast = torch.autocast(
        x_train.device.type, dtype=PRECISIONS[precision], enabled=precision != "float32"
    )
    latent_scale = _ScaleLatents()
    scaled_model, scaled_guide = latent_scale(model), latent_scale(guide)
    warmup_steps = kl_warmup_epochs * -(-n // batch_size)
    params = [p for p in (*model.parameters(), *guide.parameters()) if p.requires_grad]
    # fused Adam: one kernel for all parameters instead of ~10 per tensor (torch >= 2.4)
    fused_adam = all(p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.Adam(params, lr=lr, fused=fused_adam)
    result = FitResult(elbo=elbo, checkpoint=Path(checkpoint) if checkpoint else None)
    state = _Progress(lr=lr)
    if resume is not None:
        state = _restore(resume, model, guide, optimizer, result)

    def snapshot():
        return copy.deepcopy(
            (model.state_dict(), guide.state_dict(), optimizer.state_dict(), state)
        )

    def save():
        if not _all_finite(params):  # never write a diverged model over a good one
            return
        save_checkpoint(
            checkpoint,
            {
                **(checkpoint_extra or {}),
                "epoch": state.epoch,
                "model_state": model.state_dict(),
                "guide_state": guide.state_dict(),
                "optimizer_state": optimizer.state_dict(),
                "train_state": state.state(),
                "rng_state": _rng_state(),
                "metrics": {
                    "elbo": result.elbo,
                    "train_elbo": result.train_elbo,
                    "test_elbo": result.test_elbo,
                    "seconds_per_epoch": result.seconds_per_epoch,
                },
            },
        )

    last_good = snapshot()
    # the steps' (loss, bad) stay on the device until the next check reads them all at once
    pending: list[tuple[torch.Tensor, int]] = []
    bad_run = 0
    with _deferred_interrupt(enabled=checkpoint is not None) as interrupted:
        while state.epoch < epochs:
            epoch = state.epoch + 1
            if state.order is None:
                state.order = torch.randperm(n, device=x_train.device)
            batches = state.order.split(batch_size)
            start = time.perf_counter()
            bar = tqdm(
                total=len(batches),
                initial=state.step,
                desc=f"epoch {epoch}/{epochs}",
                disable=not progress,
                leave=False,
            )
            while state.step < len(batches):
                idx = batches[state.step]
                x = x_train[idx] if batch_transform is None else batch_transform(x_train[idx])
                warm = min(1.0, (state.global_step + 1) / warmup_steps) if warmup_steps else 1.0
                latent_scale.weight = kl_weight * warm
                with autocast:
                    loss = loss_fn.differentiable_loss(scaled_model, scaled_guide, x, n=n)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                bad = _bad_step(loss, [p.grad for p in params if p.grad is not None])
                _step_unless(optimizer, bad)
                pending.append((torch.stack([loss.detach().to(bad.dtype), bad]), len(idx)))
                state.step += 1
                state.global_step += 1
                bar.update()
                at_check = state.step % _CHECK_EVERY == 0 or state.step == len(batches)
                if not (at_check or interrupted["set"]):
                    continue
                # the check: read the pending steps' losses in one host synchronisation
                bad_run = _tally(pending, state, result, n, bad_run, max_bad_steps)
                if bad_run >= max_bad_steps:
                    bad_run = 0
                    state = _roll_back(last_good, model, guide, optimizer, result, max_rollbacks)
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
                seconds = time.perf_counter() - start
                state.examples += state.seen
                state.train_seconds += seconds
                result.seconds_per_epoch.append(seconds)
                result.train_elbo.append(-state.total / state.seen if state.seen else math.nan)
                if x_test is not None:  # on forked generators: watching does not change a run
                    with forked_rng(x_test):
                        test = importance_estimate(model, guide, x_test, num_particles=1)
                    result.test_elbo.append(test.elbo.mean().item())
                if progress:
                    test_text = (
                        f"  test ELBO {result.test_elbo[-1]:.2f}" if result.test_elbo else ""
                    )
                    tqdm.write(
                        f"epoch {epoch:3d}  train ELBO {result.train_elbo[-1]:.2f}"
                        f"{test_text}  ({seconds:.2f} s)"
                    )
                state.epoch, state.step, state.order = epoch, 0, None
                state.total, state.seen = 0.0, 0
                if checkpoint is not None:
                    save()
                last_good = snapshot()
                continue
            bar.close()
    result.examples_per_second = state.examples / max(state.train_seconds, 1e-12)
    return result


def _restore(payload: dict[str, Any], model, guide, optimizer, result: FitResult) -> _Progress:
    """Load a checkpoint's states into the live objects; return the saved position."""
    try:
        model.load_state_dict(payload["model_state"])
        guide.load_state_dict(payload["guide_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        state = _Progress(**payload["train_state"])
        metrics = payload["metrics"]
        result.train_elbo = list(metrics["train_elbo"])
        result.test_elbo = list(metrics["test_elbo"])
        result.seconds_per_epoch = list(metrics["seconds_per_epoch"])
        _set_rng_state(payload["rng_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot resume from this checkpoint ({first})") from None
    _set_lr(optimizer, state.lr)
    return state


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _roll_back(
    last_good, model, guide, optimizer, result: FitResult, max_rollbacks: int
) -> _Progress:
    """Return to the last epoch boundary's state with the learning rate halved; that position.

    Gives up with :class:`TrainingDiverged` after ``max_rollbacks``.
    """
    result.rollbacks += 1
    if result.rollbacks > max_rollbacks:
        raise TrainingDiverged(
            f"the loss or its gradient stayed NaN/inf after {max_rollbacks} rollbacks with the "
            "learning rate halved each time; lower --lr, or check that the likelihood suits the "
            "data (grey levels need --binarize or a gaussian/beta likelihood)"
        )
    model_state, guide_state, optimizer_state, state = copy.deepcopy(last_good)
    model.load_state_dict(model_state)
    guide.load_state_dict(guide_state)
    optimizer.load_state_dict(optimizer_state)
    state.lr /= 2
    _set_lr(optimizer, state.lr)
    return state
