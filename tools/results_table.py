"""A Markdown table of finished runs, from their metrics.json, for the README.

    python tools/results_table.py --out docs/results/NAME.md --title "..." \\
        --row "label=runs/folder" [--row ...] [--command "the commands that made the runs"]

Each row: the label, epochs, training seconds, the ELBO used, test ELBO and test log p(x)
with its K (nats per example), their gap (the KL from q(z|x) to the exact posterior, near 0
when the latent code is ignored), and the guide's active latent units (n/a for runs from before
they were counted).  The file starts with a comment naming the runs it was read from, so
that ``tools/sync_readme.py`` copies numbers that a script, not a hand, put there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def nats(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def row(label: str, metrics: dict) -> str:
    epochs = len(metrics["seconds_per_epoch"])
    seconds = sum(metrics["seconds_per_epoch"])
    elbo, log_lik = metrics["test_elbo"], metrics["test_log_likelihood"]
    gap = None if log_lik is None else log_lik - elbo
    return (f"| {label} | {epochs} | {seconds:.0f} | {metrics['elbo']} | {nats(elbo)} | "
            f"{nats(log_lik)} | {metrics['num_particles']} | {nats(gap)} | "
            f"{metrics.get('active_units', 'n/a')} |")


def table(title: str, rows: list[tuple[str, str, dict]], command: str | None) -> str:
    sources = ", ".join(f"{label}: {folder}" for label, folder, _ in rows)
    lines = [f"<!-- written by tools/results_table.py from the metrics.json of {sources} -->"]
    lines += [title, ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += ["| run | epochs | train s | ELBO | test ELBO | test log p(x) | K | log p(x) - ELBO "
              "| active units |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [row(label, metrics) for label, _, metrics in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", required=True)
    parser.add_argument("--row", action="append", required=True, metavar="LABEL=RUN_DIR")
    parser.add_argument("--command", help="the commands that made the runs, shown as a block")
    args = parser.parse_args(argv)
    rows = []
    for item in args.row:
        label, _, folder = item.rpartition("=")
        metrics_path = Path(folder) / "metrics.json"
        if not label or not metrics_path.is_file():
            parser.error(f"--row {item}: want LABEL=RUN_DIR with RUN_DIR/metrics.json")
        rows.append((label, folder, json.loads(metrics_path.read_text())))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(args.title, rows, args.command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
