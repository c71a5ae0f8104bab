"""``pyro-vae compare``: the parser; the comparison is :mod:`pyro_vae.experiments.compare`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..experiments.compare import run_compare
from ..experiments.compare_models import BUDGETS, COMPARE_MODELS, CompareRun
from .common import (
    add_eval_particles,
    add_idata,
    add_out,
    add_reporting,
    add_tensorboard,
    add_train_particles,
    fresh_out,
)

__all__ = ["add_command"]


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    names = [name.strip() for name in args.inference.split(",") if name.strip()]
    return run_compare(CompareRun(
        model=args.model, inference=names, out=args.out or fresh_out("compare"),
        overwrite=args.overwrite,
        seeds=args.seeds, particles=args.train_particles, eval_particles=args.eval_particles,
        epochs=args.epochs, steps=args.steps, samples=args.samples, warmup=args.warmup,
        chains=args.chains, config=args.config, overrides=list(args.set),
        reference=args.reference, idata=args.idata, tensorboard=args.tensorboard,
    ))


# what each budget flag counts and which algorithms read it; the defaults are appended
_BUDGET_HELP = {
    "epochs": "passes over the training data of the vae (default: the config's train.epochs)",
    "steps": "SVI steps of each fit: toy's svi and ELBO names, gmm's vi",
    "samples": "NUTS draws per chain: toy's nuts and nuts-latent, gmm's nuts",
    "warmup": "NUTS warm-up steps per chain (default: as many as --samples)",
    "chains": "NUTS chains, run one after another: toy's nuts and nuts-latent, gmm's nuts",
}


def _budget_help(budget: str) -> str:
    """The flag's help with each model's default, e.g. "... (default: toy 300, gmm 200)"."""
    defaults = [f"{name} {COMPARE_MODELS.get(name).defaults[budget]}"
                for name in COMPARE_MODELS.names() if budget in COMPARE_MODELS.get(name).defaults]
    text = _BUDGET_HELP[budget]
    return f"{text} (default: {', '.join(defaults)})" if defaults else text


def _summary(m: dict[str, Any]) -> list[str]:
    return [f"{len(m['table'])} rows x {m['seeds']} seed(s) in {m['seconds']:.0f} s; "
            f"table: {m['files']['markdown']}, figure: {m['files']['figure']}"]


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``pyro-vae compare`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "compare", help="run inference algorithms side by side on one model",
        description="Train each algorithm on the same data, seeds and budget; write one table "
                    "(CSV, Markdown, PNG) of mean and sd over seeds, one row per algorithm.",
    )
    parser.add_argument("--model", required=True, choices=COMPARE_MODELS.names(),
                        help="the model every algorithm is fitted to")
    parser.add_argument("--inference", required=True, metavar="A,B,C",
                        help="vae: ELBO names (e.g. trace,meanfield,iwae,renyi); toy: routes "
                             "mle,svi,nuts,nuts-latent and ELBO names (SVI with that ELBO); "
                             "gmm: map,vi,nuts")
    parser.add_argument("--reference", action="store_true",
                        help="toy, gmm: add a row for the true parameters of the simulated "
                             "data (off by default: one row per name asked)")
    parser.add_argument("--config", type=Path, help="VAE config (TOML)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one VAE config entry (repeatable)")
    # named for what they count; one that no algorithm asked for reads is refused
    for budget in BUDGETS:
        parser.add_argument(f"--{budget}", type=int, metavar="N", help=_budget_help(budget))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 per algorithm")
    add_train_particles(parser, 5)
    add_eval_particles(parser, 1000)
    add_out(parser, None, "folder for comparison.csv/.md/.png and metrics.json (default: a new "
                          "runs/compare-<date>-<time>)")
    add_idata(parser, "write each algorithm's seed-0 posterior as ArviZ InferenceData to "
                      "FILE.<algorithm>.nc (algorithms with posterior draws)")
    # the flag of train, toy and gmm, same help (cli/common.py could hold it once)
    add_tensorboard(parser)
    add_reporting(parser)
    parser.set_defaults(func=_compare, summary=_summary)
