"""``pyro-vae toy``."""

from __future__ import annotations

import argparse

from ..experiments import toy as experiment
from .common import add_reporting

__all__ = ["add_command"]


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``pyro-vae toy`` to the CLI's subcommands."""
    experiment.add_command(commands, add_reporting)
