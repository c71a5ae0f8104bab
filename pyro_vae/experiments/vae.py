"""The VAE experiment: config -> data -> model and guide -> fit -> honest numbers -> figures.

``train_vae`` is what ``pyro-vae train`` runs; ``restore_vae`` rebuilds a trained
pair from a checkpoint for ``evaluate`` and ``sample``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from ..build import build_vae, init_decoder_bias
from ..config import MAX_DATA_DIM, RunConfig, dump_toml
from ..data import Dataset, binarize, load_dataset
from ..elbos import importance_estimate
from ..errors import UserError
from ..guides import active_units
from ..plots import vae as plots
from ..plots.common import image_grid
from ..plugins import loaded_plugins, require_plugins
from ..train import TrainingLog, fit, running_threads
from ..train.checkpoint import load_checkpoint, previous_checkpoint
from ..train.schedules import make_schedule
from .runs import (
    device_named,
    first_rows,
    folder_run_id,
    hold_out,
    new_run_id,
    prepare_out,
    write_metrics,
    write_run_config,
)

__all__ = [
    "TrainedVAE",
    "train_vae",
    "load_resumable",
    "restore_vae",
    "evaluate_vae",
    "require_checkpoint_plugins",
    "discard_replaced_run",
]

@dataclass
class TrainedVAE:
    """A model/guide pair with what is needed to rebuild and evaluate it."""

    model: nn.Module
    guide: nn.Module
    config: RunConfig
    data_dim: int
    image_shape: tuple[int, int] | None
    binary_data: bool


def _figures(
    trained: TrainedVAE, dataset: Dataset, x_test: torch.Tensor, out: Path, curves
) -> dict:
    """Prior samples, reconstructions, latent map and curves as PNG files in ``out``."""
    figures = {"curves": str(plots.save_curves(curves, out / "curves.png"))}
    if dataset.image_shape is None:
        return figures
    model, guide = trained.model, trained.guide
    point_mass = getattr(guide, "point_mass", False)  # a delta guide's code is z*(x), not a mean
    figures["samples"] = str(
        plots.save_sample_grid(model.sample_means(64), dataset.image_shape, out / "samples.png")
    )
    with torch.no_grad():
        loc, _ = guide.encode(x_test)
    figures["reconstructions"] = str(
        plots.save_reconstructions(
            x_test[:16],
            model.decode_mean(loc[:16]),
            dataset.image_shape,
            out / "reconstructions.png",
            point_mass=point_mass,
        )
    )
    figures["latent"] = str(
        plots.save_latent_map(loc, dataset.y_test, out / "latent.png", point_mass=point_mass)
    )
    return figures


def _tensorboard_images(model, guide, x_test: torch.Tensor, image_shape):
    """() -> the grid of 64 prior samples and 16 test images over their reconstructions, as
    the arrays the figures draw (:func:`~pyro_vae.plots.common.image_grid`); ``None`` when
    the data are not images."""
    if image_shape is None:
        return None

    def images() -> dict:
        with torch.no_grad():
            loc, _ = guide.encode(x_test[:16])
            pairs = torch.cat([x_test[:16], model.decode_mean(loc)])
            return {"samples": image_grid(model.sample_means(64), image_shape, 8),
                    "reconstructions": image_grid(pairs, image_shape, len(loc))}

    return images


def train_vae(
    config: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    resume: dict[str, Any] | None = None,
    distributed: bool = False,
) -> dict:
    """Train the VAE that ``config`` describes and write metrics, checkpoint and figures to ``out``.

    ``resume`` is a checkpoint of an earlier run in ``out`` (see :func:`load_resumable`):
    training continues from where it stopped.  ``distributed``: this process is one of
    the initialized process group (:func:`pyro_vae.train.distributed.init_process_group`); each
    trains on its shard of the training set with 1/W of the batch, the gradients summed,
    and rank 0 alone writes.  Returns the metrics dict also written to
    ``out/metrics.json`` (``{}`` on the other ranks).
    """
    rank, world = 0, 1
    if distributed:
        from ..train.distributed import rank_and_world_size, shard  # torch.distributed

        if resume is not None:
            raise UserError("--resume continues a single-process run; drop --distributed")
        rank, world = rank_and_world_size()
    lead = rank == 0
    out = prepare_out(out, overwrite or resume is not None) if lead else Path(out)
    device = device_named(config.train.device, distributed)
    dataset = load_dataset(
        config.data.dataset, path=config.data.path, data_dir=config.data.data_dir, device=device
    )
    if config.data.validation:
        dataset = hold_out(dataset, config.data.validation)
    dataset = first_rows(dataset, config.data.train_size, config.data.test_size)
    x_train, x_test, transform = binarize(dataset.x_train, dataset.x_test, config.data.binarize)
    binary = config.data.binarize != "none"
    pyro.set_rng_seed(config.train.seed)  # the initial weights depend on the seed too
    model, guide = build_vae(
        config, dataset.dim, binary_data=binary, image_shape=dataset.image_shape
    )
    if config.model.decoder_bias == "data_mean":
        init_decoder_bias(model, config, dataset.x_train.mean(0))
    run_id = (resume or {}).get("run_id") or new_run_id()
    log = None  # before the folder changes: a missing tensorboard package ends in one line
    if lead and config.train.log_dir is not None:
        images = _tensorboard_images(model, guide, x_test, dataset.image_shape)
        log = TrainingLog(Path(config.train.log_dir) / run_id, images=images)
    if lead:  # the inputs are good: only now is a replaced run's folder changed
        # the new run's id first: a kill before the old checkpoints are gone leaves them
        # naming another run than config.toml, and load_resumable refuses them
        write_run_config(out, dump_toml(config), run_id)
        if resume is None:
            discard_replaced_run(out)
    model.to(device)
    guide.to(device)
    t = config.train
    checkpoint_extra = {
        "run_id": run_id,
        "config": config.to_dict(),
        "data_dim": dataset.dim,
        "image_shape": list(dataset.image_shape) if dataset.image_shape else None,
        "binary_data": binary,
        "plugins": loaded_plugins(),  # restore_vae asks for them by name
    }
    # a process measures the load at its first run and keeps the choice (train/threads.py);
    # training and the final evaluation both run at it
    with running_threads(t.threads, announce=progress and lead) as (threads, threads_reason):
        result = fit(
            model,
            guide,
            shard(x_train, rank, world) if distributed else x_train,
            x_test=x_test,
            epochs=t.epochs,
            batch_size=max(1, t.batch_size // world),  # W processes make the configured batch
            lr=t.lr,
            elbo=config.inference.elbo,
            num_particles=config.inference.num_particles,
            max_plate_nesting=config.inference.max_plate_nesting,
            seed=t.seed + rank,  # each process its own draws; rank 0 those of a single process
            batch_transform=transform,
            checkpoint=out / "checkpoint.pt" if lead else None,
            progress=progress and lead,
            kl_warmup_epochs=config.inference.kl_warmup_epochs,
            free_bits=config.inference.free_bits,
            kl_weight=config.inference.kl_weight,
            resume=resume,
            checkpoint_extra=checkpoint_extra,
            distributed=distributed,
            precision=t.precision,
            compile=t.compile,
            lr_schedule=make_schedule(t.schedule, t.lr_decay, t.lr_step),
            betas=tuple(t.adam_betas),
            eps=t.adam_eps,
            log=log,
        )
        if not lead:
            return {}
        trained = TrainedVAE(model, guide, config, dataset.dim, dataset.image_shape, binary)
        start = time.perf_counter()
        final = evaluate_vae(trained, x_test, config.inference.eval_particles, seed=t.seed,
                             progress=progress)
        evaluation_seconds = time.perf_counter() - start
    metrics = {
        "run_id": run_id,
        "dataset": dataset.name,
        "num_train": x_train.shape[0],
        "num_test": x_test.shape[0],
        "evaluated_on": "validation" if config.data.validation else "test",
        "elbo": result.elbo,
        "train_elbo": result.train_elbo,
        "test_elbo_per_epoch": result.test_elbo,
        **final,
        "evaluation_seconds": evaluation_seconds,
        "seconds_per_epoch": result.seconds_per_epoch,
        # every process saw as many examples as this one, in the same time
        "examples_per_second": world * result.examples_per_second,
        "world_size": world,
        "threads": threads,
        "threads_reason": threads_reason,
        "precision": result.precision,
        "precision_reason": result.precision_reason,
        "compiled": result.compiled,
        "compile_reason": result.compile_reason,
        "compile_seconds": result.compile_seconds,
        "checkpoint": str(result.checkpoint),
        "config": config.to_dict(),
    }
    if resume is not None and resume.get("fallback"):
        metrics["resumed_from_previous_checkpoint"] = resume["fallback"]
    if log is not None:
        log.hparams(config.to_dict(), {"test_elbo": final["test_elbo"],
                                       "test_log_likelihood": final["test_log_likelihood"]})
        log.close()
        metrics["tensorboard"] = str(log.log_dir)
    train_label, test_label = plots.curve_labels(config.inference.kl_weight,
                                                 getattr(guide, "point_mass", False))
    curves = {train_label: result.train_elbo, test_label: result.test_elbo}
    metrics["figures"] = _figures(trained, dataset, x_test, out, curves)
    write_metrics(out, metrics)
    return metrics


def evaluate_vae(
    trained: TrainedVAE, x: torch.Tensor, num_particles: int, *, seed: int = 0,
    progress: bool = False,
) -> dict:
    """Test ELBO and importance-sampled log-likelihood, nats per example (means over rows of x),
    and the active units of the guide on x (:func:`~pyro_vae.guides.active_units`).

    A point-mass guide (``delta``) has no entropy and no density to importance-sample
    with: its "ELBO" is the joint log-density log p(x, z*) at the code z* = f(x), which
    is reported as ``test_elbo`` (with ``test_elbo_is_log_joint``), and the
    log-likelihood as ``None`` (JSON null): not available, rather than a wrong number.
    """
    pyro.set_rng_seed(seed)
    if getattr(trained.guide, "point_mass", False):
        estimate = importance_estimate(trained.model, trained.guide, x, 1)  # K copies would agree
        return {
            "test_elbo": estimate.elbo.mean().item(),
            "test_elbo_is_log_joint": True,
            "test_log_likelihood": None,
            "num_particles": 1,
            "active_units": active_units(trained.guide, x),
        }
    estimate = importance_estimate(trained.model, trained.guide, x, num_particles, progress)
    return {
        "test_elbo": estimate.elbo.mean().item(),
        "test_log_likelihood": estimate.log_likelihood.mean().item(),
        "num_particles": num_particles,
        # after the estimate, so that its draws are the ones it has always made
        "active_units": active_units(trained.guide, x),
    }


def discard_replaced_run(out: Path) -> None:
    """Remove the results and checkpoints of the run a fresh one replaces (``--overwrite``),
    so that no later fallback to ``checkpoint.prev.pt`` can continue the replaced run."""
    checkpoint = out / "checkpoint.pt"
    for path in (out / "metrics.json", checkpoint, previous_checkpoint(checkpoint)):
        path.unlink(missing_ok=True)


def load_resumable(out: str | Path) -> dict[str, Any]:
    """The checkpoint to resume the run in ``out`` from: the newest, or else (said on stderr
    and recorded as the payload's ``"fallback"``) the one before it."""
    path = Path(out) / "checkpoint.pt"
    if not Path(out).is_dir():
        raise UserError(f"--resume {out}: no such run folder")
    try:
        return _of_this_run(load_checkpoint(path), path)
    except UserError as exc:
        previous = previous_checkpoint(path)
        if not previous.exists():
            raise
        payload = _of_this_run(load_checkpoint(previous), previous)
        payload["fallback"] = f"{path.name} unreadable ({exc}); resumed from {previous.name}"
        print(f"pyro-vae: {path} is unreadable ({exc}); resuming from {previous.name}, "
              f"saved after epoch {payload.get('epoch', '?')}", file=sys.stderr)
        return payload


def _of_this_run(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """``payload`` if it was saved by the run its folder's config.toml names; a
    :class:`UserError` if another run (one an ``--overwrite`` replaced) saved it."""
    expected, found = folder_run_id(path.parent), payload.get("run_id")
    if expected is not None and found != expected:
        raise UserError(f"{path} was saved by run {found or '(unnamed)'}, but the folder now "
                        f"holds run {expected} (an --overwrite that stopped before its first "
                        "checkpoint); start that run afresh with --overwrite")
    return payload


def require_checkpoint_plugins(payload: dict[str, Any], checkpoint: str | Path) -> None:
    """A :class:`UserError` naming the plugin modules the run used that are not imported."""
    needed = payload.get("plugins") or []  # checkpoints from before plugins name none
    if not isinstance(needed, list) or not all(isinstance(name, str) for name in needed):
        raise UserError(f"{checkpoint}: its list of plugins is not a list of module names")
    require_plugins(needed, str(checkpoint))


def restore_vae(checkpoint: str | Path, device: str = "cpu") -> TrainedVAE:
    """Rebuild model and guide from a checkpoint written by ``train_vae``."""
    payload = load_checkpoint(checkpoint)
    require_checkpoint_plugins(payload, checkpoint)
    config = RunConfig.from_dict(payload["config"])
    try:
        data_dim = int(payload["data_dim"])
        binary = bool(payload["binary_data"])
        image_shape = (tuple(int(side) for side in payload["image_shape"])
                       if payload.get("image_shape") else None)
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{checkpoint} lacks the data shape a VAE checkpoint records") from None
    pixels = math.prod(image_shape) if image_shape else data_dim
    if not (1 <= data_dim <= MAX_DATA_DIM and pixels == data_dim):
        raise UserError(f"{checkpoint} is invalid: data_dim {data_dim} with image shape "
                        f"{image_shape} (checked before anything is built)")
    model, guide = build_vae(config, data_dim, binary_data=binary, image_shape=image_shape)
    try:
        model.load_state_dict(payload["model_state"])
        guide.load_state_dict(payload["guide_state"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise UserError(
            f"{checkpoint} does not match the model its config builds ({first})"
        ) from None
    device = device_named(device)
    return TrainedVAE(
        model.to(device).eval(), guide.to(device).eval(), config, data_dim, image_shape, binary
    )
