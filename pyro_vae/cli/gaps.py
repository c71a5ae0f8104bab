"""The ``gaps`` command: the amortization and approximation gaps of a trained VAE."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..experiments.gaps import GapsOptions, run_gaps
from .common import (
    add_eval_particles,
    add_out,
    add_reporting,
    add_seed,
    add_threads,
    fresh_out,
    nats,
)

__all__ = ["add_command"]


def _gaps(args: argparse.Namespace) -> dict[str, Any]:
    options = GapsOptions(
        images=args.images, eval_particles=args.eval_particles, ais_steps=args.ais_steps,
        ais_chains=args.ais_chains, leapfrog=args.leapfrog, refine_steps=args.refine_steps,
        refine_particles=args.refine_particles, flow_layers=args.flow_layers,
        nuts_images=args.nuts_images, nuts_samples=args.nuts_samples,
        nuts_chains=args.nuts_chains, seed=args.seed, threads=args.threads,
    )
    return run_gaps(args.checkpoint, args.out or fresh_out("gaps"), options,
                    overwrite=args.overwrite, progress=not args.quiet)


def _summary(m: dict[str, Any]) -> list[str]:
    cell = lambda key: f"{nats(m[key]['mean'])} +- {nats(m[key]['se'])}"  # noqa: E731
    lines = [
        f"{m['data']}, {m['num_images']} images: log p(x) {cell('log_px')} (IS "
        f"{cell('log_px_is')}, AIS {cell('log_px_ais')}); ELBO q {cell('elbo_q')}, "
        f"q* {cell('elbo_q_star')}, flow {cell('elbo_flow')} nats per image",
        f"approximation gap {cell('approximation_gap')}, amortization gap "
        f"{cell('amortization_gap')}, flow gain {cell('flow_gain')} nats per image",
    ]
    for row in m["nuts"]:
        lines.append(f"NUTS image {row['image']}: min ESS {row['min_ess']:.0f}, max R-hat "
                     f"{row['max_r_hat']:.3f}, {row['divergences']} divergences; mean error "
                     f"(posterior sds) q {row['mean_error_q']:.2f}, q* "
                     f"{row['mean_error_q_star']:.2f}")
    lines.append(f"table: {m['files']['table']}; per image: {m['files']['per_image']}")
    return lines


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``gaps`` to the CLI's subcommands."""
    defaults = GapsOptions()
    gaps = commands.add_parser(
        "gaps", help="amortization and approximation gaps of a trained VAE (IS, AIS, q*, flow, "
                     "NUTS)")
    gaps.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                      help="a checkpoint.pt written by train")
    gaps.add_argument("--images", type=int, default=defaults.images, metavar="N",
                      help="the first N test images of the checkpoint's data")
    add_eval_particles(gaps, defaults.eval_particles)
    gaps.add_argument("--ais-steps", type=int, default=defaults.ais_steps, metavar="T",
                      help="annealing steps of AIS from p(z) to p(z | x)")
    gaps.add_argument("--ais-chains", type=int, default=defaults.ais_chains, metavar="C",
                      help="AIS chains per image")
    gaps.add_argument("--leapfrog", type=int, default=defaults.leapfrog, metavar="L",
                      help="leapfrog steps of each AIS transition (HMC)")
    gaps.add_argument("--refine-steps", type=int, default=defaults.refine_steps, metavar="S",
                      help="Adam steps fitting q* and the flow to each image (a fixed budget)")
    gaps.add_argument("--refine-particles", type=int, default=defaults.refine_particles,
                      metavar="M", help="draws per refinement step")
    gaps.add_argument("--flow-layers", type=int, default=defaults.flow_layers,
                      help="IAF layers of the per-image flow (0: no flow)")
    gaps.add_argument("--nuts-images", type=int, default=defaults.nuts_images,
                      help="images whose posterior NUTS samples (0: none)")
    gaps.add_argument("--nuts-samples", type=int, default=defaults.nuts_samples,
                      help="NUTS draws per chain, after as many warm-up steps")
    gaps.add_argument("--nuts-chains", type=int, default=defaults.nuts_chains,
                      help="NUTS chains per image")
    add_seed(gaps)
    add_threads(gaps, defaults.threads)
    add_out(gaps, None, "folder for metrics.json, gaps.csv, gaps.md and the figures "
                        "(default: a new runs/gaps-<date>-<time>)")
    gaps.add_argument("--quiet", action="store_true", help="no progress lines")
    add_reporting(gaps)
    gaps.set_defaults(func=_gaps, summary=_summary)
