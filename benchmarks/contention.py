"""Training beside busy processes: ``fit`` at the auto thread count and at fixed ones, the plain
PyTorch loop and NumPyro, in examples per second.

For each setting of ``--busy`` helper processes (default 0, 1 and 3), each a pure Python loop
that ends after ``--helper-seconds`` or when its setting ends, whichever is first: after the
helpers have run ``--settle`` seconds, the auto choice is made as ``pyro-vae train`` makes it
at start-up (:func:`pyro_vae.train.threads.measure_cpus`: the affinity mask, the cgroup quota
and the cores busy over a quarter second of ``/proc/stat``), then these routes take turns
(``common.median_seconds``: the noise of a shared machine hits all alike):

- ``fit``, auto: ``fit`` at the auto choice (``vae_throughput.fit_route``, the config's ELBO and
  precision, as ``pyro-vae train`` runs it);
- ``fit`` at each of ``--threads`` (default 1, 2 and torch's default);
- the plain PyTorch loop (:mod:`pyro_vae.lecture.plain_vae`) at torch's default threads;
- NumPyro's VAE (``vs_numpyro.numpyro_examples_per_second``: a warm-up epoch that compiles,
  then one timed epoch), where numpyro and jax are installed.

Each turn of a PyTorch route is two epochs of which the second is timed; the table gives the
median examples per second over ``--repeats`` turns, and the ratios auto / best fixed thread
count and auto / NumPyro (the targets of issue 22: >= 0.9 and >= 0.8).

    python benchmarks/contention.py [--busy 0,1,3] [--repeats 5] [--threads 1,2]
        [--batch-size 128] [--train-size N] [--markdown docs/results/contention.md] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pyro
import torch
from common import median_seconds, setup, write_markdown
from vae_throughput import fit_route

from pyro_vae.lecture.plain_vae import plain_optimizer, train_plain_epoch
from pyro_vae.train.threads import measure_cpus, resolve_threads, using_threads

try:  # written beside this benchmark; numpyro and jax are the optional ``bench`` extra
    from vs_numpyro import numpyro_available, numpyro_examples_per_second
except ImportError:
    def numpyro_available() -> bool:
        return False

# a busy helper: a pure Python loop (one core, no threads) that ends by itself at its deadline;
# the first line names it, so that a test can see that none is left behind
HELPER = ("# contention.py busy helper\nimport sys, time\n"
          "end = time.monotonic() + float(sys.argv[1])\n"
          "while time.monotonic() < end:\n    pass\n")


@contextmanager
def busy_helpers(count: int, seconds: float) -> Iterator[list[subprocess.Popen]]:
    """``count`` helper processes, each ending after ``seconds`` or when the block ends."""
    helpers = [subprocess.Popen([sys.executable, "-c", HELPER, str(seconds)])
               for _ in range(count)]
    try:
        yield helpers
    finally:
        for helper in helpers:
            helper.terminate()
        for helper in helpers:
            helper.wait()


def routes_for(auto: int, counts: list[int], args, data) -> dict:
    """Route name -> a callable that trains one turn and returns the timed epoch's seconds."""
    config, x_train, _, transform, model0, guide0, encoder, decoder = data
    batch, elbo, precision = args.batch_size, config.inference.elbo, config.train.precision

    def at(threads: int, epoch):
        def turn() -> float:
            with using_threads(threads):
                return epoch()
        return turn

    def fit_epoch():  # its own copies of the networks, trained on from turn to turn
        return fit_route(model0, guide0, x_train, batch, transform, elbo, [],
                         precision=precision)

    routes = {"fit, auto": at(auto, fit_epoch())}
    for threads in counts:
        routes[f"fit, {threads} thread{'s' if threads > 1 else ''}"] = at(threads, fit_epoch())
    encoder, decoder = copy.deepcopy(encoder), copy.deepcopy(decoder)
    optimizer = plain_optimizer(encoder, decoder, config.train.lr)
    routes[f"plain PyTorch, {torch.get_num_threads()} threads"] = lambda: (
        train_plain_epoch(encoder, decoder, optimizer, x_train, batch, transform),
        train_plain_epoch(encoder, decoder, optimizer, x_train, batch, transform))[1]
    if args.numpyro:
        x_grey, n = x_train.numpy(), x_train.shape[0]
        routes["NumPyro"] = lambda: n / numpyro_examples_per_second(x_grey, batch, 1, args.seed)
    return routes


