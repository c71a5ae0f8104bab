"""The ``pyro-vae`` command line: ``train``, ``evaluate``, ``sample``.

Every command writes ``metrics.json`` to ``--out`` (``sample`` writes the image)
and, with ``--json``, prints the same object as the last line of stdout.  Errors
a user can cause end with exit status 2 and one line on stderr; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch

from . import compare, gmm_cli, toy
from .config import RunConfig, apply_overrides, load_config
from .data import (
    BINARIZE_MODES,
    DATASETS,
    binarize_test_set,
    load_dataset,
    load_evaluation_array,
)
from .errors import UserError
from .experiment import (
    evaluate_vae,
    load_resumable,
    prepare_out,
    restore_vae,
    train_vae,
    write_metrics,
)
from .infer import ELBOS, PRECISIONS, TrainingInterrupted

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's convention for a run ended by Ctrl-C


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other user error."""

    def error(self, message: str):  # noqa: D401 (argparse API)
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def _train(args: argparse.Namespace) -> dict[str, Any]:
    overrides = list(args.set)
    for flag, key in _TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.distributed is not None:
        return _train_distributed(args, load_config(args.config, overrides))
    if args.resume is None:
        config = load_config(args.config, overrides)
        return train_vae(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    payload = load_resumable(args.resume)
    epochs = [item for item in overrides if item.startswith("train.epochs=")]
    if args.config is not None or len(epochs) != len(overrides):
        raise UserError(
            "--resume continues a run with its saved config; only --epochs may be given"
        )
    config = RunConfig.from_dict(apply_overrides(payload["config"], epochs))
    return train_vae(config, args.resume, progress=not args.quiet, resume=payload)


def _train_distributed(args: argparse.Namespace, config: RunConfig) -> dict[str, Any]:
    """``train --distributed``: one rank of a launcher's group, or launch N local processes."""
    import torch.distributed as dist

    from .distributed import init_process_group, launch, under_launcher

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
    code = launch(processes, [a for a in args.argv if a != "--json"])
    if code:
        raise SystemExit(code)
    return json.loads((out / "metrics.json").read_text())


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
    "num_particles_train": "inference.num_particles",
    "eval_particles": "inference.eval_particles",
    "seed": "train.seed",
    "device": "train.device",
    "precision": "train.precision",
}


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
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
    metrics = evaluate_vae(trained, x, args.num_particles, seed=args.seed)
    metrics.update(data=source, num_examples=x.shape[0], checkpoint=str(args.checkpoint))
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_metrics(out, metrics)
    return metrics


def _sample(args: argparse.Namespace) -> dict[str, Any]:
    from .plots import save_sample_grid

    if args.n < 1:
        raise UserError(f"-n must be a positive number of samples, got {args.n}")
    trained = restore_vae(args.checkpoint, args.device)
    if trained.image_shape is None:
        raise UserError("this checkpoint's data are not square images; there is no grid to draw")
    pyro.set_rng_seed(args.seed)
    images = trained.model.sample_means(args.n)
    path = save_sample_grid(images, trained.image_shape, args.out, f"{args.n} samples from p(z)")
    return {"samples": str(path), "n": args.n, "checkpoint": str(args.checkpoint)}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the metrics as the last stdout line"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyro-vae", description="Latent-variable generative models in Pyro.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a VAE and write metrics, checkpoint, figures")
    train.add_argument("--config", type=Path, help="TOML config file (see examples/configs)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config entry (repeatable)",
    )
    train.add_argument("--dataset", choices=DATASETS.names())
    train.add_argument("--data", type=str, metavar="PATH", help="user data, .npy (N x D) or .npz")
    train.add_argument("--data-dir", type=str, help="folder holding MNIST/raw for --dataset mnist")
    train.add_argument("--binarize", choices=BINARIZE_MODES)
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--latent-dim", type=int)
    train.add_argument("--elbo", choices=ELBOS.names())
    train.add_argument(
        "--num-particles", dest="num_particles_train", type=int, help="particles per training step"
    )
    train.add_argument("--eval-particles", type=int, help="K for the test log-likelihood")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", choices=("cpu", "cuda"))
    train.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        help="bfloat16: mixed-precision training loss (faster on AVX512-BF16/AMX CPUs and GPUs)",
    )
    train.add_argument("--out", type=Path, default=Path("runs/train"))
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
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
    _common(train)
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="re-evaluate a saved model")
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("--data", type=str, metavar="PATH", help="evaluate on this file instead")
    evaluate.add_argument("--num-particles", type=int, default=1000)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    evaluate.add_argument("--out", type=Path, help="folder for metrics.json")
    _common(evaluate)
    evaluate.set_defaults(func=_evaluate)

    sample = commands.add_parser("sample", help="draw new examples from a saved model")
    sample.add_argument("--checkpoint", type=Path, required=True)
    sample.add_argument("-n", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    sample.add_argument("--out", type=Path, default=Path("samples.png"))
    _common(sample)
    sample.set_defaults(func=_sample)
    gmm_cli.add_command(commands, _common)
    toy.add_command(commands, _common)
    compare.add_command(commands, _common)
    # more commands register here: module.add_command(commands, _common)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (exit 2) and --help (exit 0) as return codes
        return int(exc.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to start more processes with
    command: Callable[[argparse.Namespace], dict] = args.func
    try:
        with pyro.validation_enabled(True):
            metrics = command(args)
    except TrainingInterrupted as exc:
        print(
            f"pyro-vae {args.command}: {exc}; continue with: pyro-vae train --resume "
            f"{exc.checkpoint.parent if exc.checkpoint else '<run folder>'}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except (UserError, ValueError, FileNotFoundError) as exc:
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"pyro-vae {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except SystemExit as exc:  # the status of processes it started (train --distributed)
        return int(exc.code or 0)
    if args.json and metrics:  # a distributed run's other ranks have nothing to report
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
