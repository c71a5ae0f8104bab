"""Where the nats go: the inference gaps of a trained VAE (Cremer, Li & Duvenaud, 2018).

For each of the first N test images x of a checkpoint's data set:

    log p(x)   by importance sampling with the encoder's q (K draws,
               :func:`~pyro_vae.elbos.importance_estimate`) and, independently, by annealed
               importance sampling from the prior (T steps, C chains; :mod:`..inference.ais`)
    ELBO(q)    the amortized guide's (the same K draws)
    ELBO(q*)   the guide's family fitted to x alone (:mod:`..inference.local_refinement`)
    ELBO(flow) a per-image normalizing flow (:mod:`..inference.local_flow`)

The reference log p(x) is, per image, the largest of the four stochastic lower bounds
(IS with q, AIS, IS with q*, IS with the flow), as Cremer et al. take the best bound they
have.  Then, in nats per image with standard errors over images,

    approximation gap = log p(x) - ELBO(q*)     amortization gap = ELBO(q*) - ELBO(q)
    flow gain         = ELBO(flow) - ELBO(q*)   (how much a richer local family recovers)

and for the first few images NUTS draws of z | x hold q's, q*'s and the flow's means and
spreads to the posterior's.  z is every latent site of the model concatenated in the
model's order (:class:`~..inference.latent_joint.LatentJoint`): (z2, z1) for the two-layer
VAE, whose q* keeps the guide's q(z2 | z1) and refines q(z1 | x) per image
(:mod:`..inference.local_refinement`); the posterior-grid figure is drawn for a one-site
2-D code only.  ``run_gaps`` writes metrics.json, gaps.csv (one row per
image), gaps.md (the table) and the figures.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyro
import torch

from ..config import MAX_PARTICLES, check_count
from ..data import binarize_test_set, load_dataset
from ..elbos import importance_estimate
from ..errors import UserError
from ..files import write_csv_atomically, write_text_atomically
from ..inference.ais import ais_log_likelihood
from ..inference.latent_joint import LatentJoint
from ..inference.local_flow import fit_local_flow
from ..inference.local_refinement import LocalFit, guide_draws, refine_gaussian
from ..inference.posterior_nuts import PosteriorDraws, posterior_nuts
from ..plots import gaps as plots
from ..progress import progress_bar, say
from ..train import check_threads, running_threads
from .runs import prepare_out, write_metrics
from .vae import TrainedVAE, restore_vae

__all__ = ["GapsOptions", "ROWS", "budget_line", "inference_gaps", "gaps_table", "run_gaps"]

# the rows of the table: (key of the per-image columns, what it is)
ROWS = (
    ("log_px", "log p(x), best bound"),
    ("log_px_is", "log p(x), IS with q"),
    ("log_px_ais", "log p(x), AIS"),
    ("elbo_q", "ELBO(q), the encoder"),
    ("elbo_q_star", "ELBO(q*), refined"),
    ("elbo_flow", "ELBO(flow), per-image flow"),
    ("inference_gap", "inference gap log p(x) - ELBO(q)"),
    ("approximation_gap", "approximation gap log p(x) - ELBO(q*)"),
    ("amortization_gap", "amortization gap ELBO(q*) - ELBO(q)"),
    ("flow_gain", "flow gain ELBO(flow) - ELBO(q*)"),
)
_GRID = 60  # points per axis of the 2-D posterior's density grid


@dataclass
class GapsOptions:
    """The budgets: images, and the work spent on each one."""

    images: int = 100
    eval_particles: int = 5000  # K: IS draws per image, and draws that score q* and the flow
    ais_steps: int = 500  # T
    ais_chains: int = 4  # C
    leapfrog: int = 5  # L per HMC transition
    refine_steps: int = 500  # S, of q* and of the flow alike
    refine_particles: int = 8  # M per step
    flow_layers: int = 2
    nuts_images: int = 2
    nuts_samples: int = 200  # per chain, and as many warm-up steps
    nuts_chains: int = 2
    seed: int = 0
    threads: int | str = "auto"  # torch's intra-op threads (pyro_vae.train.threads)

    def check(self) -> None:
        """A :class:`UserError` naming the first budget out of range."""
        check_count("--eval-particles", self.eval_particles, MAX_PARTICLES)
        check_threads(self.threads, "--threads")
        for flag, value in (("--images", self.images), ("--ais-steps", self.ais_steps),
                            ("--ais-chains", self.ais_chains), ("--leapfrog", self.leapfrog),
                            ("--refine-steps", self.refine_steps),
                            ("--refine-particles", self.refine_particles),
                            ("--nuts-chains", self.nuts_chains)):
            if value < 1:
                raise UserError(f"{flag} must be a positive whole number, got {value}")
        if self.nuts_images < 0 or self.flow_layers < 0:
            raise UserError("--nuts-images and --flow-layers must be 0 or more")
        if self.nuts_images and self.nuts_samples < 4:
            raise UserError(f"--nuts-samples must be at least 4 for R-hat, got "
                            f"{self.nuts_samples}")


def _moments(draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and sd (d,) of draws (S, d)."""
    return draws.mean(0), draws.std(0)