def run_setting(busy: int, counts: list[int], args, data) -> dict:
    """One setting: the helpers, the auto choice, the routes' examples per second."""
    n = data[1].shape[0]
    with busy_helpers(busy, args.helper_seconds) as helpers:
        time.sleep(args.settle)  # the helpers are spinning before anything is measured
        auto, reason = resolve_threads("auto", measure_cpus())
        print(f"{busy} busy: threads {auto} ({reason})", flush=True)
        seconds = median_seconds(args.repeats, routes_for(auto, counts, args, data))
        ended = sum(helper.poll() is not None for helper in helpers)
    speed = {name: n / value for name, value in seconds.items()}
    fixed = [name for name in speed if name.startswith("fit, ") and name != "fit, auto"]
    best = max(fixed, key=speed.get)
    return {"busy": busy, "threads": auto, "reason": reason, "speed": speed, "best": best,
            "auto_vs_best": speed["fit, auto"] / speed[best],
            "auto_vs_numpyro": speed["fit, auto"] / speed["NumPyro"] if "NumPyro" in speed
            else None, "helpers_ended_early": ended}


def markdown(rows: list[dict], args, n: int) -> str:
    """The table: one row per setting, examples per second of each route and the ratios."""
    names = list(rows[0]["speed"])
    lines = ["| busy processes | auto's choice | " + " | ".join(names)
             + " | auto / best count | auto / NumPyro |",
             "|---:|---|" + "---:|" * (len(names) + 2)]
    for r in rows:
        versus = "n/a" if r["auto_vs_numpyro"] is None else f"{r['auto_vs_numpyro']:.2f}"
        cells = " | ".join(f"{r['speed'][name]:,.0f}" for name in names)
        lines.append(f"| {r['busy']} | {r['threads']} ({r['reason']}) | {cells} "
                     f"| {r['auto_vs_best']:.2f} (best: {r['best'][5:]}) | {versus} |")
    lines.append(
        f"\nExamples per second, median of {args.repeats} turn{'s' if args.repeats > 1 else ''}, "
        f"{n} dynamically binarized mnist5k training images, batch {args.batch_size}, "
        "784-400-50. Busy processes: pure Python loops, one core each. auto's choice is made "
        "in each setting "
        f"{args.settle:g} s after the helpers started, as `pyro-vae train` makes it at start-up "
        "(load: the cores other processes kept busy over 0.25 s of /proc/stat). Targets: "
        "auto / best count >= 0.90, auto / NumPyro >= 0.80.")
    if any(r["helpers_ended_early"] for r in rows):
        lines.append("\nSome helpers ended before their setting did: raise --helper-seconds.")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", default="0,1,3", help="busy helper processes per setting")
    parser.add_argument("--repeats", type=int, default=5, help="turns per setting")
    parser.add_argument("--threads", default="1,2",
                        help="fixed thread counts for fit (torch's default is added)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-size", type=int, help="the first N training images only")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds the helpers run before the auto choice is made")
    parser.add_argument("--helper-seconds", type=float, default=1800.0,
                        help="each helper ends after this long even if its setting has not")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-numpyro", dest="numpyro", action="store_false",
                        help="leave NumPyro out even where it is installed")
    parser.add_argument("--markdown", help="also write the table to this file (the README's "
                                           "docs/results/contention.md)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny setting (tests): 0 and 1 busy, 512 images, one turn")
    args = parser.parse_args(argv)
    if args.quick:
        args.busy, args.repeats, args.train_size = "0,1", 1, 512
        args.settle, args.helper_seconds = 0.5, 300.0
    args.numpyro = args.numpyro and numpyro_available()
    default = torch.get_num_threads()
    counts = sorted({*(int(t) for t in args.threads.split(",")), default})
    header = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
              f"average {os.getloadavg()[0]:.1f} at the start, torch {torch.__version__} "
              f"({default} threads by default), pyro {pyro.__version__}"
              + ("" if args.numpyro else ", NumPyro not run"))
    print(header, flush=True)
    data = setup(seed=args.seed)
    if args.train_size:
        data = (data[0], data[1][:args.train_size], *data[2:])
    rows = [run_setting(int(busy), counts, args, data) for busy in args.busy.split(",")]
    table = markdown(rows, args, data[1].shape[0])
    print(f"\n{table}")
    if args.markdown:
        write_markdown(args.markdown, "contention.py", args.quick,
                       f"Measured {time.strftime('%Y-%m-%d')}, the routes taking turns in each "
                       f"setting: {header}.", table)
    return {"rows": rows, "table": table}


if __name__ == "__main__":
    main()
