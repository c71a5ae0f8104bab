"""How many intra-op threads training uses: the cores this process may use, less those that
other processes keep busy.

Torch's default is one thread per physical core.  On a busy machine that is too many: the
threads of a parallel region wait for each other at its end, and a thread that shares its
core with another busy process makes all of them wait (issue 22 measured 784-400-50 on a
2-core CPU beside one busy process: 0.53-0.59 s per epoch at 2 threads, 0.27 s at 1).
So ``train.threads = "auto"`` chooses

    threads = max(1, min(round(usable - load), floor(quota), limit))

with ``usable`` the CPUs in the affinity mask (:func:`os.sched_getaffinity`), ``quota`` the
cgroup CPU quota in cores (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us``
in v1; none: no limit), ``load`` the cores that other processes kept busy over
:data:`WINDOW` seconds (``/proc/stat``'s busy ticks of those CPUs less this process's own CPU
time; where there is no ``/proc/stat``, the 1-minute load average), ``limit`` torch's thread
count at the time (its default, ``OMP_NUM_THREADS``, or what the caller set), and ``round``
halves up.  A quiet 2-core machine gets 2 (torch's default), one busy process on it 1.

The load average is only the fallback: it lags by a minute (a job started 10 s ago shows
as 0.15), counts processes waiting for a disk, and on many container hosts is the whole
host's; ``/proc/stat`` over a quarter second answers at once for the CPUs in the mask.

The load is measured once per process, at its first training run (:func:`cpus_at_start`),
and not again between epochs: every run of a process then gets the same choice, so runs
that are compared (a resume against the uninterrupted run, the routes of ``compare``) use
the same threads.  The model's size is left out: whether small products gain from a second
thread could not be measured on the busy machine this was written on.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..progress import say

__all__ = [
    "MAX_THREADS",
    "WINDOW",
    "CpuState",
    "check_threads",
    "choose_threads",
    "cpu_ticks",
    "cpus_at_start",
    "measure_cpus",
    "parse_quota",
    "read_quota",
    "resolve_threads",
    "running_threads",
    "using_threads",
]

MAX_THREADS = 1024  # train.threads' upper bound: far above any machine this package trains on
WINDOW = 0.25  # seconds of /proc/stat: 25 clock ticks per CPU, a resolution of 0.04 cores


@dataclass(frozen=True)
class CpuState:
    """What the process may use and what other processes use.

    ``usable``: CPUs in the affinity mask; ``quota``: the cgroup CPU quota in cores (None: no
    limit); ``load``: cores kept busy by other processes; ``source``: how ``load`` was
    measured ("load": ``/proc/stat`` over :data:`WINDOW` s; "load average": the 1-minute
    load average), None where neither is available (``load`` 0).
    """

    usable: int
    quota: float | None
    load: float
    source: str | None


def choose_threads(usable: int, quota: float | None, load: float, *, limit: int | None = None,
                   source: str | None = "load") -> tuple[int, str]:
    """(threads, reason): the intra-op threads for ``usable`` CPUs of which ``load`` cores are
    busy with other processes, under a CPU ``quota`` (cores, None: none) and at most ``limit``
    threads (None: no limit); the reason names the inputs, e.g. ``auto: 2 usable cores,
    load 1.3``.

    threads = max(1, min(floor(usable - load + 1/2), floor(quota), limit)).
    """
    threads = math.floor(usable - load + 0.5)
    reason = f"auto: {usable} usable core{'s' if usable != 1 else ''}"
    if quota is not None:
        threads = min(threads, math.floor(quota))
        reason += f", CPU quota {quota:g}"
    reason += f", {source} {load:.1f}" if source else ", no load information"
    if limit is not None and limit < threads:
        threads = limit
        reason += f", torch's {limit} thread{'s' if limit != 1 else ''} at most"
    return max(1, threads), reason


def resolve_threads(setting: int | str, cpus: CpuState | None = None,
                    name: str = "train.threads") -> tuple[int, str]:
    """(threads, reason) for the setting ``name`` (``train.threads``, ``gaps --threads``): a
    number as it is; ``"auto"``: :func:`choose_threads` on ``cpus`` (default
    :func:`cpus_at_start`), at most torch's present thread count."""
    if setting != "auto":
        return int(setting), f"set by {name}"
    cpus = cpus or cpus_at_start()
    return choose_threads(cpus.usable, cpus.quota, cpus.load, limit=torch.get_num_threads(),
                          source=cpus.source)