def _nuts_row(i: int, nuts: PosteriorDraws, others: dict[str, torch.Tensor]) -> dict:
    """NUTS's diagnostics for image i and how far each q's moments are from its draws:
    the RMS over coordinates of (mean_q - mean) / sd, and the geometric mean of sd_q / sd."""
    sd = nuts.cov.diag().sqrt()
    row = {"image": i, "min_ess": float(nuts.ess.min()), "max_r_hat": float(nuts.r_hat.max()),
           "divergences": nuts.divergences}
    for name, draws in others.items():
        mean, spread = _moments(draws)
        row[f"mean_error_{name}"] = float(((mean - nuts.mean) / sd).pow(2).mean().sqrt())
        row[f"sd_ratio_{name}"] = float((spread / sd).log().mean().exp())
    return row


def _posterior_grid(trained: TrainedVAE, x: torch.Tensor, draws: torch.Tensor):
    """log p(x, z) of one image on a grid around draws (S, 2) of NUTS and the q's:
    (z1, z2, log density), each (60, 60)."""
    low, high = draws.quantile(0.005, dim=0), draws.quantile(0.995, dim=0)
    pad = 0.25 * (high - low)
    axes = [torch.linspace(float(low[j] - pad[j]), float(high[j] + pad[j]), _GRID)
            for j in range(2)]
    z1, z2 = torch.meshgrid(*axes, indexing="xy")
    z = torch.stack([z1, z2], -1).reshape(-1, 1, 2)
    with torch.no_grad():
        log_density = LatentJoint(trained.model, x.unsqueeze(0)).log_joint(z).reshape(_GRID, _GRID)
    return z1, z2, log_density


