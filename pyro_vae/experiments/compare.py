"""``pyro-vae compare``: inference algorithms side by side on one model, data, seed set and budget.

For each algorithm and seed the harness records (nats per example; higher is better):

``final_bound``          the algorithm's own objective over the last epoch, on the training
                         data (ELBO, IWAE or Renyi bound; the mixture's routes: log p(x, theta)
                         / N at the point estimate, vi its ELBO; reference rows: the exact
                         training log-likelihood, an upper end for every bound)
``test_log_likelihood``  held-out log p(x): importance-sampled with K = ``eval_particles``
                         for the VAE, exact (E1 closed form) for the toy model, the exact
                         marginal (enumerated assignments) for the mixture
``gradient_variance``    total variance (trace of the covariance) of the estimator of the
                         gradient of the per-example objective w.r.t. the guide's parameters,
                         over 20 draws on one fixed batch, at the end of training
``seconds_per_epoch``    wall time of one pass over the training data (the median over
                         epochs after the first, which pays one-off start-up costs)
``seconds``              wall time of the whole fit (training only, no evaluation)

and the table gives the mean and standard deviation over seeds.  Reference rows, where
the model allows: the toy model's exact MLE and NUTS (z integrated out), the mixture's EM.

``--idata FILE.nc`` also writes, for each algorithm whose fit has posterior draws, the ArviZ
InferenceData of its seed-0 fit (:mod:`pyro_vae.arviz`) to ``FILE.<algorithm>.nc``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch

from ..build import build_vae
from ..config import load_config
from ..data import binarize, load_dataset
from ..elbos import ELBOS, importance_estimate, make_elbo
from ..errors import UserError
from ..guides.uniform_scale import AmortizedUniformScaleGuide
from ..inference import uniform_scale as toy
from ..inference.gmm import GMM_ROUTES, fit_gmm, log_marginal, random_mixture, sample_mixture
from ..models.uniform_scale import UniformScale
from ..registry import Registry
from ..rng import single_thread
from ..train import fit
from .runs import first_rows, prepare_out, write_metrics

__all__ = ["COMPARE_MODELS", "METRICS", "gradient_variance", "summarize", "run_compare",
           "add_command"]

COMPARE_MODELS = Registry("compare model")
METRICS = ("final_bound", "test_log_likelihood", "gradient_variance", "seconds_per_epoch")
_GRADIENT_DRAWS = 20
_VAE_IDATA_IMAGES = 100  # test images in the VAE's InferenceData: (S, 100, 784) per group

# what each model's function fills: algorithm name -> InferenceData of its seed-0 fit
InferenceDataSink = dict[str, Any] | None


def gradient_variance(loss_fn, model, guide, x: torch.Tensor, n: int, params) -> float:
    """Sum over parameters of the variance of d(loss / n)/d params over 20 independent draws."""
    draws = []
    for _ in range(_GRADIENT_DRAWS):
        loss = loss_fn.differentiable_loss(model, guide, x, n=n) / n
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        draws.append(torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten()
                                for p, g in zip(params, grads, strict=True)]))
    return torch.stack(draws).var(0).sum().item()


def _epoch_seconds(result) -> float:
    return statistics.median(result.seconds_per_epoch[1:] or result.seconds_per_epoch)


def _check_names(model: str, names: list[str]) -> None:
    """UserError unless every name is an ELBO (vae, toy) or a mixture route (gmm)."""
    valid = GMM_ROUTES if model == "gmm" else ELBOS
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise UserError(f"unknown inference {', '.join(unknown)} for --model {model}; choose "
                        f"from: {', '.join(valid.names())}")


# ---------------------------------------------------------------------------- VAE


@COMPARE_MODELS.register("vae")
def compare_vae(args: argparse.Namespace, names: list[str],
                idatas: InferenceDataSink = None) -> list[dict[str, Any]]:
    """Each ELBO trains the config's VAE from the same initial weights per seed."""
    overrides = list(args.set) + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    config = load_config(args.config, overrides)
    data = load_dataset(config.data.dataset, path=config.data.path, data_dir=config.data.data_dir)
    data = first_rows(data, config.data.train_size, config.data.test_size)
    x_train, x_test, transform = binarize(data.x_train, data.x_test, config.data.binarize)
    t = config.train
    rows = []
    for name in names:
        for seed in range(args.seeds):
            pyro.clear_param_store()  # every run starts afresh (autoguides keep state there)
            pyro.set_rng_seed(seed)
            model, guide = build_vae(config, data.dim, binary_data=config.data.binarize != "none",
                                     image_shape=data.image_shape)
            result = fit(model, guide, x_train, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                         elbo=name, num_particles=args.particles, seed=seed,
                         batch_transform=transform, progress=False, precision=t.precision)
            pyro.set_rng_seed(seed)
            estimate = importance_estimate(model, guide, x_test, args.eval_particles)
            batch = x_train[: t.batch_size] if transform is None else transform(
                x_train[: t.batch_size])
            variance = gradient_variance(make_elbo(name, args.particles), model, guide, batch,
                                         x_train.shape[0], list(guide.parameters()))
            rows.append({
                "algorithm": name, "seed": seed, "final_bound": result.train_elbo[-1],
                "test_elbo": estimate.elbo.mean().item(),
                "test_log_likelihood": estimate.log_likelihood.mean().item(),
                "gradient_variance": variance,
                "seconds_per_epoch": _epoch_seconds(result),
                "seconds": sum(result.seconds_per_epoch),
            })
            if idatas is not None and seed == 0:
                from ..arviz import vae_inference_data  # arviz is heavy

                idatas[name] = vae_inference_data(model, guide, x_test[:_VAE_IDATA_IMAGES])
    return rows


