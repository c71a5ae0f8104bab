"""Where a training step's time goes: torch.profiler's self CPU time of ``fit`` epochs, by kind.

The default VAE (784-400-50) on mnist5k, ``fit`` as ``pyro-vae train`` runs it (the config's
``elbo``), one warm-up epoch per route (a ``--precisions`` entry, compiled or not), then
``--repeats`` profiled epochs of each, the routes taking turns in a shuffled order (a single
epoch's profile moves by tens of percent with this machine's phases).  Every operator's self
time goes to one kind:

    matrix products   aten::mm, addmm, bmm (forward and backward)
    casts             aten::copy_, _to_copy (autocast's bfloat16 copies and their gradients)
    random draws      aten::bernoulli_, normal_, uniform_ (binarization, reparameterization)
    Adam              aten::_fused_adam_ and the optimizer's other foreach kernels
    NaN guard         the gradients' norm and the non-finite flag (aten::_foreach_norm,
                      linalg_vector_norm, isfinite, logical_not, stack)
    generated kernels with ``compile=on``: the compiled graph's own kernels (inductor's
                      element-wise and reduction loops; the products it calls are
                      "matrix products") and Dynamo's check of the graph's guards
    other             every other operator: element-wise terms, reductions, indexing

and the table gives each kind's median over the turns, in milliseconds per step and as a share
of the medians' sum (the "total").  The
profiler's own overhead inflates small operators, so the shares, not the absolute times, are
what to compare (route against route, precision against precision).  With ``--compiled`` each
precision is profiled with ``compile="on"`` too (after a warm-up epoch that compiles; the
profiled run's own compile check adds one graph call to its 32 steps).

    python benchmarks/step_profile.py [--batch-size 128] [--precisions float32,bfloat16]
        [--compiled] [--repeats 5] [--train-size N] [--threads N]
        [--markdown docs/results/step_profile.md]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from common import setup, take_turns, write_markdown
from torch.profiler import ProfilerActivity, profile

from pyro_vae.train import fit

KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
    "casts": ("aten::copy_", "aten::_to_copy"),
    "random draws": ("aten::bernoulli_", "aten::normal_", "aten::uniform_"),
    "NaN guard": ("aten::_foreach_norm", "aten::linalg_vector_norm", "aten::isfinite",
                  "aten::logical_not", "aten::stack"),
    "Adam": ("aten::_fused_adam_",),
    "generated kernels": ("TorchDynamo Cache Lookup",),
}
OTHER = "other"
# the profiler's name of a call of a compiled graph: "## Call CompiledFxGraph <hash> ##"
GRAPH_CALL = "## Call CompiledFxGraph"


def kind_of(name: str) -> str | None:
    """The kind of the profiler event ``name``: its entry in :data:`KINDS`; the optimizer's
    other foreach kernels are Adam's (``_foreach_norm``, the guard's, is named there); None
    for events that are not operators (Python-level ranges, whose self time is overhead)."""
    for kind, names in KINDS.items():
        if name in names:
            return kind
    if name.startswith(GRAPH_CALL):
        return "generated kernels"
    if not name.startswith("aten::"):
        return None
    return "Adam" if name.startswith("aten::_foreach_") else OTHER


def epoch_profiler(precision: str, batch_size: int, data, compile: str = "off"):
    """A callable that profiles one more ``fit`` epoch of its own copy of the model (after a
    warm-up epoch, run here) and returns {kind: self CPU microseconds}."""
    config, x_train, _, transform, model0, guide0, *_ = data
    model, guide = copy.deepcopy(model0), copy.deepcopy(guide0)
    options = dict(batch_size=batch_size, elbo=config.inference.elbo, lr=config.train.lr,
                   batch_transform=transform, progress=False, precision=precision,
                   compile=compile)
    fit(model, guide, x_train, epochs=1, **options)

    def profiled() -> dict[str, float]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fit(model, guide, x_train, epochs=1, **options)
        times = dict.fromkeys([*KINDS, OTHER], 0.0)
        for event in prof.key_averages():
            kind = kind_of(event.key)
            if kind is not None:
                times[kind] += event.self_cpu_time_total
        return times

    return profiled


def markdown(rows: dict[str, tuple[dict[str, float], int]]) -> str:
    """Two columns per route: each kind's share of the operators' time and ms per step."""
    precisions = list(rows)
    lines = ["| kind | " + " | ".join(f"{p}: share | {p}: ms/step" for p in precisions) + " |",
             "|---|" + "---:|---:|" * len(precisions)]
    for kind in [*KINDS, OTHER, "total"]:
        cells = []
        for times, steps in rows.values():
            total = sum(times.values())
            value = total if kind == "total" else times[kind]
            cells.append(f"{value / total:.1%} | {value / steps / 1e3:.2f}")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Profile the epochs; returns {route: ({kind: us}, steps)} and the table (a route is a
    precision, or a precision and ", compiled")."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--compiled", action="store_true",
                        help="also profile each precision with compile='on'")
    parser.add_argument("--repeats", type=int, default=5,
                        help="profiled epochs per route, taken in turns (medians)")
    parser.add_argument("--train-size", type=int, help="cut (or tile) the training rows to N")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--markdown", help="also write the table to this file (the README's "
                                           "docs/results/step_profile.md)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config, x_train, *rest = setup()
    if args.train_size:
        x_train = x_train.repeat(-(-args.train_size // x_train.shape[0]), 1)[: args.train_size]
    data = (config, x_train, *rest)
    precisions = args.precisions.split(",")
    routes = {p: epoch_profiler(p, args.batch_size, data) for p in precisions}
    if args.compiled:
        routes |= {f"{p}, compiled": epoch_profiler(p, args.batch_size, data, compile="on")
                   for p in precisions}
    steps = -(-x_train.shape[0] // args.batch_size)
    profiles = take_turns(args.repeats, routes, shuffle_seed=0)
    rows = {route: ({kind: statistics.median(times[kind] for times in turns)
                     for kind in [*KINDS, OTHER]}, steps)
            for route, turns in profiles.items()}
    table = markdown(rows)
    intro = (f"`fit` epochs of {x_train.shape[0]} mnist5k rows at batch {args.batch_size}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}: the operators' self "
             "CPU time by kind (torch.profiler; its overhead inflates small operators), each "
             f"kind's median over {args.repeats} profiled epochs per route, the routes taking "
             "turns.")
    print(f"{intro}\n\n{table}")
    if args.markdown:
        write_markdown(args.markdown, "step_profile.py", False,
                       f"Measured {time.strftime('%Y-%m-%d')}. {intro}", table)
    return {"rows": rows, "table": table}


if __name__ == "__main__":
    main()
