"""``pyro-vae compare``: inference algorithms side by side on one model, data, seed set and budget.

For each algorithm and seed the harness records (nats per example; higher is better):

``final_bound``          the algorithm's own objective over the last epoch, on the training
                         data (ELBO, IWAE or Renyi bound; the mixture's routes: log p(x, theta)
                         / N at the point estimate, vi its ELBO; the toy model's mle and nuts,
                         and the reference row: the exact training log-likelihood, an upper
                         end for every bound)
``test_log_likelihood``  held-out log p(x): importance-sampled with K = ``eval_particles``
                         for the VAE, exact (E1 closed form) for the toy model, the exact
                         marginal (enumerated assignments) for the mixture
``gradient_variance``    total variance (trace of the covariance) of the estimator of the
                         gradient of the per-example objective w.r.t. the guide's parameters,
                         over 20 draws on one fixed batch, at the end of training
``seconds_per_epoch``    wall time of one pass over the training data (the median over
                         epochs after the first, which pays one-off start-up costs)
``seconds``              wall time of the whole fit (training only, no evaluation)

and the table gives the mean and standard deviation over seeds, one row per algorithm asked
for (:mod:`.compare_models` says what each model accepts), plus the true parameters' row
with ``reference``.

Budgets are named for what they count (:data:`~.compare_models.BUDGETS`: ``epochs`` of the
VAE, ``steps`` of SVI, ``samples``, ``warmup`` and ``chains`` of NUTS); one that no
algorithm asked for reads is refused, so a budget never silently does nothing.

``idata`` also writes, for each algorithm whose fit has posterior draws, the ArviZ
InferenceData of its seed-0 fit (:mod:`pyro_vae.arviz`) to ``FILE.<algorithm>.nc``.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import write_csv_atomically, write_text_atomically
from ..inference.diagnostics import check_draws
from ..train import TrainingLog
from .compare_models import BUDGETS, COMPARE_MODELS, CompareModel, CompareRun
from .runs import prepare_out, write_metrics

__all__ = ["METRICS", "run_compare", "summarize"]

METRICS = ("final_bound", "test_log_likelihood", "gradient_variance", "seconds_per_epoch")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per algorithm (in first-seen order): mean and sd over seeds of each metric."""
    table = []
    for algorithm in dict.fromkeys(row["algorithm"] for row in rows):
        runs = [row for row in rows if row["algorithm"] == algorithm]
        entry: dict[str, Any] = {"algorithm": algorithm, "seeds": len(runs)}
        for metric in (*METRICS, "seconds"):
            values = [r[metric] for r in runs if r.get(metric) is not None]
            entry[f"{metric}_mean"] = statistics.fmean(values) if values else None
            entry[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        table.append(entry)
    return table


def _cell(mean, sd) -> str:
    if mean is None:
        return "n/a"
    digits = 2 if abs(mean) >= 10 else 4  # the toy model's differences are in the 3rd decimal
    fmt = f"{{:.{digits}f}}" if abs(mean) < 1e5 else "{:.3g}"
    text = fmt.format(mean)
    return text if sd is None else f"{text} ± {fmt.format(sd)}"


def _markdown(table: list[dict[str, Any]]) -> str:
    header = ["algorithm", "seeds", *METRICS, "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in table:
        cells = [entry["algorithm"], str(entry["seeds"])]
        cells += [_cell(entry.get(f"{m}_mean"), entry.get(f"{m}_sd"))
                  for m in (*METRICS, "seconds")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save_idatas(idatas: dict[str, Any], path: Path) -> dict[str, str]:
    """Write each InferenceData to ``path`` with the algorithm in its name: {algorithm: file}."""
    from ..arviz import save_inference_data  # arviz is heavy: only when asked for

    written = {}
    for name, idata in idatas.items():
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        written[name] = str(save_inference_data(idata, path.with_suffix(f".{slug}.nc")))
    return written


def _budgets_read(model: CompareModel, names: list[str]) -> set[str]:
    """The budgets that at least one of the algorithms ``names`` reads."""
    return {budget for name in names for budget in model.budgets(name)}


def _check_budgets(run: CompareRun, model: CompareModel) -> None:
    """UserError for a budget below 1, or one that none of the asked algorithms reads."""
    asked = [budget for budget in BUDGETS if getattr(run, budget) is not None]
    read_by_model = _budgets_read(model, model.inferences())
    read = _budgets_read(model, run.inference)
    for budget in asked:  # the flag of a budget is its name: --epochs, --steps, ...
        flag, what, value = f"--{budget}", BUDGETS[budget], getattr(run, budget)
        if value < 1:
            raise UserError(f"{flag} ({what}) must be >= 1, got {value}")
        if budget not in read_by_model:
            takes = ", ".join(f"--{b}" for b in BUDGETS if b in read_by_model)
            raise UserError(f"{flag} ({what}) does not apply to --model {run.model}; its "
                            f"budgets are {takes}")
        if budget not in read:
            readers = [n for n in model.inferences() if budget in model.budgets(n)]
            shown = ", ".join(readers[:4]) + (", ..." if len(readers) > 4 else "")
            raise UserError(f"{flag} ({what}) applies to none of --inference "
                            f"{','.join(run.inference)}; {shown} read it")


def _check(run: CompareRun) -> None:
    """UserError for anything wrong with ``run``, before anything is computed or written."""
    names = run.inference
    if not names or len(set(names)) != len(names):
        raise UserError("--inference wants distinct comma-separated names, got "
                        f"{','.join(names)!r}")
    for field, flag in (("seeds", "--seeds"), ("particles", "--train-particles"),
                        ("eval_particles", "--eval-particles")):
        if getattr(run, field) < 1:
            raise UserError(f"{flag} must be >= 1, got {getattr(run, field)}")
    if run.model != "vae" and (run.config is not None or run.overrides):
        raise UserError("--config and --set describe the VAE; they do not apply to --model "
                        f"{run.model}")
    model = COMPARE_MODELS.get(run.model)
    valid = model.inferences()
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise UserError(f"unknown inference {', '.join(unknown)} for --model {run.model}; choose "
                        f"from: {', '.join(valid)}")
    _check_budgets(run, model)
    if "samples" in _budgets_read(model, names):
        check_draws(model.budgeted(run).samples)
    if run.reference and not model.has_reference:
        raise UserError(f"--reference adds the true parameters' row; --model {run.model} is "
                        "fitted to data with no known parameters")
    if run.idata is not None and run.model == "vae" and run.eval_particles < 2:
        raise UserError("--idata of a VAE estimates each draw's log p(x) from shared and own "
                        f"particles: give --eval-particles >= 2, got {run.eval_particles}")
    if run.idata is not None and run.idata.suffix != ".nc":
        raise UserError(f"--idata {run.idata}: give a NetCDF file name ending in .nc")


def run_compare(run: CompareRun) -> dict[str, Any]:
    """Run every algorithm, write comparison.csv / .md / .png and metrics.json to ``run.out``."""
    _check(run)
    model = COMPARE_MODELS.get(run.model)
    run = model.budgeted(run)
    if run.tensorboard is not None:  # no tensorboard package: one line, before any change
        TrainingLog(run.tensorboard)
    out = prepare_out(run.out, run.overwrite)
    start = time.perf_counter()
    idatas = None if run.idata is None else {}
    rows = model.rows(run, idatas)
    table = summarize(rows)
    fields = ["algorithm", "seeds"] + [f"{m}_{s}" for m in (*METRICS, "seconds")
                                       for s in ("mean", "sd")]
    write_csv_atomically(out / "comparison.csv",
                         [fields, *([row.get(field, "") for field in fields] for row in table)])
    markdown = _markdown(table)
    write_text_atomically(out / "comparison.md", markdown)
    from ..plots.compare import save_comparison  # matplotlib: imported when the figure is drawn

    figure = save_comparison(table, out / "comparison.png",
                             f"{run.model}: {run.seeds} seed(s), mean ± sd")
    metrics = {"model": run.model, "inference": run.inference, "seeds": run.seeds,
               "particles": run.particles, "reference": run.reference,
               # the budgets the algorithms read, defaults filled in (vae: None = the config's)
               "budgets": {b: getattr(run, b) for b in sorted(_budgets_read(model, run.inference),
                                                              key=list(BUDGETS).index)},
               "table": table, "runs": rows,
               "files": {"csv": str(out / "comparison.csv"), "markdown": str(out / "comparison.md"),
                         "figure": str(figure)},
               "seconds": time.perf_counter() - start}
    if run.tensorboard is not None:
        metrics["tensorboard"] = str(run.tensorboard)
    if idatas:
        metrics["idata"] = _save_idatas(idatas, run.idata)
    write_metrics(out, metrics)
    print(markdown, end="")
    return json.loads(json.dumps(metrics))  # plain JSON types for --json
