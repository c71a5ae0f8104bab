"""One owner per run folder: a command holds an exclusive lock on ``DIR/.pyro-vae.lock``
from the moment it starts writing there until it ends.

The lock is ``flock`` on an open file, so the operating system releases it when the
process ends in any way (even ``kill -9``): a lock file left behind by a dead process is
never mistaken for a live one; it is taken over with a notice.  The file holds the
holder's process id, command and start time, so a second command on the same folder
exits 2 naming the holder.  A process that a launcher started for the same run (``train
--distributed N``) may write where its parent holds the lock.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import sys
import time
from pathlib import Path

from ..errors import UserError

__all__ = ["LOCK_NAME", "claim_folder", "release_folders"]

LOCK_NAME = ".pyro-vae.lock"

_held: dict[Path, int] = {}  # folder (resolved) -> the open, locked file descriptor


def _holder(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    started = time.strftime("%H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"process {holder.get('pid', '?')} ({holder.get('command', '?')}, started {started})"


def claim_folder(folder: Path) -> None:
    """Hold ``folder``'s lock for this process; a :class:`UserError` if another holds it."""
    key = folder.resolve()
    if key in _held:
        return
    lock = folder / LOCK_NAME
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(lock)
            if holder.get("pid") == os.getppid():  # our launcher: the same run
                return
            raise UserError(f"--out {folder} is in use by {_describe(holder)}; wait for it to "
                            "end or choose another folder") from None
        if os.fstat(fd).st_ino != getattr(_stat(lock), "st_ino", None):
            os.close(fd)  # the file was removed while we waited for it: lock the new one
            continue
        break
    previous = _holder(lock)
    if previous and previous.get("pid") != os.getpid():
        print(f"pyro-vae: {folder} was left locked by {_describe(previous)}, which ended "
              "without releasing it; taking it over", file=sys.stderr)
    os.ftruncate(fd, 0)
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:120] if sys.argv else "?"
    os.write(fd, json.dumps({"pid": os.getpid(), "command": command,
                             "started": time.time()}).encode())
    _held[key] = fd


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def release_folders() -> None:
    """Give up every folder this process holds (the end of a command, or of the process)."""
    for folder, fd in list(_held.items()):
        (folder / LOCK_NAME).unlink(missing_ok=True)  # before unlocking: no one waits on it
        os.close(fd)
        del _held[folder]


atexit.register(release_folders)
