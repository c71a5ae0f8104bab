"""Files written whole or not at all.

Everything pyro-vae writes for a user (metrics, reports, configs, checkpoints, predictions,
figures, tables, ArviZ exports, the data cache) goes first to a temporary file beside its target
and is renamed over the target only once complete.  A rename within one folder is atomic, so a
run killed or stopped by a full disk midway leaves the old file or the new one at the target,
never half of one, and readers running at the same time (the ranks of a distributed run) never
see a partial file.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_path",
    "atomic_write",
    "remove_orphaned_temporaries",
    "write_csv_atomically",
    "write_text_atomically",
]


@contextmanager
def _renamed_into_place(path: str | Path) -> Iterator[tuple[Path, int]]:
    """(a fresh temporary file beside ``path``, a descriptor open for writing it), renamed over
    ``path`` when the block ends without an exception, deleted when it raises.

    The name is ``.<name>.<8 hex digits>.tmp`` in ``path``'s folder (created if missing), new per
    call, so writers at once never share one; the file gets the permissions a plain
    ``open(path, "w")`` would (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        yield tmp, fd
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; renamed over ``path`` when the block
    ends without an exception, deleted (``path`` untouched) when it raises.

    ``durable`` flushes the bytes to the disk before the rename and the rename itself after it
    (fsync), for files that must survive a power cut, not only a killed process.
    """
    with _renamed_into_place(path) as (_, fd), os.fdopen(fd, "wb") as file:
        yield file
        if durable:
            file.flush()
            os.fsync(file.fileno())
    if durable:
        folder = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file's path for writers that take a file name, not a file (NetCDF's); the
    file is renamed over ``path`` when the block ends without an exception, deleted when it
    raises.  The writer must overwrite the (empty) file at that name."""
    with _renamed_into_place(path) as (tmp, fd):
        os.close(fd)
        yield tmp


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`; the path."""
    with atomic_write(path) as file:
        file.write(text.encode("utf-8"))
    return Path(path)


def write_csv_atomically(path: str | Path, rows: Iterable[Iterable]) -> Path:
    """Write ``rows`` (the header first) as CSV (``csv.writer``'s dialect, UTF-8) to ``path``
    through :func:`atomic_write`; the path."""
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    return write_text_atomically(path, text.getvalue())

def remove_orphaned_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writes killed midway left in ``folder`` (every
    ``.<name>.<...>.tmp``: this module's and a checkpoint's ``.prev.tmp`` link); call it only
    while owning the folder, when no write there can be under way.  The paths removed."""
    orphans = sorted(Path(folder).glob(".*.*.tmp"))
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans
