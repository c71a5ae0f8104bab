"""The command line, the face of the package: argparse, exit codes, printing."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
