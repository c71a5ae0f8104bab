"""TensorBoard for :func:`~pyro_vae.train.fit`: what a run does, watched while it runs.

A :class:`TrainingLog` writes, with ``torch.utils.tensorboard.SummaryWriter``, against the
global step (steps taken since the run began):

* at each of the loop's checks (every :data:`~pyro_vae.train.CHECK_EVERY` steps, when the
  steps' losses are read to the host anyway, so logging adds no synchronisation):
  ``train/elbo`` (the mean per-example ELBO of the steps since the last check, the annealed
  objective during KL warm-up), ``train/grad_norm`` (their mean ||g||_2, the norm the NaN
  guard computes), ``train/lr``, ``train/examples_per_second`` and ``train/skipped_steps``
  (non-finite steps so far);
* per epoch, on the test set: ``test/elbo`` (the ELBO ``fit`` records), and its two terms
  ``test/reconstruction`` = E_q[log p(x|z)] and ``test/kl`` = E_q[log q(z|x) - log p(z)]
  (:func:`elbo_terms`).  The terms are measured on the test set rather than per step: the
  fused training losses return their sum only, and splitting them would change the step;
* every :data:`IMAGES_EVERY` epochs and after the last, the images the caller draws (the VAE's
  sample grid and reconstructions);
* at the end, the run's config as hparams with its final metrics (:meth:`TrainingLog.hparams`).

A resumed run continues the same event files: the writer is opened with ``purge_step`` one
past the checkpoint's global step, so TensorBoard hides what the interrupted run logged after
its last checkpoint, and a rollback to the last epoch boundary does the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine

from ..elbos.importance import CHUNK_ELEMENTS
from ..errors import UserError
from .guards import Check

__all__ = ["IMAGES_EVERY", "TrainingLog", "elbo_terms"]

# epochs between two sets of images (and always after the last epoch)
IMAGES_EVERY = 5


def _summary_writer_class():
    try:
        # tensorboard is an optional heavy dependency: imported only when a log is asked for
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError when the tensorboard package is missing
        raise UserError("--tensorboard (train.log_dir) needs the tensorboard package: "
                        "pip install tensorboard") from None
    return SummaryWriter


def _hparam(value: Any) -> bool | int | float | str:
    """A config value as TensorBoard's hparams take it: numbers and strings as they are,
    lists as their text, ``None`` as "none"."""
    if value is None:
        return "none"
    return value if isinstance(value, bool | int | float | str) else str(value)


class TrainingLog:
    """TensorBoard event files for one training run, in ``log_dir``.

    Parameters
    ----------
    log_dir : path
        The folder of this run's event files (one TensorBoard run).
    images : callable, optional
        () -> {name: (H, W) array with values in [0, 1]}, drawn every ``images_every``
        epochs and after the last; :func:`~pyro_vae.train.fit` calls it on forked random
        generators, so drawing images does not change the run.
    images_every : int
        Epochs between two sets of images.

    The ``tensorboard`` package is needed from construction on (a :class:`UserError` saying
    ``pip install tensorboard`` otherwise); the writer opens at :meth:`start`.
    """

    def __init__(self, log_dir: str | Path,
                 images: Callable[[], dict[str, np.ndarray]] | None = None,
                 images_every: int = IMAGES_EVERY):
        self.log_dir = Path(log_dir)
        self.images = images
        self.images_every = images_every
        self._writer_class = _summary_writer_class()
        self._writer = None
        self._step = 0

    def start(self, global_step: int) -> None:
        """(Re)open the writer at ``global_step``, the steps already taken: when positive (a
        resume, a rollback) TensorBoard discards the events logged at later steps."""
        self.close()
        purge = global_step + 1 if global_step > 0 else None
        self._writer = self._writer_class(str(self.log_dir), purge_step=purge)
        self._step = global_step

    def check(self, global_step: int, check: Check, lr: float, seconds: float,
              skipped_steps: int) -> None:
        """The scalars of one check: ``check`` as :func:`~pyro_vae.train.guards.tally`
        returned it, read ``seconds`` after the previous check."""
        scalars = {
            "train/elbo": check.elbo,
            "train/grad_norm": check.grad_norm,
            "train/lr": lr,
            "train/examples_per_second": check.examples / seconds if seconds > 0 else math.nan,
            "train/skipped_steps": skipped_steps,
        }
        self._scalars(scalars, global_step)

    def epoch(self, global_step: int, epoch: int, last: bool, test: dict[str, float]) -> None:
        """The test set's scalars after ``epoch`` (``test``: name -> value, e.g. ``elbo``,
        logged as ``test/<name>``), the images when due, and a flush to disk."""
        self._scalars({f"test/{name}": value for name, value in test.items()}, global_step)
        if self.images is not None and (last or epoch % self.images_every == 0):
            for name, image in self.images().items():
                self._writer.add_image(f"images/{name}", image, global_step, dataformats="HW")
        self._writer.flush()

    def hparams(self, config: dict[str, dict[str, Any]], metrics: dict[str, float | None]
                ) -> None:
        """The run's config (``{section: {key: value}}``, shown as ``section.key``) as hparams,
        with ``metrics`` (name -> value; ``None`` is left out) as ``hparam/<name>``."""
        from torch.utils.tensorboard.summary import hparams  # tensorboard: optional, heavy

        flat = {f"{section}.{key}": _hparam(value)
                for section, values in config.items() for key, value in values.items()}
        scalars = {f"hparam/{name}": value for name, value in metrics.items()
                   if value is not None}
        for summary in hparams(flat, scalars):
            self._writer.file_writer.add_summary(summary, self._step)
        self._scalars(scalars, self._step)
        self._writer.flush()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _scalars(self, scalars: dict[str, float], global_step: int) -> None:
        self._step = max(self._step, global_step)
        for tag, value in scalars.items():
            if math.isfinite(value):  # a check of bad steps only has no ELBO, no norm
                self._writer.add_scalar(tag, value, global_step)


def elbo_terms(model, guide, x: torch.Tensor) -> dict[str, float]:
    """The ELBO's two terms, nats per example (means over the rows of x (N, D)), from one
    z ~ q(z|x) per row.

    ``reconstruction`` = E_q[log p(x|z)] (the observed sites) and ``kl`` =
    E_q[log q(z|x) - log p(z)] (the latent sites: a one-sample estimate of KL(q(z|x) || p(z));
    for a point-mass guide, -log p(z*)), so ELBO = reconstruction - kl.  Drawn as
    :func:`~pyro_vae.elbos.importance_estimate` draws with one particle (same chunks, same
    plate), so that from the same generator state the two add up to its ELBO.
    """
    rows = max(1, CHUNK_ELEMENTS // max(x.shape[1], 1))
    reconstruction, kl = [], []
    for chunk in x.split(rows):
        with torch.no_grad(), pyro.plate("particles", 1, dim=-2):
            guide_trace = poutine.trace(guide).get_trace(chunk)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(chunk)
            guide_trace.compute_log_prob()
            model_trace.compute_log_prob()
        zero = chunk.new_zeros(1, chunk.shape[0])
        observed = sum((site["log_prob"] for site in model_trace.nodes.values()
                        if site["type"] == "sample" and site["is_observed"]), zero)
        log_p_z = sum((site["log_prob"] for site in model_trace.nodes.values()
                       if site["type"] == "sample" and not site["is_observed"]), zero)
        log_q_z = sum((site["log_prob"] for site in guide_trace.nodes.values()
                       if site["type"] == "sample"), zero)
        reconstruction.append(observed.expand_as(zero))
        kl.append((log_q_z - log_p_z).expand_as(zero))
    return {"reconstruction": torch.cat(reconstruction, 1).mean().item(),
            "kl": torch.cat(kl, 1).mean().item()}
