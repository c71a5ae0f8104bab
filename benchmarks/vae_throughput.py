"""Pyro VAE training vs a hand-written PyTorch VAE: seconds per epoch, side by side.

Same networks (784-400-50), same initial weights, same dynamically binarized
mini-batches of mnist5k, same learning rate.  The routes take turns (the noise
of a shared machine hits all alike), each turn two epochs of which the second is
timed (the first warms the caches and, for ``fit``, carries the one-time set-up,
reported separately); the table gives the median seconds per epoch, examples per
second and the throughput ratio route / plain (>= 1 means as fast as plain
PyTorch).  ``fit`` routes run the package's training loop; ``loop`` routes run a
bare loss/backward/step loop to measure one ingredient at a time.  The plain
reference stays plain: eager, ``torch.optim.Adam`` with its defaults.

``fit(precision="bfloat16")`` computes the loss under bfloat16 autocast (mixed
precision: float32 parameters, gradients and optimizer).

Then: the test ELBO after each of ``--quality-epochs``' epoch counts of ``fit(elbo="fused")`` in
float32 and in bfloat16, and of the plain loop, from the same weights, and Pyro's
own VAE example loop against ours (``vs_pyro_example.py``).

    python benchmarks/vae_throughput.py [--repeats 5] [--batch-sizes 128,1024] [--threads N]
        [--quality-epochs 10,30] [--quality-seeds 0,1,2] [--example-epochs 10] [--thread-sweep]
        [--routes WORD,...] [--compile] [--device cpu] [--train-size N] [--markdown FILE]

On a GPU (``--device cuda --train-size 60000``: mnist5k's training images tiled to
full MNIST size) the epochs are timed to the GPU's end of work; ``--compile`` adds
``torch.compile`` of the fused loss in a bare loop (and, on CUDA, its CUDA-graph mode) and
``fit`` with ``compile="on"`` in float32 and bfloat16, the compile counted as one-time.  A
route that fails in its first epoch (a compiler that cannot handle it) is reported and dropped.
``benchmarks/gpu_check.sh`` is the whole device check in one command.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import statistics
import sys
import time
import warnings
from unittest import mock

import pyro
import torch
from common import median_seconds, plain_test_elbo, setup, test_elbo, write_markdown
from vs_pyro_example import compare_threads

from pyro_vae.data import minibatch_indices
from pyro_vae.elbos import make_elbo
from pyro_vae.lecture.plain_vae import plain_optimizer, train_plain_epoch
from pyro_vae.train import fit


def fit_route(model0, guide0, x, batch_size, transform, elbo, setup_seconds: list, **options):
    """One timed ``fit`` epoch (the second of two) of copies of ``model0`` and ``guide0``
    (trained on from turn to turn); the first epoch's extra time -> ``setup_seconds``.

    ``options`` go to ``fit`` (``precision``, ``compile``); a compile counts as set-up."""
    model, guide = copy.deepcopy(model0), copy.deepcopy(guide0)

    def epoch():
        result = fit(
            model,
            guide,
            x,
            epochs=2,
            batch_size=batch_size,
            elbo=elbo,
            batch_transform=transform,
            progress=False,
            **options,
        )
        first, second = result.seconds_per_epoch
        setup_seconds.append(first - second + result.compile_seconds)
        return second

    return epoch


def loop_route(loss, params, x, batch_size, transform, fused_adam=False, patches=()):
    """A bare training loop: ``loss(x_batch)``, backward, Adam step (persistent optimizer)."""
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=fused_adam or None)
    n = x.shape[0]

    def epoch():
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            start = time.perf_counter()
            for idx in minibatch_indices(n, batch_size, device=x.device):
                value = loss(transform(x[idx]) if transform else x[idx])
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
            if x.is_cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - start

    return epoch


def elbo_loop_route(model0, guide0, x, batch_size, transform, elbo_name, particles=1,
                    fused_adam=False, patches=(), compiled=None):
    """:func:`loop_route` over copies of ``model0`` and ``guide0`` and the ELBO ``elbo_name``
    (a name in ELBOS, or an ELBO object), its loss optionally under ``torch.compile(mode=...)``."""
    model, guide = copy.deepcopy(model0), copy.deepcopy(guide0)
    elbo = make_elbo(elbo_name, particles) if isinstance(elbo_name, str) else elbo_name
    n = x.shape[0]
    loss = lambda batch: elbo.differentiable_loss(model, guide, batch, n=n)  # noqa: E731
    if compiled:
        loss = torch.compile(loss, mode=compiled)
    params = [*model.parameters(), *guide.parameters()]
    return loop_route(loss, params, x, batch_size, transform, fused_adam, patches)


class _JitEpoch(contextlib.AbstractContextManager):
    """Entered for each epoch of the JIT route (re-enterable): a param store of its own (the
    traced function takes the store's entries as its inputs, and the other routes' copies of
    the networks register theirs under the same names), and torch's "torch.jit.trace is
    deprecated" notice, which Pyro's JIT ELBOs raise on every call, hidden."""

    def __init__(self):
        self._state = {"params": {}, "constraints": {}}

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(pyro.get_param_store().scope(self._state))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=".*torch.jit.trace. is deprecated")

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)


