"""The VAE's commands: ``train``, ``evaluate``, ``sample``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pyro
import torch

from ..config import (
    MAX_PARTICLES,
    RunConfig,
    apply_overrides,
    check_count,
    config_file,
    config_summary,
    load_config,
    shipped_configs,
)
from ..data import BINARIZE_MODES, DATASETS, binarize_test_set, load_dataset, load_evaluation_array
from ..elbos import ELBOS
from ..errors import UserError
from ..experiments.runs import holds_run, prepare_out, write_metrics
from ..experiments.vae import (
    evaluate_vae,
    load_resumable,
    require_checkpoint_plugins,
    restore_vae,
    train_vae,
)
from ..train import COMPILE_SETTINGS, PRECISION_SETTINGS
from .common import (
    add_eval_particles,
    add_out,
    add_reporting,
    add_seed,
    add_tensorboard,
    add_threads,
    add_train_particles,
    fresh_out,
    nats,
)

__all__ = ["add_command"]


def _train(args: argparse.Namespace) -> dict[str, Any]:
    overrides = list(args.set)
    for flag, key in _TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            value = str(value) if isinstance(value, Path) else value  # --tensorboard DIR
            overrides.append(f"{key}={json.dumps(value)}")
    if args.resume is not None and args.out is not None:
        raise UserError(f"--resume {args.resume} continues in its own folder; drop --out")
    args.out = args.out or fresh_out("train")
    if args.distributed is not None:
        return _train_distributed(args, load_config(args.config, overrides))
    if args.resume is None:
        config = load_config(args.config, overrides)
        return train_vae(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    payload = load_resumable(args.resume)
    require_checkpoint_plugins(payload, args.resume)
    kept = [item for item in overrides if item.startswith(_RESUME_KEYS)]
    if args.config is not None or len(kept) != len(overrides):
        raise UserError(
            "--resume continues a run with its saved config; only --epochs and --threads may "
            "be given"
        )
    config = RunConfig.from_dict(apply_overrides(payload["config"], kept))
    _refuse_edited_config(Path(args.resume) / "config.toml", config)
    done = payload.get("epoch")
    if isinstance(done, int) and config.train.epochs < done:
        raise UserError(f"--resume {args.resume}: the run has done {done} epochs; give --epochs "
                        f"{done} or more")
    return train_vae(config, args.resume, progress=not args.quiet, resume=payload)


def _refuse_edited_config(path: Path, config: RunConfig) -> None:
    """A resume continues the run as it was saved: an edit of its config.toml (which the
    resume would overwrite) is refused rather than silently ignored."""
    if not path.is_file():
        return
    on_disk, saved = load_config(path).to_dict(), config.to_dict()
    edited = [f"{section}.{key}" for section, values in on_disk.items()
              for key, value in values.items()
              if value != saved[section][key] and f"{section}.{key}=" not in _RESUME_KEYS]
    if edited:
        raise UserError(f"{path} was edited ({', '.join(edited)}); --resume continues the run "
                        f"as saved: undo the edit, or start a new run with --config {path}")


def _train_distributed(args: argparse.Namespace, config: RunConfig) -> dict[str, Any]:
    """``train --distributed``: one rank of a launcher's group, or launch N local processes."""
    # torch.distributed only when distributed training is asked for
    import torch.distributed as dist

    from ..train.distributed import init_process_group, under_launcher
    from .launch import launch

    if args.resume is not None:
        raise UserError("--resume continues a single-process run; drop --distributed")
    if under_launcher():
        init_process_group(config.train.device)
        try:
            return train_vae(config, args.out, overwrite=args.overwrite,
                             progress=not args.quiet, distributed=True)
        finally:
            dist.destroy_process_group()
    processes = args.distributed
    if processes < 1:
        raise UserError("--distributed wants the number of processes here (e.g. --distributed 2); "
                        "without a number it must run under torchrun")
    if config.train.device == "cuda" and processes > torch.cuda.device_count():
        raise UserError(f"--distributed {processes} on cuda needs {processes} GPUs, "
                        f"found {torch.cuda.device_count()}")
    out = prepare_out(args.out, args.overwrite)  # checked once here, not in every process
    code = launch(processes, [a for a in args.argv if a != "--json"], args.entry)
    if code:
        raise SystemExit(code)
    return json.loads((out / "metrics.json").read_text())


# what a resume may change: the length of the run and the machine's share of it, not the run
_RESUME_KEYS = ("train.epochs=", "train.threads=")