def inference_gaps(trained: TrainedVAE, x: torch.Tensor, options: GapsOptions,
                   progress: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """Per-image estimates (columns of (N,) tensors, keys of :data:`ROWS`) and the extra
    results (budgets, seconds, NUTS rows, draws for the figures) for the images x (N, D)."""
    model, guide, o = trained.model, trained.guide, options
    if getattr(guide, "point_mass", False):
        raise UserError("this checkpoint's guide is a point mass (delta): it has no ELBO and "
                        "no inference gap; train a VAE with a density guide")
    pyro.set_rng_seed(o.seed)
    seconds = {}
    start = time.perf_counter()
    amortized = importance_estimate(model, guide, x, o.eval_particles, progress)
    seconds["importance_sampling"] = time.perf_counter() - start
    start = time.perf_counter()
    annealed = ais_log_likelihood(model, x, o.ais_steps, o.ais_chains, o.leapfrog,
                                  progress=progress)
    seconds["ais"] = time.perf_counter() - start
    fits: dict[str, LocalFit] = {}
    for name, fit in (("q_star", refine_gaussian), ("flow", fit_local_flow)):
        if name == "flow" and o.flow_layers == 0:
            continue
        start = time.perf_counter()
        bar = progress_bar(x.shape[0], f"{'q*' if name == 'q_star' else 'flow q'}: "
                           f"{o.refine_steps} steps", progress)
        kwargs = {"layers": o.flow_layers} if name == "flow" else {}
        fits[name] = fit(model, guide, x, steps=o.refine_steps, particles=o.refine_particles,
                         eval_particles=o.eval_particles, bar=bar, **kwargs)
        bar.close()
        seconds[name] = time.perf_counter() - start
    bounds = [amortized.log_likelihood, annealed.log_likelihood,
              *(f.log_likelihood for f in fits.values())]
    log_px = torch.stack(bounds).max(0).values
    q_star = fits["q_star"]
    flow = fits.get("flow")
    columns = {
        "log_px": log_px,
        "log_px_is": amortized.log_likelihood,
        "log_px_ais": annealed.log_likelihood,
        "elbo_q": amortized.elbo,
        "elbo_q_star": q_star.elbo,
        "elbo_flow": flow.elbo if flow else torch.full_like(log_px, math.nan),
        "inference_gap": log_px - amortized.elbo,
        "approximation_gap": log_px - q_star.elbo,
        "amortization_gap": q_star.elbo - amortized.elbo,
        "flow_gain": flow.elbo - q_star.elbo if flow else torch.full_like(log_px, math.nan),
        "log_px_is_q_star": q_star.log_likelihood,
        "elbo_q_star_se": q_star.elbo_se,
        "q_star_late_gain": q_star.late_gain,
        "ais_acceptance": annealed.acceptance,
    }
    joint = LatentJoint(model, x, keep_stream=True)
    q_draws, _ = guide_draws(guide, joint, q_star.draws.shape[0])
    draws = {"q": q_draws, "q*": q_star.draws, **({"flow": flow.draws} if flow else {})}
    nuts_rows, panels = [], []
    start = time.perf_counter()
    for i in range(min(o.nuts_images, x.shape[0])):
        if progress:
            say(f"NUTS on z | x for image {i + 1} of {min(o.nuts_images, x.shape[0])}")
        init = q_star.draws[:, i].mean(0)
        nuts = posterior_nuts(model, x[i], init, o.nuts_samples, o.nuts_samples, o.nuts_chains)
        nuts_rows.append(_nuts_row(i, nuts, {k.replace("*", "_star"): v[:, i]
                                             for k, v in draws.items()}))
        if len(joint.sites) == 1 and joint.latent_dim == 2:
            flat = nuts.draws.reshape(-1, 2)
            around = torch.cat([flat, *(v[:, i] for v in draws.values())])
            panels.append({"grid": _posterior_grid(trained, x[i], around), "nuts": flat,
                           **{k: v[:, i] for k, v in draws.items()}})
    seconds["nuts"] = time.perf_counter() - start
    extra = {"seconds": seconds, "nuts": nuts_rows, "panels": panels}
    return columns, extra


def _mean_se(values: torch.Tensor) -> dict:
    values = values[~values.isnan()]
    n = values.numel()
    return {"mean": float(values.mean()) if n else math.nan,
            "se": float(values.std() / math.sqrt(n)) if n > 1 else math.nan}


def gaps_table(summary: dict, budget: str) -> str:
    """The markdown table of the averages: one row per quantity, mean and standard error."""
    lines = [f"Nats per image, mean over images with its standard error; {budget}.", "",
             "| quantity | mean | s.e. |", "|---|---:|---:|"]
    for key, label in ROWS:
        cell = summary[key]
        lines.append(f"| {label} | {cell['mean']:.2f} | {cell['se']:.2f} |")
    return "\n".join(lines) + "\n"


def budget_line(o: GapsOptions, images: int) -> str:
    """The budget in one line: images, K, T (C chains, L leapfrog), S (M particles)."""
    return (f"{images} test images, IS K = {o.eval_particles}, AIS T = {o.ais_steps} "
            f"({o.ais_chains} chains, {o.leapfrog} leapfrog steps), refinement S = "
            f"{o.refine_steps} Adam steps of {o.refine_particles} draws, flow "
            f"{o.flow_layers} IAF layers")


def _test_images(trained: TrainedVAE, images: int, device: str) -> tuple[torch.Tensor, str]:
    """The first ``images`` test images of the checkpoint's data, as ``evaluate`` reads them."""
    data = trained.config.data
    x = load_dataset(data.dataset, path=data.path, data_dir=data.data_dir, device=device).x_test
    if images > x.shape[0]:
        raise UserError(f"--images {images}: the test split of {data.path or data.dataset} "
                        f"has {x.shape[0]} images; ask for at most that many")
    if trained.binary_data:
        x = binarize_test_set(x)  # the draw train_vae and evaluate use
    return x[:images], f"{data.path or data.dataset} (test split)"


def run_gaps(checkpoint: str | Path, out: str | Path, options: GapsOptions, *,
             overwrite: bool = False, progress: bool = True, device: str = "cpu") -> dict:
    """Compute the gaps of ``checkpoint`` on its test images and write them to ``out``."""
    options.check()
    out = prepare_out(out, overwrite)  # refused before the long work
    trained = restore_vae(checkpoint, device)
    x, source = _test_images(trained, options.images, device)
    with running_threads(options.threads, name="--threads",
                         announce=progress) as (threads, threads_reason):
        columns, extra = inference_gaps(trained, x, options, progress)
    summary = {key: _mean_se(values) for key, values in columns.items()}
    budget = budget_line(options, x.shape[0])
    write_csv_atomically(out / "gaps.csv", [
        ["image", *columns],
        *([i, *(f"{float(v[i]):.4f}" for v in columns.values())] for i in range(x.shape[0])),
    ])
    write_text_atomically(out / "gaps.md", gaps_table(summary, budget))
    figures = {"gaps": str(plots.save_gap_bars(summary, out / "gaps.png", budget))}
    if extra["panels"]:
        figures["posterior"] = str(plots.save_posterior_panels(extra["panels"],
                                                               out / "posterior.png"))
    metrics = {
        "checkpoint": str(checkpoint),
        "data": source,
        "num_images": x.shape[0],
        "options": asdict(options),
        "budget": budget,
        "reference_log_px": "per image, the largest of IS with q, AIS, IS with q*, IS with "
                            "the flow",
        **{key: summary[key] for key, _ in ROWS},
        "log_px_is_q_star": summary["log_px_is_q_star"],
        "q_star_late_gain": summary["q_star_late_gain"],
        "ais_acceptance": summary["ais_acceptance"]["mean"],
        "nuts": extra["nuts"],
        "seconds": extra["seconds"],
        "threads": threads,
        "threads_reason": threads_reason,
        "files": {"per_image": str(out / "gaps.csv"), "table": str(out / "gaps.md")},
        "figures": figures,
    }
    write_metrics(out, metrics)
    return metrics
