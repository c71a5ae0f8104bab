"""What every command shares: one-line usage errors, exit codes, and the shared flags.

Each shared flag (``--out``, ``--overwrite``, ``--seed``, ``--idata``, ``--json``,
``--debug``) is written here once, with its help text and its check; a command adds the
ones it has.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "HelpFormatter",
    "Parser",
    "add_eval_particles",
    "add_idata",
    "add_out",
    "add_reporting",
    "add_seed",
    "add_train_particles",
    "fresh_out",
    "nats",
    "netcdf_path",
]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's convention for a run ended by Ctrl-C


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default where it has one (not for unset flags and switches)."""

    def _get_help_string(self, action: argparse.Action) -> str:  # argparse's extension point
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other user error, and
    whose ``--help`` shows every flag's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 (argparse API)
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def nats(value: float | None, digits: int = 2) -> str:
    """A log-density for a summary line; ``None`` (no density, e.g. a point mass) as n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def netcdf_path(text: str) -> Path:
    """``--idata``'s type: a file name ending in .nc (checked before any fitting starts)."""
    path = Path(text)
    if path.suffix != ".nc":
        raise argparse.ArgumentTypeError(f"{text}: give a NetCDF file name ending in .nc")
    if not path.parent.is_dir():  # never create folders outside --out
        raise argparse.ArgumentTypeError(f"{text}: the folder {path.parent} does not exist; "
                                         "create it first")
    return path


def fresh_out(command: str) -> Path:
    """The default run folder: ``runs/<command>-<date>-<time>``, new for every run (a second
    run in the same second gets ``-2``, ``-3``...), so a run without ``--out`` is never
    refused; an explicit ``--out`` that holds a run is (unless ``--overwrite``)."""
    stem = Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = stem, 1
    while out.exists():
        n += 1
        out = stem.with_name(f"{stem.name}-{n}")
    return out


def add_out(parser: argparse.ArgumentParser, default: Path | None, help: str,
            overwrite: bool = True) -> None:
    """``--out DIR`` (the run folder) and, unless ``overwrite`` is False, ``--overwrite``."""
    parser.add_argument("--out", type=Path, default=default, metavar="DIR", help=help)
    if overwrite:
        parser.add_argument("--overwrite", action="store_true",
                            help="replace what --out already holds")


def add_seed(parser: argparse.ArgumentParser, default: int | None = 0) -> None:
    """``--seed S``: every random number of the run follows from it."""
    parser.add_argument("--seed", type=int, default=default,
                        help="random seed (same seed, same numbers on a CPU)")


def add_train_particles(parser: argparse.ArgumentParser, default: int | None) -> None:
    """``--train-particles K``: Monte Carlo samples per example in each training step."""
    parser.add_argument("--train-particles", type=int, default=default, metavar="K",
                        help="particles per example in each training step (K of iwae, renyi)")


def add_eval_particles(parser: argparse.ArgumentParser, default: int | None) -> None:
    """``--eval-particles K``: importance samples per example for the test log-likelihood."""
    parser.add_argument("--eval-particles", type=int, default=default, metavar="K",
                        help="importance samples per example for the test log p(x)")


# NUTS chains of the commands' own routes: 2 is the fewest with a between-chain R-hat, and the
# chains run one after another on a laptop's cores, each adding its whole time
CHAINS = 2


def add_chains(parser: argparse.ArgumentParser, default: int = CHAINS) -> None:
    """``--chains C``: NUTS chains, run one after another; R-hat compares them."""
    parser.add_argument("--chains", type=int, default=default, metavar="C",
                        help="NUTS chains, run one after another (R-hat compares them); 2, the "
                             "fewest with a between-chain R-hat, since each chain adds its whole "
                             "time (use 4 for a final analysis)")


def add_tensorboard(parser: argparse.ArgumentParser, where: str = "under DIR") -> None:
    """``--tensorboard DIR``: TensorBoard event files (the optional ``tensorboard`` package)."""
    parser.add_argument("--tensorboard", type=Path, metavar="DIR",
                        help=f"write TensorBoard event files {where} (needs the tensorboard "
                             "package; then: tensorboard --logdir DIR)")


def _threads(text: str) -> int | str:
    """``--threads``' type: ``auto`` or a whole number (its range is checked where it is used)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a number of threads (1, 2, ...) or auto") from None


def add_threads(parser: argparse.ArgumentParser, default: int | str | None) -> None:
    """``--threads N|auto``: torch's intra-op threads (``pyro_vae.train.threads``)."""
    parser.add_argument("--threads", type=_threads, default=default, metavar="N|auto",
                        help="torch's intra-op threads; auto (the default): the usable cores "
                             "less those other processes keep busy")


def add_idata(parser: argparse.ArgumentParser, help: str) -> None:
    """``--idata FILE.nc``: ArviZ InferenceData written to NetCDF."""
    parser.add_argument("--idata", type=netcdf_path, metavar="FILE.nc", help=help)


def add_reporting(parser: argparse.ArgumentParser) -> None:
    """``--json`` (the metrics as the last stdout line) and ``--debug`` (tracebacks)."""
    parser.add_argument(
        "--json", action="store_true", help="print the metrics as the last stdout line"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