# command-line flag -> config key it overrides (the flag wins over --config and --set)
_TRAIN_FLAGS = {
    "dataset": "data.dataset",
    "data": "data.path",
    "data_dir": "data.data_dir",
    "binarize": "data.binarize",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "latent_dim": "model.latent_dim",
    "elbo": "inference.elbo",
    "train_particles": "inference.num_particles",
    "eval_particles": "inference.eval_particles",
    "seed": "train.seed",
    "device": "train.device",
    "precision": "train.precision",
    "compile": "train.compile",
    "tensorboard": "train.log_dir",
    "threads": "train.threads",
}


# the most samples ``sample`` draws into its one grid image (100 x 100 tiles)
MAX_GRID = 10_000


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    check_count("--eval-particles", args.eval_particles, MAX_PARTICLES)  # as the config does
    # refused before the (long) evaluation: a training run's metrics.json is never replaced
    out = None if args.out is None else prepare_out(args.out, args.overwrite)
    trained = restore_vae(args.checkpoint, args.device)
    if args.data is not None:
        x = load_evaluation_array(args.data).to(args.device)
        source = str(args.data)
    else:
        data = trained.config.data
        x = load_dataset(
            data.dataset, path=data.path, data_dir=data.data_dir, device=args.device
        ).x_test
        source = f"{data.path or data.dataset} (test split)"
    if x.shape[1] != trained.data_dim:
        raise UserError(
            f"{source} has D={x.shape[1]} features; "
            f"the checkpoint's model expects D={trained.data_dim}"
        )
    if trained.binary_data:
        x = binarize_test_set(x)  # the same draw train_vae used for its test set
    metrics = evaluate_vae(trained, x, args.eval_particles, seed=args.seed, progress=True)
    metrics.update(data=source, num_examples=x.shape[0], checkpoint=str(args.checkpoint))
    if out is not None:
        write_metrics(out, metrics)
    return metrics


def _sample(args: argparse.Namespace) -> dict[str, Any]:
    from ..plots.vae import save_sample_grid  # matplotlib: imported when a grid is drawn

    if not 1 <= args.n <= MAX_GRID:
        raise UserError(f"-n must be a number of samples from 1 to {MAX_GRID} (one grid "
                        f"image), got {args.n}")
    if not args.overwrite and holds_run(args.out.parent) and args.out.exists():
        raise UserError(f"--out {args.out} is a file of the run in {args.out.parent}; pass "
                        "--overwrite or choose another file name")
    trained = restore_vae(args.checkpoint, args.device)
    if trained.image_shape is None:
        raise UserError("this checkpoint's data are not square images; there is no grid to draw")
    pyro.set_rng_seed(args.seed)
    images = trained.model.sample_means(args.n)
    path = save_sample_grid(images, trained.image_shape, args.out)
    return {"samples": str(path), "n": args.n, "checkpoint": str(args.checkpoint)}


def _train_summary(m: dict[str, Any]) -> list[str]:
    return [
        f"{len(m['seconds_per_epoch'])} epochs in {sum(m['seconds_per_epoch']):.0f} s "
        f"({m['elbo']} ELBO); {m['evaluated_on']} set of {m['num_test']}: "
        f"ELBO {nats(m['test_elbo'])}, log p(x) {nats(m['test_log_likelihood'])} "
        f"(K={m['num_particles']}) nats per example; {m['active_units']} active latent units",
        f"run folder: {Path(m['checkpoint']).parent}",
    ]


def _evaluate_summary(m: dict[str, Any]) -> list[str]:
    return [f"{m['data']}, {m['num_examples']} examples: ELBO {nats(m['test_elbo'])}, "
            f"log p(x) {nats(m['test_log_likelihood'])} (K={m['num_particles']}) nats per example"]


def _sample_summary(m: dict[str, Any]) -> list[str]:
    return [f"{m['n']} samples from p(z): {m['samples']}"]


def _configs(args: argparse.Namespace) -> dict[str, Any]:
    if args.name is not None:
        path = config_file(args.name)
        return {"name": path.stem, "path": str(path), "toml": path.read_text()}
    return {"configs": {name: {"path": str(path), "summary": config_summary(path)}
                        for name, path in shipped_configs().items()}}


