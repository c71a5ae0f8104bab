"""The IWAE paper's Table 1 (Burda, Grosse & Salakhutdinov, 2016) with this package's VAE.

Each cell trains the paper's model (``pyro_vae/configs/iwae_{1,2}layer.toml``: dynamically
binarized MNIST, batch 20, Adam, the 3^i-epoch stage schedule) with its objective and k,
then measures the test negative log-likelihood by importance sampling with K = 5000
(nats per image, lower is better) and prints it beside the paper's number.

    python benchmarks/iwae_table1.py [--stages S] [--cells vae1,iwae5] [--layers 1,2]
                                     [--device cpu|cuda] [--out runs/iwae_table1]

``--stages S`` runs the first S of the 8 stages (3^0 + ... + 3^(S-1) epochs; 8 is the
paper's 3280 epochs, for a GPU).  Every cell writes its own run folder under ``--out``; a
killed run is resumed from its last epoch's checkpoint when the command is run again, and
a finished cell is not run twice.  The table lists every finished cell under ``--out`` (so
cells run by separate commands share one table) and goes to ``--out/table1.md`` and stdout;
``--markdown FILE`` writes it there too (``docs/results/iwae_table1.md`` is what the README
shows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pyro_vae.config import load_config
from pyro_vae.experiments.vae import load_resumable, train_vae

CONFIGS = Path(__file__).resolve().parents[1] / "pyro_vae" / "configs"

# cell -> (ELBO, k): the paper's columns
CELLS = {
    "vae1": ("fused_trace", 1),
    "vae5": ("fused_trace", 5),
    "vae50": ("fused_trace", 50),
    "iwae5": ("iwae", 5),
    "iwae50": ("iwae", 50),
}
# Table 1, MNIST, test NLL in nats: (layers, cell) -> value
PAPER = {
    (1, "vae1"): 86.76, (1, "vae5"): 86.47, (1, "vae50"): 86.35,
    (1, "iwae5"): 85.54, (1, "iwae50"): 84.78,
    (2, "vae1"): 85.33, (2, "vae5"): 85.01, (2, "vae50"): 84.78,
    (2, "iwae5"): 83.89, (2, "iwae50"): 82.90,
}


def epochs_of(stages: int) -> int:
    """Epochs in the first ``stages`` stages of the schedule: 3^0 + ... + 3^(stages - 1)."""
    return sum(3**i for i in range(stages))


def cell_folder(out: Path, layers: int, cell: str) -> Path:
    return out / f"{layers}layer-{cell}"


def run_cell(layers: int, cell: str, args: argparse.Namespace) -> dict:
    """Train (or resume, or reuse) one cell; its metrics."""
    elbo, k = CELLS[cell]
    out = cell_folder(args.out, layers, cell)
    if (out / "metrics.json").exists():
        metrics = json.loads((out / "metrics.json").read_text())
        done = len(metrics["seconds_per_epoch"])
        if done != epochs_of(args.stages):
            sys.exit(f"{out} holds a finished cell of {done} epochs, not the "
                     f"{epochs_of(args.stages)} of --stages {args.stages}: choose another --out")
        return metrics
    overrides = [f'inference.elbo="{elbo}"', f"inference.num_particles={k}",
                 f"train.epochs={epochs_of(args.stages)}", f'train.device="{args.device}"',
                 f"inference.eval_particles={args.eval_particles}", *args.set]
    config = load_config(CONFIGS / f"iwae_{layers}layer.toml", overrides)
    resume = load_resumable(out) if (out / "checkpoint.pt").exists() else None
    print(f"--- {layers} layer(s), {cell}: {config.train.epochs} epochs"
          + (f", resumed after epoch {resume['epoch']}" if resume else ""), flush=True)
    start = time.perf_counter()
    metrics = train_vae(config, out, overwrite=True, progress=not args.quiet, resume=resume)
    metrics["wall_seconds"] = time.perf_counter() - start
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def finished_cells(out: Path) -> list[tuple[int, str, dict]]:
    """(layers, cell, metrics) of every finished cell under ``out``, in the paper's order."""
    return [(layers, cell, json.loads(path.read_text()))
            for layers in (1, 2) for cell in CELLS
            if (path := cell_folder(out, layers, cell) / "metrics.json").exists()]


def table(rows: list[tuple[int, str, dict]]) -> str:
    """Markdown: the paper's NLL beside the measured one, epochs, K and seconds per cell."""
    lines = ["Test NLL in nats per image (lower is better), by importance sampling with K samples "
             "per test image; the paper's numbers are after 3280 epochs (8 stages).", "",
             "| layers | cell | paper NLL | measured NLL | test ELBO | epochs | K | train s "
             "| eval s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for layers, cell, m in rows:
        train_seconds = sum(m["seconds_per_epoch"])
        lines.append(
            f"| {layers} | {cell} | {PAPER[(layers, cell)]:.2f} | "
            f"{-m['test_log_likelihood']:.2f} | {m['test_elbo']:.2f} | "
            f"{len(m['seconds_per_epoch'])} | {m['num_particles']} | {train_seconds:.0f} | "
            f"{m['evaluation_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # default 3 stages (13 epochs): on the project's 2-core CPU an epoch of 60000 images at
    # batch 20 took 22 s (vae1) and 35 s (iwae5) and each cell's K = 5000 evaluation 19 min,
    # so the 1-layer vae1 and iwae5 cells take about 50 minutes (4 stages: about 80)
    parser.add_argument("--stages", type=int, default=3, choices=range(1, 9),
                        help="the first S stages of the schedule (8: the paper's 3280 epochs)")
    parser.add_argument("--cells", default="vae1,iwae5",
                        help=f"comma-separated, of {', '.join(CELLS)}")
    parser.add_argument("--layers", default="1", help="1, 2 or 1,2")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--eval-particles", type=int, default=5000)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="more config overrides, e.g. data.train_size=1000 for a quick run")
    parser.add_argument("--out", type=Path, default=Path("runs/iwae_table1"))
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        parser.error(f"unknown cell {', '.join(unknown)}; choose from {', '.join(CELLS)}")
    layers = [int(v) for v in args.layers.split(",")]
    if any(v not in (1, 2) for v in layers):
        parser.error("--layers takes 1, 2 or 1,2")
    for n in layers:
        for cell in cells:
            run_cell(n, cell, args)
    text = table(finished_cells(args.out))
    (args.out / "table1.md").write_text(text)
    if args.markdown is not None:
        args.markdown.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
