"""Progress on stderr: a live bar on a terminal, plain lines in a pipe or a log file.

tqdm redraws its bar with carriage returns, which fill a log with thousands of partial
lines.  :func:`progress_bar` gives tqdm's bar when stderr is a terminal and otherwise a
:class:`PlainProgress` that writes one ordinary line at most every ``every`` seconds
(and none for work shorter than that).  :func:`say` writes a line between bars.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm

__all__ = ["PlainProgress", "live_bars", "progress_bar", "say"]


class PlainProgress:
    """The part of tqdm's interface the package uses, as ``desc: done/total (p%), t s`` lines."""

    def __init__(self, total: int, desc: str, initial: int = 0, every: float = 30.0):
        self.total, self.desc, self.done, self.every = total, desc, initial, every
        self.postfix = ""
        self.start = self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            print(f"{self.desc}: {self.done}/{self.total}{share}, {now - self.start:.0f} s"
                  f"{self.postfix}", file=sys.stderr, flush=True)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = "".join(f", {key}={value}" for key, value in values.items())

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0):
    """A tqdm bar on a terminal, :class:`PlainProgress` lines otherwise, nothing if disabled."""
    if enabled and not sys.stderr.isatty():
        return PlainProgress(total, desc, initial)
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False,
                file=sys.stderr)


def live_bars() -> bool:
    """Whether a redrawn bar (tqdm, Pyro's MCMC progress) belongs on stderr: a terminal."""
    return sys.stderr.isatty()


def say(line: str) -> None:
    """A line of progress on stderr that does not break a live bar."""
    tqdm.write(line, file=sys.stderr)
