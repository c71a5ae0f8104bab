"""What every MNIST source shares: the arrays it returns, the exception that passes the turn
to the next source, and the one-line messages of progress and failure."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

__all__ = ["MnistArrays", "SourceUnavailable", "one_line", "say"]


@dataclass
class MnistArrays:
    """MNIST as integers, before any scaling.

    Attributes
    ----------
    x_train, x_test : np.ndarray of uint8, shape (N, 784)
        Grey levels 0..255, rows are 28x28 images in row-major order.
    y_train, y_test : np.ndarray of uint8, shape (N,)
        Digit labels 0..9.
    source : str
        Where the arrays came from, for messages.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


class SourceUnavailable(Exception):
    """One source cannot deliver MNIST here; the message says why (one line)."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (whitespace runs collapsed), else its type's name."""
    return " ".join(str(exc).split()) or type(exc).__name__


def say(message: str) -> None:
    """One progress line, ``pyro-vae: message``, to stderr (stdout stays the command's own
    output)."""
    print(f"pyro-vae: {message}", file=sys.stderr, flush=True)
