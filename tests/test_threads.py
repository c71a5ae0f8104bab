"""The thread count training uses: the rule on explicit inputs (never on this machine's load,
which other work changes), the readers of /proc/stat and the cgroup quota, the config key,
the flag, and what a run prints and records."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_vae.cli import main
from pyro_vae.config import dump_toml, load_config
from pyro_vae.errors import UserError
from pyro_vae.train.threads import (
    MAX_THREADS,
    CpuState,
    choose_threads,
    cpu_ticks,
    cpus_at_start,
    measure_cpus,
    parse_quota,
    read_quota,
    resolve_threads,
    running_threads,
    using_threads,
)

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
TINY = ["--set", "data.dataset='digits'", "--set", "model.latent_dim=2", "--set",
        "model.hidden=[16]", "--set", "inference.eval_particles=5", "--set",
        "data.train_size=400", "--set", "data.test_size=50"]


@pytest.mark.parametrize("usable, quota, load, limit, threads, reason", [
    # a quiet 2-core machine: torch's default there, so `make demo` runs as before
    (2, None, 0.0, None, 2, "auto: 2 usable cores, load 0.0"),
    (2, None, 0.3, 2, 2, "auto: 2 usable cores, load 0.3"),
    # one core taken by another process: one thread (issue 22: twice as fast as two)
    (2, None, 1.3, 2, 1, "auto: 2 usable cores, load 1.3"),
    (2, None, 3.0, 2, 1, "auto: 2 usable cores, load 3.0"),  # at least one
    (4, None, 1.5, None, 3, "auto: 4 usable cores, load 1.5"),  # 2.5 free rounds up
    (16, 1.5, 0.0, None, 1, "auto: 16 usable cores, CPU quota 1.5, load 0.0"),
    (16, 0.5, 0.0, None, 1, "auto: 16 usable cores, CPU quota 0.5, load 0.0"),
    (16, 4.0, 2.0, None, 4, "auto: 16 usable cores, CPU quota 4, load 2.0"),
    (16, None, 9.6, None, 6, "auto: 16 usable cores, load 9.6"),
    (16, None, 2.4, 8, 8, "auto: 16 usable cores, load 2.4, torch's 8 threads at most"),
    (1, None, 0.0, 1, 1, "auto: 1 usable core, load 0.0"),
])
def test_the_rule_on_explicit_inputs(usable, quota, load, limit, threads, reason):
    assert choose_threads(usable, quota, load, limit=limit) == (threads, reason)


def test_the_reason_names_how_the_load_was_measured():
    assert choose_threads(2, None, 1.3, source="load average")[1] == (
        "auto: 2 usable cores, load average 1.3")
    assert choose_threads(2, None, 0.0, source=None) == (
        2, "auto: 2 usable cores, no load information")


@settings(max_examples=300, deadline=None)
@given(usable=st.integers(1, 512), quota=st.none() | st.floats(0.01, 512),
       load=st.floats(0, 1024), more=st.floats(0, 64), limit=st.none() | st.integers(1, 512))
def test_at_least_one_thread_never_more_than_allowed_and_more_load_never_more(
        usable, quota, load, more, limit):
    threads, _ = choose_threads(usable, quota, load, limit=limit)
    assert 1 <= threads <= usable
    assert limit is None or threads <= limit
    assert quota is None or threads <= max(1, quota)
    assert choose_threads(usable, quota, load + more, limit=limit)[0] <= threads


STAT = """cpu  900 0 300 5000 100 0 0 0 0 0
cpu0 100 10 50 1000 40 5 5 0 0 0
cpu1 200 0 50 2000 10 0 0 20 0 0
cpu2 300 0 100 3000 50 0 0 0 7 0
intr 123 4 5
ctxt 999
"""


def test_busy_and_total_ticks_of_the_cpus_in_the_mask():
    # busy: all but idle and iowait (steal counts: another machine had the core)
    assert cpu_ticks(STAT, {0}) == (170, 1210)
    assert cpu_ticks(STAT, {1, 2}) == (270 + 400, 2280 + 3450)
    assert cpu_ticks(STAT, {5}) is None


def test_quota_files_of_cgroup_v2_and_v1(tmp_path):
    assert parse_quota("max", "100000") is None
    assert parse_quota("-1\n", "100000\n") is None
    assert parse_quota("150000", "100000") == 1.5
    own = tmp_path / "self_cgroup"
    own.write_text("0::/\n")
    assert read_quota(tmp_path, own) is None  # nothing readable: no limit
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert read_quota(tmp_path, own) == 2.0  # v1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert read_quota(tmp_path, own) is None  # v2 at the root: no limit
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cpu.max").write_text("50000 100000\n")
    own.write_text("0::/job\n")
    assert read_quota(tmp_path, own) == 0.5  # the process's own group first


def test_a_measurement_here_is_within_its_bounds_and_made_once_per_process():
    cpus = measure_cpus(window=0.05)
    assert 1 <= cpus.usable <= (os.cpu_count() or 1)
    assert 0.0 <= cpus.load and (cpus.source != "load" or cpus.load <= cpus.usable)
    assert cpus.source in ("load", "load average", None)
    assert cpus_at_start() is cpus_at_start()


def test_a_number_is_kept_and_auto_stays_under_torchs_thread_count():
    assert resolve_threads(3) == (3, "set by train.threads")
    quiet = CpuState(usable=8, quota=None, load=0.0, source="load")
    with using_threads(2):
        assert resolve_threads("auto", quiet) == (
            2, "auto: 8 usable cores, load 0.0, torch's 2 threads at most")
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), using_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == before


def test_running_threads_names_its_setting_prints_if_asked_and_restores(capsys):
    before = torch.get_num_threads()
    with running_threads(1, name="--threads", announce=True) as chosen:
        assert chosen == (1, "set by --threads") and torch.get_num_threads() == 1
    assert capsys.readouterr().err == "threads: 1 (set by --threads)\n"
    with running_threads(1):
        pass
    assert capsys.readouterr().err == "" and torch.get_num_threads() == before


def test_the_config_key_defaults_to_auto_and_round_trips():
    assert load_config().train.threads == "auto"
    config = load_config(None, ["train.threads=3"])
    assert config.train.threads == 3
    assert load_config(None, ["train.threads=auto"]).train.threads == "auto"
    assert 'threads = "auto"' in dump_toml(load_config())


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_THREADS + 1), "1.5", "true", "[2]",
                                   "'fast'"])
def test_a_bad_config_value_names_the_key(value):
    with pytest.raises(UserError, match='train.threads must be "auto" or an integer from 1'):
        load_config(None, [f"train.threads={value}"])


@pytest.mark.parametrize("value, message", [
    ("0", 'train.threads must be "auto" or an integer from 1 to 1024, got 0'),
    ("-1", 'train.threads must be "auto" or an integer from 1 to 1024, got -1'),
    ("abc", "argument --threads: 'abc': give a number of threads (1, 2, ...) or auto"),
])
@pytest.mark.parametrize("command", ["train", "gaps"])
def test_a_bad_flag_exits_2_with_one_line(command, value, message, tmp_path, monkeypatch,
                                          capsys):
    """``gaps`` takes the same flag; its message names the flag, ``train``'s the config key
    the flag sets."""
    monkeypatch.chdir(tmp_path)
    argv = [command, "--threads", value]
    if command == "gaps":
        argv += ["--checkpoint", str(tmp_path / "missing.pt")]  # the flag is checked first
        message = message.replace("train.threads", "--threads")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pyro-vae {command}: error: {message}"
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_a_run_prints_and_records_its_threads_and_a_resume_may_change_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    threads, reason = metrics["threads"], metrics["threads_reason"]
    assert 1 <= threads <= (os.cpu_count() or 1) and reason.startswith("auto: ")
    assert err.splitlines()[0] == f"threads: {threads} ({reason})"
    assert metrics["config"]["train"]["threads"] == "auto"
    # the thread count belongs to the machine, not to the run: a resume may set it
    assert main(["train", "--resume", str(out), "--epochs", "2", "--threads", "1"]) == 0
    assert capsys.readouterr().err.splitlines()[0] == "threads: 1 (set by train.threads)"
    resumed = json.loads((out / "metrics.json").read_text())
    assert (resumed["threads"], resumed["threads_reason"]) == (1, "set by train.threads")
    assert resumed["train_elbo"][0] == metrics["train_elbo"][0]


@pytest.mark.slow
def test_contention_benchmark_quick_table_and_no_helper_left(tmp_path):
    """``--quick``: settings of 0 and 1 busy helper, a row each with auto's choice and every
    route's examples per second; the helpers are gone when it ends."""
    markdown = tmp_path / "contention.md"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "contention.py"), "--quick", "--markdown",
         str(markdown)], capture_output=True, text=True, timeout=600, cwd=BENCHMARKS)
    assert completed.returncode == 0, completed.stderr[-2000:]
    text = markdown.read_text()
    assert text.startswith("<!-- written by benchmarks/contention.py --quick -->\n")
    rows = [line for line in text.splitlines() if line.startswith("| 0 |")
            or line.startswith("| 1 |")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        threads = int(cells[1].split()[0])
        assert 1 <= threads <= (os.cpu_count() or 1) and "auto: " in cells[1]
        speeds = [float(cell.replace(",", "")) for cell in cells[2:-2] if cell != "n/a"]
        assert len(speeds) >= 4 and all(speed > 0 for speed in speeds)
    helpers = [path for path in Path("/proc").glob("[0-9]*/cmdline")
               if b"contention.py busy helper" in _read(path)]
    assert helpers == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""