@contextmanager
def running_threads(setting: int | str, *, name: str = "train.threads",
                    announce: bool = False) -> Iterator[tuple[int, str]]:
    """The block run at :func:`resolve_threads`'s choice for ``setting``, printed first
    (``threads: N (reason)``) if ``announce``; yields (threads, reason) for ``metrics.json``."""
    threads, reason = resolve_threads(setting, name=name)
    if announce:
        say(f"threads: {threads} ({reason})")
    with using_threads(threads):
        yield threads, reason


@contextmanager
def using_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op thread count set to ``threads`` inside, as it was after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_threads(value, name: str = "train.threads") -> None:
    """A :class:`UserError` unless ``value`` is ``"auto"`` or a count from 1 to
    :data:`MAX_THREADS`; the message names the setting ``name``."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                           and 1 <= value <= MAX_THREADS):
        return
    raise UserError(f'{name} must be "auto" or an integer from 1 to {MAX_THREADS}, '
                    f"got {value!r}")


@functools.cache
def cpus_at_start() -> CpuState:
    """:func:`measure_cpus` at the first call in this process, the same state after."""
    return measure_cpus()


def measure_cpus(window: float = WINDOW) -> CpuState:
    """The CPUs this process may use and the cores other processes keep busy on them now:
    ``/proc/stat`` over ``window`` seconds (this process sleeps meanwhile; its own CPU time
    is subtracted all the same), else the 1-minute load average."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(
        os.cpu_count() or 1)
    usable, quota = len(cpus), read_quota()
    before, cpu_time, start = _stat_ticks(cpus), time.process_time(), time.perf_counter()
    if before is not None:
        time.sleep(window)
        after = _stat_ticks(cpus)
        own = (time.process_time() - cpu_time) / (time.perf_counter() - start)  # cores
        if after is not None and after[1] > before[1]:
            busy = usable * (after[0] - before[0]) / (after[1] - before[1])
            return CpuState(usable, quota, min(float(usable), max(0.0, busy - own)), "load")
    try:
        return CpuState(usable, quota, os.getloadavg()[0], "load average")
    except (AttributeError, OSError):  # Windows; a system that does not say
        return CpuState(usable, quota, 0.0, None)


def cpu_ticks(stat: str, cpus: Collection[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks since boot of the CPUs ``cpus``, from the text of
    ``/proc/stat``; None if it lists none of them.

    A ``cpuN`` line holds user nice system idle iowait irq softirq steal (guest time is
    inside user); busy is all but idle and iowait, steal included (a hypervisor gave it to
    another machine)."""
    busy = total = 0
    seen = False
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(value) for value in rest.split()[:8]]
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
            seen = True
    return (busy, total) if seen else None


def _stat_ticks(cpus: Collection[int]) -> tuple[int, int] | None:
    try:
        return cpu_ticks(Path("/proc/stat").read_text(), cpus)
    except (OSError, ValueError, IndexError):  # no /proc (macOS, Windows), or another format
        return None


def parse_quota(quota: str, period: str) -> float | None:
    """Cores a CFS quota allows, quota / period microseconds; None for no limit ("max" in
    cgroup v2's ``cpu.max``, -1 in v1's ``cpu.cfs_quota_us``)."""
    if quota.strip() in ("max", "-1"):
        return None
    return int(quota) / int(period)


def read_quota(root: Path = Path("/sys/fs/cgroup"),
               own_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """This process's cgroup CPU quota in cores, None where there is none (or none readable):
    cgroup v2's ``cpu.max`` of the process's own group, then of the root; v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``."""
    v2 = [root / "cpu.max"]
    try:
        for line in own_cgroup.read_text().splitlines():
            if line.startswith("0::/") and line.strip() != "0::/":
                v2.insert(0, root / line[4:].strip() / "cpu.max")
    except OSError:
        pass
    for path in v2:
        try:
            return parse_quota(*path.read_text().split()[:2])
        except (OSError, ValueError, TypeError, ZeroDivisionError):
            continue
    for folder in ("cpu", "cpu,cpuacct"):
        try:
            return parse_quota((root / folder / "cpu.cfs_quota_us").read_text(),
                               (root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return None
