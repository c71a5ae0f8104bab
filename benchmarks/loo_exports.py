"""PSIS-LOO on the LOO-ready ArviZ exports (``pyro_vae.arviz``) against the exact numbers.

The exports' ``log_likelihood`` holds each observation's *marginal* log-likelihood, so
``az.loo``'s elpd_loo estimates the held-out log density and ``az.compare`` should rank fits
as their test log-likelihood does.  Two tables check it:

1. the toy model (z ~ Uniform(a, b), x | z ~ Normal(mu, z)) on ``pyro-vae compare``'s data,
   500 training and 500 test points simulated at a = 0.5, b = 2, mu = 1, fitted by ``mle``,
   ``nuts`` (2 chains of 150 warm-up steps and 150 draws), ``iwae`` and ``svi`` (300 SVI
   steps each): elpd_loo (se), p_loo, the largest Pareto k, the exact (E1 closed form)
   training and test log-likelihood at the fit (sums over the 500 points, like elpd_loo),
   and ``az.compare``'s rank and elpd difference;
2. the default VAE on mnist5k trained 5 epochs with 5 particles per step (seed 0) by the
   ELBOs ``iwae``, ``meanfield`` and ``trace``, exported on the first 100 test images with
   K = 1000 particles: elpd_loo per image, p_loo, the largest Pareto k, the importance-sampled
   log p(x) with K = 1000 other particles (``importance_estimate``), the conditional
   log p(x | z), z ~ q(z | x), that the export held before it was made LOO-ready, and
   ``az.compare``'s rank.  The decoder is a point estimate, so p_loo ~ 0 and elpd_loo per
   image ~ the importance-sampled log p(x).

    python benchmarks/loo_exports.py --markdown docs/results/loo_exports.md

writes the README's tables (minutes on 2 cores: the VAE fits and the exports with K = 1000);
``--quick`` runs a tiny setting (300 toy points, 30 steps, 20 + 20 NUTS steps per chain,
1 epoch on 500 images, 20 test images, S = 100 draws, K = 50) in well under a minute.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch

from pyro_vae.arviz import az, toy_inference_data, vae_inference_data
from pyro_vae.build import build_vae
from pyro_vae.config import load_config
from pyro_vae.data import binarize, load_dataset
from pyro_vae.elbos import importance_estimate
from pyro_vae.experiments.runs import first_rows
from pyro_vae.inference import uniform_scale as toy
from pyro_vae.rng import single_thread
from pyro_vae.train import fit

TRUTH = (0.5, 2.0, 1.0)  # a, b, mu of compare's toy data
TOY_ROUTES = ("mle", "nuts", "iwae", "svi")
VAE_ELBOS = ("iwae", "meanfield", "trace")
TRAIN_PARTICLES = 5  # particles per training step of every ELBO, as in compare


@dataclass(frozen=True)
class Settings:
    """The budgets of one run of the benchmark."""

    points: int  # toy training points, and as many test points
    steps: int  # SVI steps of the toy's svi and iwae fits
    warmup: int  # NUTS warm-up steps per chain
    samples: int  # NUTS draws per chain
    chains: int
    epochs: int  # VAE training epochs
    train_size: int | None  # VAE training images (None: all of mnist5k's training split)
    images: int  # test images in the VAE export
    particles: int  # K of the export and of the importance-sampled log p(x)
    draws: int  # S, the export's draws (each costs one importance_estimate call)


FULL = Settings(points=500, steps=300, warmup=150, samples=150, chains=2, epochs=5,
                train_size=None, images=100, particles=1000, draws=200)
QUICK = Settings(points=300, steps=30, warmup=20, samples=20, chains=2, epochs=1,
                 train_size=500, images=20, particles=50, draws=100)


def loo(idata):
    """``az.loo``; a Pareto-k warning is not raised but shown in the table (``max_k``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        return az.loo(idata, pointwise=True)


def max_k(result) -> str:
    """The largest Pareto k, marked where it passes ArviZ's threshold (its warning)."""
    return f"{float(result.pareto_k.max()):.2f}" + (" (warns)" if result.warning else "")


def compare(idatas: dict):
    """``az.compare``'s DataFrame, one row per fit by rank (the Pareto-k warning is in the
    tables; pandas' deprecation of an in-place call inside ArviZ is silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The inplace keyword")
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        return az.compare(idatas)


def toy_table(s: Settings) -> list[str]:
    """Fit each route on one simulated training set; its export's LOO beside exact numbers."""
    x = toy.simulate(*TRUTH, s.points, seed=0)
    x_test = toy.simulate(*TRUTH, s.points, seed=1)
    options = toy.ToyOptions(steps=s.steps, warmup=s.warmup, samples=s.samples, chains=s.chains)
    idatas, rows = {}, {}
    with single_thread():  # one small model: a second thread only adds latency
        for name in TOY_ROUTES:
            route, route_options = toy.toy_inference(name, options)
            pyro.clear_param_store()
            fitted = route(x, seed=0, options=route_options)
            idatas[name] = (toy_inference_data(x, theta_draws=fitted.draws)
                            if fitted.draws is not None else
                            toy_inference_data(x, model=fitted.model, guide=fitted.guide))
            with torch.no_grad():
                train = fitted.model.log_marginal(x).sum().item()
                test = fitted.model.log_marginal(x_test).sum().item()
            rows[name] = (loo(idatas[name]), train, test, fitted.seconds)
            print(f"toy {name}: done in {fitted.seconds:.0f} s", file=sys.stderr, flush=True)
    ranking = compare(idatas)
    lines = ["| route | elpd_loo (se) | p_loo | max Pareto k | exact train log-lik "
             "| exact test log-lik | az.compare rank | elpd_diff (dse) | fit s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, (result, train, test, seconds) in rows.items():
        r = ranking.loc[name]
        lines.append(f"| {name} | {result.elpd_loo:.2f} ({result.se:.2f}) | {result.p_loo:.2f} "
                     f"| {max_k(result)} | {train:.2f} | {test:.2f} | {int(r['rank'])} "
                     f"| {r['elpd_diff']:.2f} ({r['dse']:.2f}) | {seconds:.1f} |")
    by_test = sorted(rows, key=lambda name: rows[name][2], reverse=True)
    return [*lines, "", f"Toy: az.compare's order {', '.join(ranking.index)}; "
                        f"order by exact test log-likelihood {', '.join(by_test)}."]


def vae_table(s: Settings) -> list[str]:
    """Train the default VAE with each ELBO; its export's LOO beside importance sampling."""
    config = load_config(None, [f"train.epochs={s.epochs}"])
    data = first_rows(load_dataset(config.data.dataset), s.train_size, None)
    x_train, x_test, transform = binarize(data.x_train, data.x_test, config.data.binarize)
    x = x_test[: s.images]
    idatas, rows = {}, {}
    for name in VAE_ELBOS:
        pyro.clear_param_store()  # every run starts afresh from the same initial weights
        pyro.set_rng_seed(0)
        model, guide = build_vae(config, data.dim, binary_data=True, image_shape=data.image_shape)
        start = time.perf_counter()
        fit(model, guide, x_train, epochs=s.epochs, batch_size=config.train.batch_size,
            lr=config.train.lr, elbo=name, num_particles=TRAIN_PARTICLES, seed=0,
            batch_transform=transform, progress=False)
        fit_seconds, start = time.perf_counter() - start, time.perf_counter()
        with single_thread():  # S calls on small batches: a second thread costs more than it saves
            idatas[name] = vae_inference_data(model, guide, x, num_draws=s.draws,
                                              num_particles=s.particles, seed=0)
        result = loo(idatas[name])
        export_seconds = time.perf_counter() - start
        pyro.set_rng_seed(1)  # other particles than the export's
        estimate = importance_estimate(model, guide, x, s.particles).log_likelihood.mean().item()
        with torch.no_grad():  # the old export's log p(x_i | z_i), z_i ~ q(z | x_i)
            z = guide.posterior(x).sample()
            conditional = model.likelihood(model.decoder(z)).log_prob(x).mean().item()
        rows[name] = (result, estimate, conditional, fit_seconds, export_seconds)
        print(f"vae {name}: done in {fit_seconds + export_seconds:.0f} s", file=sys.stderr,
              flush=True)
    ranking = compare(idatas)
    n = s.images
    lines = [f"| ELBO | elpd_loo / image | p_loo | max Pareto k | IS log p(x), K = {s.particles} "
             "| conditional log p(x\\|z) | az.compare rank | elpd_diff / image | fit s "
             "| export s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, (result, estimate, conditional, fit_seconds, export_seconds) in rows.items():
        r = ranking.loc[name]
        lines.append(f"| {name} | {result.elpd_loo / n:.3f} | {result.p_loo:.4f} "
                     f"| {max_k(result)} | {estimate:.3f} | {conditional:.3f} "
                     f"| {int(r['rank'])} | {r['elpd_diff'] / n:.3f} | {fit_seconds:.0f} "
                     f"| {export_seconds:.1f} |")
    by_estimate = sorted(rows, key=lambda name: rows[name][1], reverse=True)
    return [*lines, "", f"VAE: az.compare's order {', '.join(ranking.index)}; "
                        f"order by importance-sampled log p(x) {', '.join(by_estimate)}."]


def report(s: Settings, quick: bool) -> str:
    """The markdown: a comment naming the command, a sentence of settings, the two tables."""
    command = "benchmarks/loo_exports.py" + (" --quick" if quick else "")
    images = f" ({s.train_size} images)" if s.train_size else ""
    toy_lines, vae_lines = toy_table(s), vae_table(s)
    return "\n".join([
        f"<!-- written by {command} -->",
        f"PSIS-LOO of the ArviZ exports against exact and importance-sampled log-likelihoods, "
        f"measured {time.strftime('%Y-%m-%d')} on the 2-core CPU. The toy model: "
        f"{s.points} training and {s.points} test points simulated at a = {TRUTH[0]:g}, "
        f"b = {TRUTH[1]:g}, mu = {TRUTH[2]:g}, log-likelihoods summed over the points; NUTS "
        f"{s.chains} chains of {s.warmup} warm-up steps and {s.samples} draws, {s.steps} SVI "
        f"steps for iwae and svi. The default VAE: trained {s.epochs} epoch(s) on mnist5k"
        f"{images} with {TRAIN_PARTICLES} particles per step (seed 0), exported on the first "
        f"{s.images} test images with S = {s.draws} draws and K = {s.particles} particles, "
        f"the importance-sampled log p(x) with K = {s.particles} others, in nats per image:",
        "",
        *toy_lines,
        "",
        *vae_lines,
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny setting (seconds): the tables' shape, not their numbers")
    args = parser.parse_args(argv)
    text = report(QUICK if args.quick else FULL, args.quick)
    print(text, end="")
    if args.markdown is not None:
        args.markdown.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
