"""``pyro-vae toy``: fit theta = (a, b, mu) of z ~ Uniform(a, b), x | z ~ Normal(mu, z).

The flags become a :class:`~pyro_vae.experiments.uniform_scale.ToyRun`;
:func:`~pyro_vae.experiments.uniform_scale.run_toy` does the work, and this module prints its one
summary line (``main`` prints the metrics as JSON after it, with ``--json``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..experiments.uniform_scale import Simulation, ToyRun, run_toy
from ..inference.uniform_scale import ToyOptions, toy_inference_names
from ..models.uniform_scale import check_theta
from .common import (
    add_chains,
    add_idata,
    add_out,
    add_reporting,
    add_seed,
    add_tensorboard,
    add_train_particles,
)

__all__ = ["add_command"]


def _parse_simulate(spec: str) -> Simulation:
    """``"a,b,mu,N"`` -> :class:`Simulation` with 0 < a < b and N >= 2, else :class:`UserError`.

    Parsed here rather than by an argparse ``type`` so that its errors read
    "pyro-vae toy: error: --simulate ...", not "argument --simulate: invalid value".
    """
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 4:
        raise UserError(f"--simulate wants a,b,mu,N (four numbers), got {spec!r}")
    try:
        a, b, mu, n_float = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"--simulate wants four numbers a,b,mu,N, got {spec!r}") from None
    check_theta(a, b, mu)
    if not (math.isfinite(n_float) and n_float == int(n_float) and n_float >= 2):
        raise UserError(f"--simulate: N must be a whole number >= 2, got {parts[3]}")
    return Simulation(a, b, mu, int(n_float))


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """The flags -> :class:`ToyRun` -> :func:`run_toy`."""
    options = ToyOptions(steps=args.steps, lr=args.lr, num_particles=args.train_particles,
                         warmup=args.warmup, samples=args.samples, chains=args.chains)
    data = _parse_simulate(args.simulate) if args.simulate is not None else args.data
    metrics = run_toy(ToyRun(inference=args.inference, data=data, seed=args.seed, out=args.out,
                             overwrite=args.overwrite, idata=args.idata, options=options,
                             tensorboard=args.tensorboard))
    return metrics


def _summary(m: dict[str, Any]) -> list[str]:
    elbo = "" if m["elbo"] is None else f"  ELBO {m['elbo']:.4f}"
    lines = [f"{m['inference']}: a={m['a']:.4f} b={m['b']:.4f} mu={m['mu']:.4f}"
             f"  log p(x) {m['log_likelihood']:.4f} nats/point{elbo}  ({m['seconds']:.1f} s)"]
    if "chains" in m:  # NUTS
        r_hat = max(m[f"{k}_r_hat"] for k in ("a", "b", "mu"))
        lines.append(f"NUTS: {m['chains']} chain(s) x {m['samples']} draws, max R-hat "
                     f"{r_hat:.3f}, {m['divergences']} divergences")
    return lines


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``pyro-vae toy`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "toy", help="fit the toy model z ~ Uniform(a, b), x | z ~ Normal(mu, z)",
        description="Fit theta = (a, b, mu) of the uniform-scale toy model; report the exact "
                    "log-likelihood per point at the fitted theta.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="PATH.npy", help="1-D array of N points")
    source.add_argument("--simulate", metavar="a,b,mu,N", help="draw N points at this theta")
    parser.add_argument("--inference", required=True, choices=toy_inference_names(),
                        help="a route (mle, svi, nuts, nuts-latent) or an ELBO's name (svi with "
                             "that ELBO)")
    add_seed(parser)
    add_out(parser, None, "folder for metrics.json and figures")
    add_idata(parser, "write ArviZ InferenceData (posterior, predictive, exact marginal "
                      "log-likelihood for az.loo); mle and svi: draws of a Gaussian at the "
                      "estimate")
    defaults = ToyOptions()
    parser.add_argument("--steps", type=int, default=defaults.steps, help="SVI steps")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="SVI learning rate")
    add_train_particles(parser, defaults.num_particles)
    parser.add_argument("--warmup", type=int, default=defaults.warmup,
                        help="NUTS warm-up steps per chain")
    parser.add_argument("--samples", type=int, default=defaults.samples,
                        help="NUTS draws per chain")
    add_chains(parser)  # ToyOptions keeps 1 chain for its Python callers (see there)
    # the flag of train, gmm and compare, same help (cli/common.py could hold it once)
    add_tensorboard(parser)
    add_reporting(parser)
    parser.set_defaults(func=_run, summary=_summary)