def routes_for(batch_size, args, x_train, transform, model0, guide0, encoder, decoder, lr):
    """name -> one-epoch callable, plus the set-up seconds lists of the fit routes."""
    plain_opt = plain_optimizer(encoder, decoder, lr)
    routes = {
        "plain PyTorch (reference)": lambda: train_plain_epoch(
            encoder, decoder, plain_opt, x_train, batch_size, transform
        )
    }
    fits = {f"fit, elbo={e}": (e, {}) for e in ("trace", "meanfield", "fused_trace", "fused")}
    fits["fit, elbo=fused, precision=bfloat16"] = ("fused", {"precision": "bfloat16"})
    if args.compile:  # fit's own compiled step (train.compile = "on")
        fits["fit, elbo=fused, compile=on"] = ("fused", {"compile": "on"})
        fits["fit, elbo=fused, precision=bfloat16, compile=on"] = (
            "fused", {"precision": "bfloat16", "compile": "on"})
    setups = {name: [] for name in fits}
    for name, (elbo, options) in fits.items():
        routes[name] = fit_route(
            model0, guide0, x_train, batch_size, transform, elbo, setups[name], **options
        )

    def loop(elbo_name, particles=1, fused_adam=False, patches=(), compiled=None):
        return elbo_loop_route(model0, guide0, x_train, batch_size, transform, elbo_name,
                               particles, fused_adam, patches, compiled)

    no_module = mock.patch("pyro.module", lambda name, module, **kwargs: module)
    routes["loop: Trace_ELBO, torch Adam"] = loop("trace")
    routes["loop: Trace_ELBO without pyro.module"] = loop("trace", patches=(no_module,))
    # JitTrace_ELBO: JitTraceMeanField_ELBO re-traces on every call in Pyro 1.9.2 (it tests
    # for an attribute it never sets), which would measure torch.jit.trace, not the ELBO
    jit = pyro.infer.JitTrace_ELBO(max_plate_nesting=1, ignore_jit_warnings=True)
    routes["loop: JitTrace_ELBO (torch.jit.trace), torch Adam"] = loop(
        jit, patches=(_JitEpoch(),)
    )
    routes["loop: fused, torch Adam"] = loop("fused")
    routes["loop: fused, fused Adam"] = loop("fused", fused_adam=True)
    routes["loop: Trace_ELBO, 4 vectorized particles"] = loop("trace", particles=4)
    routes["loop: fused, 4 vectorized particles, fused Adam"] = loop("fused", 4, fused_adam=True)
    if args.compile:
        routes["loop: torch.compile(fused), fused Adam"] = loop(
            "fused", fused_adam=True, compiled="default"
        )
        if x_train.is_cuda:
            routes["loop: torch.compile(fused, CUDA graphs), fused Adam"] = loop(
                "fused", fused_adam=True, compiled="reduce-overhead"
            )
    return routes, setups


