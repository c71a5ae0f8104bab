"""The toy model's four inference routes on the same simulated data: the README's table.

z ~ Uniform(a, b), x | z ~ Normal(mu, z), 5000 points simulated at (a, b, mu) = (0.5, 2, 1),
seed 0. Each route is one ``pyro-vae toy`` command, run in turn (one at a time: two torch
processes on two cores slow each other):

* ``mle``: exact maximum likelihood (L-BFGS on the E1 closed form), Hessian standard errors;
* ``svi``: an amortized guide on (a, b), 1500 steps;
* ``nuts``: NUTS over theta with z integrated out exactly, 2 chains of 200 + 200;
* ``nuts-latent``: NUTS with z as latent variables, 1 chain of 200 + 200 (its runs are slow).

    python benchmarks/toy_routes.py --out runs/toy_routes --markdown docs/results/toy_routes.md

A route whose ``metrics.json`` is already under ``--out`` is not run again (``--rerun`` forces
it), so a table can be completed across sessions; ``--quick`` runs 300 points and short
chains (a check of the script, not of the numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pyro_vae.cli import main as pyro_vae

SIMULATION = "0.5,2.0,1.0,5000"
ROUTES = {  # name -> (extra flags, what the table's first column says)
    "mle": ([], "`mle` exact maximum likelihood (L-BFGS on the E1 closed form)"),
    "svi": ([], "`svi` amortized guide on (a, b), 1500 steps"),
    "nuts": (["--chains", "2"],
             "`nuts` over theta, z integrated out exactly, 2 chains x (200 + 200)"),
    "nuts-latent": (["--chains", "1"],
                    "`nuts-latent` with z as latent variables, 1 chain x (200 + 200)"),
}
QUICK_SIMULATION = "0.5,2.0,1.0,300"
QUICK = ["--samples", "20", "--warmup", "20", "--steps", "50"]


def run_route(name: str, out: Path, quick: bool, rerun: bool) -> dict:
    """The ``metrics.json`` of ``pyro-vae toy --inference NAME`` in ``out/NAME``."""
    folder = out / name
    if not rerun and (folder / "metrics.json").is_file():
        return json.loads((folder / "metrics.json").read_text())
    flags = ["--simulate", QUICK_SIMULATION, *QUICK] if quick else ["--simulate", SIMULATION]
    status = pyro_vae(["toy", *flags, "--inference", name, *ROUTES[name][0], "--out",
                       str(folder), "--overwrite"])
    if status != 0:
        raise SystemExit(f"pyro-vae toy --inference {name} exited with {status}")
    return json.loads((folder / "metrics.json").read_text())


def number(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, dict], simulation: str) -> str:
    rows = []
    for name, m in results.items():
        seconds = f"{m['seconds']:.1f}" if m["seconds"] < 100 else f"{m['seconds']:.0f}"
        rows.append(f"| {ROUTES[name][1]} | {number(m['a'], 4)} | {number(m['b'], 4)} "
                    f"| {number(m['mu'], 4)} | {number(m['log_likelihood'], 5)} "
                    f"| {number(m.get('elbo'), 5)} | {seconds} |")
    mle = results.get("mle", {})
    nuts = [m for m in results.values() if "chains" in m]
    notes = []
    if mle.get("a_se") is not None:
        notes.append(f"`mle` standard errors (Hessian): a {mle['a_se']:.3f}, b {mle['b_se']:.3f}, "
                     f"mu {mle['mu_se']:.3f}; exact mean log p(x) at the true theta "
                     f"{mle['true_log_likelihood']:.5f}")
    for m in nuts:
        r_hat = [m[f"{p}_r_hat"] for p in ("a", "b", "mu") if m[f"{p}_r_hat"] is not None]
        ess = [m[f"{p}_ess"] for p in ("a", "b", "mu") if m[f"{p}_ess"] is not None]
        notes.append(f"`{m['inference']}`: posterior means of {m['chains']} chain(s) x "
                     f"{m['samples']} draws, {m['divergences']} divergences, max R-hat "
                     f"{max(r_hat, default=float('nan')):.3f}, bulk ESS "
                     f"{min(ess, default=float('nan')):.0f}-{max(ess, default=float('nan')):.0f}")
    if "svi" in results:
        notes.append(f"`svi`: ELBO gap log p(x) - ELBO {results['svi']['elbo_gap']:.4f} nats per "
                     f"point, score-function / reparameterized gradient variance "
                     f"{results['svi']['gradient_variance_ratio']:.2f}")
    return "\n".join([
        "<!-- written by benchmarks/toy_routes.py -->",
        f"`pyro-vae toy --simulate {simulation} --inference ROUTE`, measured "
        f"{time.strftime('%Y-%m-%d')} on the 2-core CPU (seconds: the fit alone, wall time):",
        "",
        "| route (`--inference`) | a | b | mu | log p(x) / point | ELBO / point | seconds |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *(f"- {note}" for note in notes),
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/toy_routes"))
    parser.add_argument("--routes", default=",".join(ROUTES),
                        help=f"comma-separated, of {', '.join(ROUTES)}")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--rerun", action="store_true", help="run finished routes again")
    parser.add_argument("--quick", action="store_true", help="300 points, short runs")
    args = parser.parse_args(argv)
    names = args.routes.split(",")
    unknown = sorted(set(names) - set(ROUTES))
    if unknown:
        parser.error(f"unknown route(s) {', '.join(unknown)}; choose from {', '.join(ROUTES)}")
    results = {name: run_route(name, args.out, args.quick, args.rerun) for name in names}
    text = table(results, QUICK_SIMULATION if args.quick else SIMULATION)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