# ---------------------------------------------------------------------------- toy model


@COMPARE_MODELS.register("toy")
def compare_toy(args: argparse.Namespace, names: list[str],
                idatas: InferenceDataSink = None) -> list[dict[str, Any]]:
    """SVI with each ELBO (amortized guide, full batch), then the exact MLE and NUTS rows.

    One training and one test set, simulated at a = 0.5, b = 2, mu = 1 (N = 500 each), for
    every seed (the seeds change initial weights and particles); ``--epochs`` is the number
    of SVI steps (default 300).
    """
    steps = args.epochs or 300
    x = toy.simulate(0.5, 2.0, 1.0, 500, seed=0)
    x_test = toy.simulate(0.5, 2.0, 1.0, 500, seed=1)
    rows = []
    with single_thread():
        for seed in range(args.seeds):
            for name in names:
                pyro.clear_param_store()
                pyro.set_rng_seed(seed)
                model = UniformScale(*toy.moment_estimate(x))
                guide = AmortizedUniformScaleGuide(model)
                result = fit(model, guide, x, epochs=steps, batch_size=x.shape[0], lr=0.02,
                             elbo=name, num_particles=args.particles, seed=seed, progress=False)
                variance = gradient_variance(make_elbo(name, args.particles), model, guide, x,
                                             x.shape[0], list(guide.parameters()))
                with torch.no_grad():
                    test = model.log_marginal(x_test).mean().item()
                rows.append({"algorithm": name, "seed": seed, "final_bound": result.train_elbo[-1],
                             "test_log_likelihood": test, "gradient_variance": variance,
                             "seconds_per_epoch": _epoch_seconds(result),
                             "seconds": sum(result.seconds_per_epoch)})
                if idatas is not None and seed == 0:
                    from ..arviz import toy_inference_data  # arviz is heavy

                    idatas[name] = toy_inference_data(x, model=model, guide=guide)
            options = toy.ToyOptions(warmup=max(50, steps // 2), samples=max(50, steps // 2))
            for route, label in (("mle", "exact MLE"), ("nuts", "NUTS (z integrated out)")):
                fitted = toy.TOY_INFERENCES.get(route)(x, seed=seed, options=options)
                with torch.no_grad():
                    train = fitted.model.log_marginal(x).mean().item()
                    test = fitted.model.log_marginal(x_test).mean().item()
                rows.append({"algorithm": label, "seed": seed, "final_bound": train,
                             "test_log_likelihood": test, "gradient_variance": None,
                             "seconds_per_epoch": None, "seconds": fitted.seconds})
                if idatas is not None and seed == 0 and fitted.draws is not None:
                    from ..arviz import toy_inference_data  # arviz is heavy

                    idatas[label] = toy_inference_data(x, theta_draws=fitted.draws)
    return rows


# ---------------------------------------------------------------------------- mixture


@COMPARE_MODELS.register("gmm")
def compare_gmm(args: argparse.Namespace, names: list[str],
                idatas: InferenceDataSink = None) -> list[dict[str, Any]]:
    """The mixture's routes (map = EM, vi, nuts) on simulated data, K = 3, D = 2.

    1000 training and 1000 test points from one random 3-component mixture (the seeds change
    the fits' restarts, initial values and draws);
    ``--epochs`` is the number of SVI steps of ``vi`` and the draws (and warm-up) per NUTS
    chain (default 200).  Test log-likelihood: the exact marginal at the MAP (``map``) or the
    posterior predictive mean over draws (``vi``, ``nuts``).
    """
    budget = args.epochs or 200
    truth = random_mixture(3, 2, separation=3.0, anisotropy=3.0, seed=0)
    generator = torch.Generator().manual_seed(0)
    x, _ = sample_mixture(truth, 1000, generator)
    x_test, _ = sample_mixture(truth, 1000, generator)
    rows = []
    for seed in range(args.seeds):
        for name in names:
            pyro.clear_param_store()  # the vi route's AutoNormal would resume from the last fit
            fitted = fit_gmm(x, 3, "diag", name, seed=seed, restarts=3, steps=budget,
                             num_samples=budget, warmup_steps=budget)
            if name == "vi":
                bound = fitted.info["final_elbo_per_point"]
            else:  # the log joint at the point estimate, per point
                bound = (log_marginal(x, fitted.params).sum()
                         + fitted.model.log_prior(fitted.params)).item() / x.shape[0]
            rows.append({"algorithm": name, "seed": seed, "final_bound": bound,
                         "test_log_likelihood": fitted.log_likelihood(x_test).mean().item(),
                         "gradient_variance": None, "seconds_per_epoch": None,
                         "seconds": fitted.seconds})
            if idatas is not None and seed == 0 and fitted.samples is not None:
                from ..arviz import gmm_inference_data  # arviz is heavy

                idatas[name] = gmm_inference_data(
                    x, fitted, num_chains=fitted.info.get("num_chains", 1))
        with torch.no_grad():
            rows.append({"algorithm": "true parameters", "seed": seed,
                         "final_bound": log_marginal(x, truth).mean().item(),
                         "test_log_likelihood": log_marginal(x_test, truth).mean().item(),
                         "gradient_variance": None, "seconds_per_epoch": None,
                         "seconds": None})
    return rows


# ---------------------------------------------------------------------------- table


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
    from ..arviz import save_inference_data  # arviz is heavy

    written = {}
    for name, idata in idatas.items():
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        written[name] = str(save_inference_data(idata, path.with_suffix(f".{slug}.nc")))
    return written


def run_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Run every algorithm, write comparison.csv / .md / .png and metrics.json to ``--out``."""
    names = [name.strip() for name in args.inference.split(",") if name.strip()]
    if not names or len(set(names)) != len(names):
        raise UserError(f"--inference wants distinct comma-separated names, got {args.inference!r}")
    for flag in ("seeds", "particles", "eval_particles"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    if args.model != "vae" and (args.config is not None or args.set):
        raise UserError("--config and --set describe the VAE; they do not apply to --model "
                        f"{args.model}")
    _check_names(args.model, names)
    if args.idata is not None and args.idata.suffix != ".nc":
        raise UserError(f"--idata {args.idata}: give a NetCDF file name ending in .nc")
    out = prepare_out(args.out, args.overwrite)
    start = time.perf_counter()
    idatas = None if args.idata is None else {}
    rows = COMPARE_MODELS.get(args.model)(args, names, idatas)
    table = summarize(rows)
    fields = ["algorithm", "seeds"] + [f"{m}_{s}" for m in (*METRICS, "seconds")
                                       for s in ("mean", "sd")]
    with open(out / "comparison.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    markdown = _markdown(table)
    (out / "comparison.md").write_text(markdown)
    title = f"{args.model}: {args.seeds} seed(s), mean ± sd"
    from ..plots.compare import save_comparison  # matplotlib

    figure = save_comparison(table, out / "comparison.png", title)
    metrics = {"model": args.model, "inference": names, "seeds": args.seeds,
               "particles": args.particles, "epochs": args.epochs, "table": table, "runs": rows,
               "files": {"csv": str(out / "comparison.csv"), "markdown": str(out / "comparison.md"),
                         "figure": str(figure)},
               "seconds": time.perf_counter() - start}
    if idatas:
        metrics["idata"] = _save_idatas(idatas, args.idata)
    write_metrics(out, metrics)
    print(markdown, end="")
    return json.loads(json.dumps(metrics))  # plain JSON types for --json


def add_command(commands: argparse._SubParsersAction, common: Callable) -> None:
    """Add ``pyro-vae compare`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "compare", help="run inference algorithms side by side on one model",
        description="Train each algorithm on the same data, seeds and budget; write one table "
                    "(CSV, Markdown, PNG) of mean and sd over seeds.",
    )
    parser.add_argument("--model", required=True, choices=COMPARE_MODELS.names())
    parser.add_argument("--inference", required=True, metavar="A,B,C",
                        help="ELBO names for vae and toy (e.g. trace,meanfield,iwae,renyi); "
                             "map,vi,nuts for gmm")
    parser.add_argument("--config", type=Path, help="VAE config (TOML)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one VAE config entry (repeatable)")
    parser.add_argument("--epochs", type=int,
                        help="epochs (vae; default from the config), SVI steps (toy, default "
                             "300), steps / draws (gmm, default 200)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 per algorithm")
    parser.add_argument("--particles", type=int, default=5,
                        help="particles per step for every ELBO (K of iwae and renyi)")
    parser.add_argument("--eval-particles", type=int, default=1000,
                        help="K of the VAE's importance-sampled test log-likelihood")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--idata", type=Path, metavar="FILE.nc",
                        help="write each algorithm's seed-0 posterior as ArviZ InferenceData "
                             "to FILE.<algorithm>.nc (algorithms with posterior draws)")
    common(parser)
    parser.set_defaults(func=run_compare)