def throughput_table(batch_size, args, data) -> None:
    config, x_train, _, transform, model0, guide0, encoder, decoder = data
    encoder, decoder = copy.deepcopy(encoder), copy.deepcopy(decoder)
    routes, setups = routes_for(
        batch_size, args, x_train, transform, model0, guide0, encoder, decoder, config.train.lr
    )
    if args.routes:  # keep the reference and the routes whose names contain a given word
        words = args.routes.split(",")
        routes = {
            name: epoch
            for k, (name, epoch) in enumerate(routes.items())
            if k == 0 or any(word in name for word in words)
        }
    first = {}  # the first epoch of every route: one-time costs (compilation) show here
    for name, epoch in list(routes.items()):
        try:
            first[name] = epoch()
        except Exception as exc:  # noqa: BLE001 - a benchmark reports a route it cannot run
            if name == "plain PyTorch (reference)":
                raise
            print(f"route {name!r} dropped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            del routes[name]
    # every route's timed epoch follows an untimed one of its own (fit's two epochs do this
    # by themselves): otherwise the routes that follow others start with cold caches
    warm = {
        name: epoch if name in setups else (lambda epoch=epoch: (epoch(), epoch())[1])
        for name, epoch in routes.items()
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seconds = median_seconds(args.repeats, warm)
    n = x_train.shape[0]
    plain = seconds["plain PyTorch (reference)"]
    print(
        f"\nbatch {batch_size}: {n} examples, {-(-n // batch_size)} steps per epoch, "
        f"median of {args.repeats} turns"
    )
    print("| route | s/epoch | examples/s | ratio vs plain | one-time s |\n|---|---|---|---|---|")
    for name, s in seconds.items():
        once = setups[name][0] if name in setups else first[name] - s  # fit's first run's
        print(f"| {name} | {s:.3f} | {n / s:,.0f} | {plain / s:.2f} | {max(once, 0.0):.2f} |")
    if "fit, elbo=fused" in seconds and "fit, elbo=trace" in seconds:
        fused = seconds["fit, elbo=fused"]
        print(
            f"fit(elbo='fused') / plain throughput ratio at batch {batch_size} = "
            f"{plain / fused:.2f} (target >= 1.0 on CPU, >= 0.9 on GPU); "
            f"fit(elbo='trace') = {plain / seconds['fit, elbo=trace']:.2f}"
        )
    if caught:
        print("warnings during the timed epochs:", sorted({str(w.message)[:100] for w in caught}))


def thread_sweep(args, data, batch_size: int = 128) -> None:
    """Plain and ``fit(elbo="fused")`` at 1 thread and at one per core, taking turns."""
    config, x_train, _, transform, model0, guide0, encoder, decoder = data
    chosen = torch.get_num_threads()
    routes = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        plain_encoder, plain_decoder = copy.deepcopy(encoder), copy.deepcopy(decoder)
        optimizer = plain_optimizer(plain_encoder, plain_decoder, config.train.lr)
        fused = fit_route(model0, guide0, x_train, batch_size, transform, "fused", [])

        def plain(e=plain_encoder, d=plain_decoder, o=optimizer):
            return train_plain_epoch(e, d, o, x_train, batch_size, transform)

        for name, epoch in (
            (f"plain, {threads} thread(s)", plain),
            (f"fit fused, {threads} thread(s)", fused),
        ):
            routes[name] = lambda epoch=epoch, threads=threads: (
                torch.set_num_threads(threads),
                epoch(),
            )[1]
    seconds = median_seconds(args.repeats, routes)
    torch.set_num_threads(chosen)
    n = x_train.shape[0]
    print(
        f"\ntorch.set_num_threads at batch {batch_size} ({os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}), median of {args.repeats} turns"
    )
    print("| route | s/epoch | examples/s |\n|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.3f} | {n / value:,.0f} |")


def quality(args) -> None:
    """Test ELBO after the same epochs: fit(elbo="fused") in float32 and in bfloat16, and
    the plain loop, from the same weights, for each epoch count of ``--quality-epochs``.

    One row per seed (the seed fixes the initial weights and the random numbers, which the
    loops draw in the same order: shuffle, binarization, noise u), and the mean differences;
    float32's is floating-point round-off (summed vs mean loss, fused vs foreach Adam).
    bfloat16's decides whether ``precision = "auto"`` may be the default: within 0.3 nats of
    float32 at every epoch count, on every seed.
    """
    for epochs in (int(e) for e in args.quality_epochs.split(",")):
        quality_table(epochs, [int(s) for s in args.quality_seeds.split(",")], args.device)


def quality_table(epochs: int, seeds: list[int], device: str) -> None:
    """:func:`quality` for one epoch count."""
    rows = []
    for seed in seeds:
        config, x_train, x_test, transform, model, guide, encoder, decoder = setup(
            device=device, seed=seed
        )
        model0, guide0 = copy.deepcopy(model), copy.deepcopy(guide)
        t = config.train
        row = {"seed": seed}
        for precision in ("float32", "bfloat16"):
            trained = copy.deepcopy(model0), copy.deepcopy(guide0)
            result = fit(
                *trained,
                x_train,
                epochs=epochs,
                batch_size=t.batch_size,
                lr=t.lr,
                elbo="fused",
                seed=seed,
                batch_transform=transform,
                progress=False,
                precision=precision,
            )
            seconds = statistics.mean(result.seconds_per_epoch)
            row[precision] = (test_elbo(*trained, x_test), seconds)
        pyro.set_rng_seed(seed)
        optimizer = plain_optimizer(encoder, decoder, t.lr)
        plain_s = [
            train_plain_epoch(encoder, decoder, optimizer, x_train, t.batch_size, transform)
            for _ in range(epochs)
        ]
        row["plain"] = (
            plain_test_elbo(model0, guide0, encoder, decoder, x_test),
            statistics.mean(plain_s),
        )
        rows.append(row)
    print(
        f"\ntest ELBO after {epochs} epochs (batch {t.batch_size}, 1000 binarized "
        f"test images, 100 particles each, nats per example)"
    )
    print(
        "| seed | fit, elbo=fused | plain PyTorch | fused - plain | fused, bfloat16 | "
        "bfloat16 - float32 | s/epoch fused / bfloat16 / plain |\n|---|---|---|---|---|---|---|"
    )
    for row in rows:
        (full, full_s), (half, half_s), (plain, plain_s) = (
            row[k] for k in ("float32", "bfloat16", "plain")
        )
        print(
            f"| {row['seed']} | {full:.3f} | {plain:.3f} | {full - plain:+.3f} | {half:.3f} | "
            f"{half - full:+.3f} | {full_s:.3f} / {half_s:.3f} / {plain_s:.3f} |"
        )
    fused = statistics.mean(row["float32"][0] - row["plain"][0] for row in rows)
    print(f"mean difference (fused float32 - plain) = {fused:+.3f} nats over {len(rows)} seeds "
          f"(target within 0.5)")
    half = [row["bfloat16"][0] - row["float32"][0] for row in rows]
    print(f"bfloat16 - float32 after {epochs} epochs: mean {statistics.mean(half):+.3f}, largest "
          f"|difference| {max(map(abs, half)):.3f} nats over {len(rows)} seeds "
          f"(precision auto may be the default if every one is within 0.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="128,1024")
    parser.add_argument(
        "--threads", type=int, help="torch.set_num_threads (default: torch's choice)"
    )
    parser.add_argument("--quality-epochs", default="10,30",
                        help="epoch counts of the ELBO check, comma-separated (0 skips it)")
    parser.add_argument("--quality-seeds", default="0,1,2")
    parser.add_argument("--example-epochs", type=int, default=10, help="0 skips the Pyro example")
    parser.add_argument(
        "--thread-sweep", action="store_true", help="plain and fused at 1 and all threads"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile of the fused loss"
    )
    parser.add_argument("--routes", help="comma-separated words: time only routes naming one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--train-size", type=int, help="tile the training images to N rows (throughput tables)"
    )
    parser.add_argument("--markdown", help="also write the report to this file (the README's "
                                           "docs/results/vae_throughput.md)")
    args = parser.parse_args()
    report = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, report)):
        run(args)
    if args.markdown:
        title, _, body = report.getvalue().partition("\n")
        write_markdown(args.markdown, "vae_throughput.py", False,
                       f"Measured {time.strftime('%Y-%m-%d')}: {title}", tables_apart(body))


def tables_apart(report: str) -> str:
    """The printed report as Markdown: a blank line after every table's last row, so the line
    that follows (a ratio, a heading) is not read as one more row."""
    lines = report.strip().splitlines()
    spaced = []
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        spaced.append(line)
        if line.startswith("|") and after and not after.startswith("|"):
            spaced.append("")
    return "\n".join(spaced)


class _Tee(io.TextIOBase):
    """A stream that writes to several: the terminal and the report kept for --markdown."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run(args) -> None:
    """The tables ``args`` ask for, printed."""
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""
    print(
        f"VAE 784-400-50 on mnist5k, {args.device}{gpu}, "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
        f"torch {torch.__version__}, "
        f"pyro {pyro.__version__}, {torch.get_num_threads()} threads"
    )
    data = setup(device=args.device)
    if args.train_size:
        config, x_train, *rest = data
        x_train = x_train.repeat(-(-args.train_size // x_train.shape[0]), 1)[: args.train_size]
        data = (config, x_train, *rest)
    for batch_size in (int(b) for b in args.batch_sizes.split(",") if b):
        throughput_table(batch_size, args, data)
    if args.thread_sweep:
        thread_sweep(args, data)
    if args.quality_epochs != "0":
        quality(args)
    if args.example_epochs and args.device == "cpu":
        counts = sorted({1, torch.get_num_threads(), os.cpu_count() or 1})
        compare_threads(counts, args.example_epochs, rounds=2, elbos=("auto", "fused_trace"))


if __name__ == "__main__":
    main()
