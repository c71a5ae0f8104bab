"""``pyro-vae``: the parser of every command, and ``main``, which runs one and reports.

``pyro-vae --import MODULE <command> ...`` imports a plugin module first (see
:mod:`pyro_vae.plugins`), so the names it registers are valid choices of every command.
Every command writes ``metrics.json`` to ``--out`` (``sample`` writes the image),
ends with a short summary on stdout (its ``summary`` function: the headline numbers and
where the files are) and, with ``--json``, prints the metrics as the last stdout line.  Errors
a user can cause end with exit status 2 and one line on stderr; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable
from contextlib import contextmanager
from importlib.metadata import version

import pyro

from ..errors import UserError
from ..experiments.ownership import release_folders
from ..experiments.runs import strict_json
from ..plugins import import_plugins
from ..train import TrainingInterrupted
from . import compare, gaps, gmm, toy, vae
from .common import EXIT_INTERRUPTED, EXIT_USER_ERROR, Parser

__all__ = ["main", "build_parser"]

# each module adds its commands; a new command is a module with add_command, listed here
COMMAND_MODULES = (vae, gmm, toy, compare, gaps)

# what the machine, not the program, ran out of while writing results
RESOURCE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def build_parser() -> argparse.ArgumentParser:
    """The ``pyro-vae`` parser with every command's subparser."""
    parser = Parser(prog="pyro-vae", description="Latent-variable generative models in Pyro.")
    parser.add_argument("--version", action="version", version=f"pyro-vae {version('pyro-vae')}")
    add_imports(parser)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMAND_MODULES:
        module.add_command(commands)
    return parser


@contextmanager
def owned_folders_released():
    """The run folders a command claimed are released when it ends, however it ends."""
    try:
        yield
    finally:
        release_folders()


def add_imports(parser: argparse.ArgumentParser) -> None:
    """``--import MODULE``, repeatable: a plugin to import before anything else."""
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE", help="import a plugin module that registers priors, "
                        "likelihoods, guides, ELBOs... (repeatable; ./MODULE.py works)")


def main(argv: list[str] | None = None) -> int:
    """Run ``pyro-vae <argv>``; the exit status (0, 2 for a user error, 130 for Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # plugins first: the parser's choices (--elbo, --dataset...) list what they register
    plugin_flags = argparse.ArgumentParser(add_help=False)
    add_imports(plugin_flags)
    plugin_flags.add_argument("command_line", nargs=argparse.REMAINDER)  # from the command on
    try:
        import_plugins(plugin_flags.parse_known_args(argv)[0].imports)
    except UserError as exc:
        print(f"pyro-vae: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (exit 2) and --help (exit 0) as return codes
        return int(exc.code or 0)
    args.argv = argv  # to start more processes with
    args.entry = main  # what those processes run (train --distributed)
    command: Callable[[argparse.Namespace], dict] = args.func
    try:
        with pyro.validation_enabled(True), owned_folders_released():
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
    except OSError as exc:
        if args.debug or exc.errno not in RESOURCE_ERRORS:
            raise  # anything else is a bug: keep its traceback
        print(f"pyro-vae {args.command}: error: cannot write {exc.filename or 'a file'} "
              f"({exc.strerror}); free space or choose another --out", file=sys.stderr)
        return EXIT_USER_ERROR
    except SystemExit as exc:  # the status of processes it started (train --distributed)
        return int(exc.code or 0)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which saves and says so)
        print(f"pyro-vae {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if metrics:  # a distributed run's other ranks have nothing to report
        for line in args.summary(metrics):  # for people: the headline numbers, the files
            print(line)
        if args.json:  # for programs
            print(strict_json(metrics))
    return 0
