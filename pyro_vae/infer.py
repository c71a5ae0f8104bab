"""One training loop for every model: stochastic variational inference.

``fit`` minimises ``-ELBO`` estimated by a Pyro ELBO chosen by name from
:data:`ELBOS`, with ``torch.optim.Adam`` over the model's and guide's module
parameters.  Mini-batches are index slices of the data tensor; the loss of a
batch of B out of N is scaled by N / B through the model's data plate, so it
estimates the full-data ELBO.  Losses stay on the device during an epoch (no
per-step host synchronisation); the progress bar shows the running ELBO.

The KL term: ``elbo="auto"`` becomes ``meanfield`` (closed-form KL) when
``kl_divergence(q, p)`` is registered for every latent site's guide and model
distributions, else ``trace`` (Monte Carlo), see :func:`resolve_elbo`.  KL warm-up
multiplies the log-densities of the latent sites (in model and guide, so the KL
term and nothing else) by beta rising linearly from ~0 to ``kl_weight`` (default 1)
over the first ``kl_warmup_epochs`` epochs; the recorded train ELBO is then the annealed
objective, the test ELBO the true one.  Free bits (Kingma et al., 2016) replace
each latent site's batch-mean KL by max(free_bits, KL) nats per example.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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
from .data import minibatch_indices
from .evaluate import importance_estimate
from .registry import Registry

__all__ = ["ELBOS", "FitResult", "fit", "make_elbo", "resolve_elbo", "FreeBitsELBO"]

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


@ELBOS.register("auto")
def auto_elbo(num_particles: int = 1) -> pyro.infer.ELBO:
    """Closed-form KL where registered, Monte Carlo elsewhere, site by site.

    This is what ``TraceMeanField_ELBO`` does; ``fit`` resolves "auto" to the name
    of what it amounts to for a given pair with :func:`resolve_elbo`.
    """
    return meanfield_elbo(num_particles)


def resolve_elbo(model, guide, *args, **kwargs) -> str:
    """"meanfield" if ``kl_divergence(q, p)`` is registered at every latent site, else "trace".

    Runs the guide once on ``args`` (e.g. one mini-batch) and the model replayed on
    its samples, and asks torch/Pyro's KL registry about each pair of distributions.
    """
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
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
    """Multiply the log-density of every unobserved sample site by ``weight`` (the KL weight beta)."""

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
    elbo : str
        A name in :data:`ELBOS`; "auto" is resolved by :func:`resolve_elbo`.
    kl_warmup_epochs : int
        KL weight beta = step / (kl_warmup_epochs * steps per epoch), capped at 1.
    free_bits : float
        Nats per example and latent site below which the KL is not penalised
        (``trace`` or ``meanfield`` only).
    kl_weight : float
        The KL weight after warm-up (beta of a beta-VAE); 0 with the ``delta`` guide
        drops log p(z) and leaves the plain autoencoder's reconstruction loss.

    Returns
    -------
    FitResult with per-epoch train and test ELBO (nats per example) and timings.
    """
    pyro.set_rng_seed(seed)
    n = x_train.shape[0]
    # run the guide once so lazily built parameters (autoguides) exist before Adam sees them
    with torch.no_grad(), poutine.trace():
        guide(x_train[:batch_size], n=n)
    if elbo == "auto":
        elbo = resolve_elbo(model, guide, x_train[:batch_size], n=n)
    if free_bits > 0:
        if elbo not in ("trace", "meanfield"):
            raise ValueError(f"free bits work with elbo 'trace' or 'meanfield', not {elbo!r}")
        loss_fn = FreeBitsELBO(
            free_bits, analytic=elbo == "meanfield", num_particles=num_particles,
            vectorize_particles=num_particles > 1, max_plate_nesting=1,
        )
    else:
        loss_fn = make_elbo(elbo, num_particles)
    latent_scale = _ScaleLatents()
    scaled_model, scaled_guide = latent_scale(model), latent_scale(guide)
    warmup_steps = kl_warmup_epochs * -(-n // batch_size)
    params = [p for p in (*model.parameters(), *guide.parameters()) if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    result = FitResult(elbo=elbo, checkpoint=Path(checkpoint) if checkpoint else None)
    examples, train_seconds, global_step = 0, 0.0, 0
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
            global_step += 1
            warm = min(1.0, global_step / warmup_steps) if warmup_steps else 1.0
            latent_scale.weight = kl_weight * warm
            loss = loss_fn.differentiable_loss(scaled_model, scaled_guide, x, n=n)
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
