"""The README's inference-gap table, from the folders ``pyro-vae gaps`` wrote.

    python tools/gaps_table.py --out docs/results/vae_gaps.md \\
        --row "default VAE, full MNIST (30 epochs)=runs/gaps/mnist_default_gaps" \\
        --row "vae_vamp_prior, full MNIST (30 epochs)=runs/gaps/mnist_vamp_gaps" \\
        --command "pyro-vae gaps --checkpoint runs/gaps/NAME/checkpoint.pt --images 100 ..."

One column per run: every quantity's mean over images with its standard error (from the run's
``metrics.json``), the paired difference AIS - IS per image (from its ``gaps.csv``), and the
NUTS images' diagnostics.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from pathlib import Path

QUANTITIES = (  # metrics.json key -> row label
    ("log_px", "log p(x), best of the bounds"),
    ("log_px_is", "log p(x), IS with q (K)"),
    ("log_px_ais", "log p(x), AIS (T)"),
    ("elbo_q", "ELBO(q), the encoder"),
    ("elbo_q_star", "ELBO(q*), refined Gaussian"),
    ("elbo_flow", "ELBO(flow), per-image IAF"),
    ("inference_gap", "inference gap log p(x) - ELBO(q)"),
    ("approximation_gap", "approximation gap log p(x) - ELBO(q*)"),
    ("amortization_gap", "amortization gap ELBO(q*) - ELBO(q)"),
    ("flow_gain", "flow gain ELBO(flow) - ELBO(q*)"),
)


def paired(folder: Path, a: str, b: str) -> tuple[float, float]:
    """Mean and standard error over images of column a - column b of ``gaps.csv``."""
    with open(folder / "gaps.csv") as f:
        rows = list(csv.DictReader(f))
    d = [float(row[a]) - float(row[b]) for row in rows]
    return statistics.mean(d), statistics.stdev(d) / math.sqrt(len(d))


def _nuts_cell(rows: list[dict]) -> str:
    """q's and q*'s largest mean errors over the NUTS images, with the chains' diagnostics."""
    if not rows:
        return "not run"
    return (f"q {max(r['mean_error_q'] for r in rows):.2f}, q* "
            f"{max(r['mean_error_q_star'] for r in rows):.2f} ({len(rows)} images; R-hat <= "
            f"{max(r['max_r_hat'] for r in rows):.3f}, ESS >= "
            f"{min(r['min_ess'] for r in rows):.0f}, "
            f"{sum(r['divergences'] for r in rows)} divergences)")


def table(runs: dict[str, Path], command: str) -> str:
    metrics = {label: json.loads((folder / "metrics.json").read_text())
               for label, folder in runs.items()}
    budget = {m["budget"] for m in metrics.values()}
    data = {m["data"] for m in metrics.values()}
    lines = [
        f"<!-- written by tools/gaps_table.py from {', '.join(map(str, runs.values()))} -->",
        "Inference gaps (Cremer, Li & Duvenaud, 2018) of trained VAEs, test images of "
        f"{' / '.join(sorted(data))}, "
        "nats per image, mean ± standard error over images (gap rows: per-image differences). "
        f"Budget: {' / '.join(sorted(budget))}; the reference log p(x) is per image the "
        "largest of the stochastic lower bounds (IS with q, AIS, IS with q*, IS with the flow).",
        "",
        f"```\n{command}\n```",
        "",
        "| quantity | " + " | ".join(runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for key, label in QUANTITIES:
        cells = [f"{m[key]['mean']:.2f} ± {m[key]['se']:.2f}" for m in metrics.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ais_is = [paired(folder, "log_px_ais", "log_px_is") for folder in runs.values()]
    lines.append("| AIS - IS, paired | " + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in ais_is)
                 + " |")
    lines.append("| NUTS on z given x, first images: mean error of q, q* (posterior sds) | "
                 + " | ".join(_nuts_cell(m["nuts"]) for m in metrics.values()) + " |")
    seconds = [m["seconds"] for m in metrics.values()]
    lines.append("| seconds (IS / AIS / q* / flow / NUTS) | " + " | ".join(
        " / ".join(f"{s[k]:.0f}" for k in ("importance_sampling", "ais", "q_star", "flow",
                                            "nuts"))
        for s in seconds) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", action="append", required=True, metavar="LABEL=RUN_DIR")
    parser.add_argument("--command", required=True, help="the command line the runs came from")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = dict(item.split("=", 1) for item in args.row)
    text = table({label: Path(folder) for label, folder in runs.items()}, args.command)
    args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