def _configs_summary(m: dict[str, Any]) -> list[str]:
    if "toml" in m:  # one config: its text, to read or to copy and edit
        return [m["toml"].rstrip("\n")]
    width = max(map(len, m["configs"]))
    return [*(f"{name:<{width}}  {entry['summary']}" for name, entry in m["configs"].items()),
            "train one with: pyro-vae train --config NAME; show one with: pyro-vae configs NAME"]


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate``, ``sample`` and ``configs`` to the CLI's subcommands."""
    train = commands.add_parser("train", help="train a VAE and write metrics, checkpoint, figures")
    train.add_argument("--config", type=Path, metavar="NAME|FILE",
                       help="a shipped config by name (pyro-vae configs lists them) or a TOML file")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config entry (repeatable)",
    )
    train.add_argument("--dataset", choices=DATASETS.names(),
                       help="a named dataset (default: the config's, mnist5k)")
    train.add_argument("--data", type=str, metavar="PATH", help="user data, .npy (N x D) or .npz")
    train.add_argument("--data-dir", type=str,
                       help="folder holding MNIST/raw IDX files for --dataset mnist; without "
                            "it, MNIST is fetched once into $PYRO_VAE_CACHE")
    train.add_argument("--binarize", choices=BINARIZE_MODES,
                       help="grey levels to binary pixels: a fresh draw per batch (dynamic), "
                            "once (static) or not at all")
    train.add_argument("--epochs", type=int, help="passes over the training set")
    train.add_argument("--batch-size", type=int, help="examples per step")
    train.add_argument("--lr", type=float, help="Adam's learning rate")
    train.add_argument("--latent-dim", type=int, help="dimensions of z")
    train.add_argument("--elbo", choices=ELBOS.names(), metavar="NAME",
                       help=f"the training objective, one of {', '.join(ELBOS.names())}")
    add_train_particles(train, None)  # None: the config's
    add_eval_particles(train, None)
    add_seed(train, default=None)
    train.add_argument("--device", choices=("cpu", "cuda"), help="where to train")
    train.add_argument(
        "--precision",
        choices=PRECISION_SETTINGS,
        help="bfloat16: mixed-precision training loss (faster on AVX512-BF16/AMX CPUs and GPUs); "
        "auto: bfloat16 where the hardware multiplies it natively, else float32",
    )
    train.add_argument(
        "--compile",
        choices=COMPILE_SETTINGS,
        help="on: the fused VAE loss and its gradient under torch.compile (a one-time compile "
        "of seconds to a minute); auto: only for runs long enough to pay for it",
    )
    add_threads(train, None)  # None: the config's train.threads
    add_tensorboard(train, "to DIR/<run id>")
    add_out(train, None, "folder for metrics.json, checkpoint.pt, config and figures "
                         "(default: a new runs/train-<date>-<time>)")
    train.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the run in DIR from its last checkpoint (--epochs may extend it)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument(
        "--distributed", type=int, nargs="?", const=0, metavar="N",
        help="data-parallel training in N processes on this machine; without N, as one rank "
             "of a torchrun group",
    )
    add_reporting(train)
    train.set_defaults(func=_train, summary=_train_summary)

    evaluate = commands.add_parser("evaluate", help="re-evaluate a saved model")
    evaluate.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                          help="a checkpoint.pt written by train")
    evaluate.add_argument("--data", type=str, metavar="PATH", help="evaluate on this file instead")
    add_eval_particles(evaluate, 1000)
    add_seed(evaluate)
    evaluate.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                          help="where to evaluate")
    add_out(evaluate, None, "folder for metrics.json (not a training run's folder)")
    add_reporting(evaluate)
    evaluate.set_defaults(func=_evaluate, summary=_evaluate_summary)

    sample = commands.add_parser("sample", help="draw new examples from a saved model")
    sample.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                        help="a checkpoint.pt written by train")
    sample.add_argument("-n", type=int, default=64, help="samples in the grid")
    add_seed(sample)
    sample.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where to sample")
    sample.add_argument("--out", type=Path, default=Path("samples.png"), metavar="FILE.png",
                        help="the image (a run's own files are kept unless --overwrite)")
    sample.add_argument("--overwrite", action="store_true",
                        help="replace what --out already holds")
    add_reporting(sample)
    sample.set_defaults(func=_sample, summary=_sample_summary)

    configs = commands.add_parser("configs", help="list the shipped configs, or show one")
    configs.add_argument("name", nargs="?", help="a shipped config's name: print its TOML")
    add_reporting(configs)
    configs.set_defaults(func=_configs, summary=_configs_summary)
