"""What ``pyro-vae compare`` runs on each model: one row of measurements per name and seed.

``--inference`` names the same things here as in ``pyro-vae toy`` and ``pyro-vae gmm``:

``vae``  an ELBO of :data:`pyro_vae.elbos.ELBOS` (SVI with that ELBO);
``toy``  a route of :data:`pyro_vae.inference.uniform_scale.TOY_INFERENCES` (``mle``, ``svi``,
         ``nuts``, ``nuts-latent``), or an ELBO name: the ``svi`` route with that ELBO;
``gmm``  a route of :data:`pyro_vae.inference.gmm.GMM_ROUTES` (``map``, ``vi``, ``nuts``).

Each name gives exactly one row per seed.  With ``reference=True`` the models with known
parameters (``toy``, ``gmm``: the data are simulated) add a row "true parameters".

Budgets are named for what they count, as in ``toy`` and ``gmm`` (:data:`BUDGETS`):
``epochs`` (the VAE's passes over the data), ``steps`` (SVI steps of the toy's SVI fits and
the mixture's ``vi``), ``samples`` and ``warmup`` (NUTS draws and warm-up steps per chain) and
``chains`` (NUTS chains).  Each model says which budgets each of its
algorithms reads (:attr:`CompareModel.budgets`) and their defaults.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyro
import torch

from ..build import build_vae
from ..config import load_config
from ..data import binarize, load_dataset
from ..elbos import ELBOS, importance_estimate, make_elbo
from ..inference import uniform_scale as toy
from ..inference.gmm import GMM_ROUTES, fit_gmm
from ..models.gmm_density import log_marginal, random_mixture, sample_mixture
from ..models.uniform_scale import UniformScale
from ..progress import say
from ..registry import Registry
from ..rng import single_thread
from ..train import TrainingLog, fit
from .runs import first_rows

__all__ = ["BUDGETS", "COMPARE_MODELS", "Announcer", "CompareModel", "CompareRun",
           "gradient_variance"]

# every budget of a comparison: its CompareRun field -> what it counts
BUDGETS = {
    "epochs": "training epochs",
    "steps": "SVI steps",
    "samples": "NUTS draws per chain",
    "warmup": "NUTS warm-up steps per chain",
    "chains": "NUTS chains",
}

GRADIENT_DRAWS = 20
VAE_IDATA_IMAGES = 100  # test images in the VAE's InferenceData: (S, 100, 784) per group
REFERENCE = "true parameters"

# what each model's function fills: algorithm name -> InferenceData of its seed-0 fit
InferenceDataSink = dict[str, Any] | None


@dataclass
class CompareRun:
    """The options of one comparison (what ``pyro-vae compare`` parses)."""

    model: str  # a name in COMPARE_MODELS
    inference: list[str]  # algorithms, each valid for the model
    out: Path = Path("runs/compare")
    overwrite: bool = False
    seeds: int = 3  # seeds 0 .. seeds - 1 per algorithm
    particles: int = 5  # particles per step of every ELBO (K of iwae and renyi)
    eval_particles: int = 1000  # K of the VAE's importance-sampled test log-likelihood
    # budgets (BUDGETS); None: the model's default (CompareModel.defaults; warmup: samples)
    epochs: int | None = None  # vae: passes over the training data (the config's when None)
    steps: int | None = None  # SVI steps (toy: svi and ELBO names; gmm: vi)
    samples: int | None = None  # NUTS draws per chain (toy: nuts, nuts-latent; gmm: nuts)
    warmup: int | None = None  # NUTS warm-up steps per chain
    chains: int | None = None  # NUTS chains (toy: nuts, nuts-latent; gmm: nuts)
    config: Path | None = None  # VAE only
    overrides: list[str] = field(default_factory=list)  # VAE only: "section.key=value"
    reference: bool = False  # add the true parameters' row (toy, gmm)
    idata: Path | None = None  # write each algorithm's seed-0 posterior to FILE.<name>.nc
    tensorboard: Path | None = None  # TensorBoard runs DIR/<algorithm>-seed<s>


@dataclass(frozen=True)
class CompareModel:
    """A model ``compare`` can run: the names it accepts, the rows it measures, and the
    budgets (fields of :data:`BUDGETS`) each name reads, with their defaults."""

    inferences: Callable[[], list[str]]
    rows: Callable[[CompareRun, InferenceDataSink], list[dict[str, Any]]]
    budgets: Callable[[str], tuple[str, ...]]
    defaults: dict[str, int] = field(default_factory=dict)
    has_reference: bool = False

    def budgeted(self, run: CompareRun) -> CompareRun:
        """``run`` with every budget it leaves unset at this model's default (``warmup``: as
        many steps as ``samples``); budgets the model has no default for stay None."""
        filled = {name: getattr(run, name) if getattr(run, name) is not None
                  else self.defaults.get(name) for name in BUDGETS}
        if filled["warmup"] is None:
            filled["warmup"] = filled["samples"]
        return replace(run, **filled)


COMPARE_MODELS = Registry("compare model")


def gradient_variance(loss_fn, model, guide, x: torch.Tensor, n: int, params) -> float:
    """Sum over parameters of the variance of d(loss / n)/d params over 20 independent draws."""
    draws = []
    for _ in range(GRADIENT_DRAWS):
        loss = loss_fn.differentiable_loss(model, guide, x, n=n) / n
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        draws.append(torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten()
                                for p, g in zip(params, grads, strict=True)]))
    return torch.stack(draws).var(0).sum().item()


def _epoch_seconds(result) -> float:
    """The median epoch after the first, which pays one-off start-up costs."""
    return statistics.median(result.seconds_per_epoch[1:] or result.seconds_per_epoch)


def _row(name: str, seed: int, final_bound: float, test: float, variance: float | None = None,
         training=None, seconds: float | None = None) -> dict[str, Any]:
    """One row of the table; ``training`` (a FitResult) gives the timings of SVI fits."""
    return {"algorithm": name, "seed": seed, "final_bound": final_bound,
            "test_log_likelihood": test, "gradient_variance": variance,
            "seconds_per_epoch": None if training is None else _epoch_seconds(training),
            "seconds": seconds if training is None else sum(training.seconds_per_epoch)}


def _open_log(run: CompareRun, name: str, seed: int) -> TrainingLog | None:
    """The TensorBoard run ``DIR/<name>-seed<seed>`` of one cell, open from step 0 (so that
    routes without steps get their hparams too), or None without ``run.tensorboard``."""
    if run.tensorboard is None:
        return None
    log = TrainingLog(Path(run.tensorboard) / f"{name}-seed{seed}")
    log.start(0)
    return log


def _close_log(log: TrainingLog | None, run: CompareRun, row: dict[str, Any]) -> None:
    """The cell's model, algorithm and seed as hparams with its final bound and test
    log-likelihood (the row's numbers), then close the run."""
    if log is None:
        return
    log.hparams({"compare": {"model": run.model, "algorithm": row["algorithm"],
                             "seed": row["seed"]}},
                {"final_bound": row["final_bound"],
                 "test_log_likelihood": row["test_log_likelihood"]})
    log.close()


# ---------------------------------------------------------------------------- VAE


class Announcer:
    """Says on stderr which (algorithm, seed) cell starts: "compare [3/12] trace, seed 1"."""

    def __init__(self, run: CompareRun):
        self.total, self.started = len(run.inference) * run.seeds, 0

    def __call__(self, name: str, seed: int) -> None:
        self.started += 1
        say(f"compare [{self.started}/{self.total}] {name}, seed {seed}")


def compare_vae(run: CompareRun, idatas: InferenceDataSink = None) -> list[dict[str, Any]]:
    """Each ELBO trains the config's VAE from the same initial weights per seed."""
    overrides = list(run.overrides) + ([f"train.epochs={run.epochs}"] if run.epochs else [])
    config = load_config(run.config, overrides)
    data = load_dataset(config.data.dataset, path=config.data.path, data_dir=config.data.data_dir)
    data = first_rows(data, config.data.train_size, config.data.test_size)
    x_train, x_test, transform = binarize(data.x_train, data.x_test, config.data.binarize)
    t = config.train
    rows = []
    announce = Announcer(run)
    for name in run.inference:
        for seed in range(run.seeds):
            announce(name, seed)
            log = _open_log(run, name, seed)
            pyro.clear_param_store()  # every run starts afresh (autoguides keep state there)
            pyro.set_rng_seed(seed)
            model, guide = build_vae(config, data.dim, binary_data=config.data.binarize != "none",
                                     image_shape=data.image_shape)
            result = fit(model, guide, x_train, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                         elbo=name, num_particles=run.particles, seed=seed,
                         batch_transform=transform, progress=False, precision=t.precision,
                         log=log)
            pyro.set_rng_seed(seed)
            estimate = importance_estimate(model, guide, x_test, run.eval_particles)
            batch = x_train[: t.batch_size] if transform is None else transform(
                x_train[: t.batch_size])
            variance = gradient_variance(make_elbo(name, run.particles), model, guide, batch,
                                         x_train.shape[0], list(guide.parameters()))
            row = _row(name, seed, result.train_elbo[-1],
                       estimate.log_likelihood.mean().item(), variance, training=result)
            rows.append({**row, "test_elbo": estimate.elbo.mean().item()})
            _close_log(log, run, row)
            if idatas is not None and seed == 0:
                from ..arviz import vae_inference_data  # arviz is heavy: only when asked for

                # the export's log p(x_i) with the table's K
                idatas[name] = vae_inference_data(model, guide, x_test[:VAE_IDATA_IMAGES],
                                                  num_particles=run.eval_particles)
    return rows


COMPARE_MODELS.register("vae")(CompareModel(ELBOS.names, compare_vae, lambda name: ("epochs",)))


# ---------------------------------------------------------------------------- toy model


def compare_toy(run: CompareRun, idatas: InferenceDataSink = None) -> list[dict[str, Any]]:
    """Each route (or SVI with each ELBO) on one simulated training and test set.

    a = 0.5, b = 2, mu = 1, N = 500 each, for every seed (the seeds change initial weights,
    particles and draws).  ``run.steps`` full-batch SVI steps (default 300), ``run.samples``
    NUTS draws after ``run.warmup`` warm-up steps in each of ``run.chains`` chains (default
    150 each, one chain: the budget the table in docs/compare was measured with).
    ``final_bound`` is the SVI fit's last ELBO, or the exact training log-likelihood at the
    point estimate (mle) or the posterior mean (nuts); ``test_log_likelihood`` is exact
    (E1 closed form).
    """
    x = toy.simulate(0.5, 2.0, 1.0, 500, seed=0)
    x_test = toy.simulate(0.5, 2.0, 1.0, 500, seed=1)
    rows = []
    announce = Announcer(run)
    with single_thread():
        for seed in range(run.seeds):
            for name in run.inference:
                announce(name, seed)
                log = _open_log(run, name, seed)  # only the SVI routes log steps
                route, options = toy.toy_inference(name, toy.ToyOptions(
                    steps=run.steps, num_particles=run.particles, warmup=run.warmup,
                    samples=run.samples, chains=run.chains, log=log))
                pyro.clear_param_store()
                fitted = route(x, seed=seed, options=options)
                with torch.no_grad():
                    test = fitted.model.log_marginal(x_test).mean().item()
                if fitted.training is not None:  # an SVI fit: its own bound and gradients
                    variance = gradient_variance(
                        make_elbo(options.elbo, run.particles), fitted.model, fitted.guide, x,
                        x.shape[0], list(fitted.guide.parameters()))
                    rows.append(_row(name, seed, fitted.training.train_elbo[-1], test, variance,
                                     training=fitted.training))
                else:
                    with torch.no_grad():
                        train = fitted.model.log_marginal(x).mean().item()
                    rows.append(_row(name, seed, train, test, seconds=fitted.seconds))
                _close_log(log, run, rows[-1])
                has_draws = fitted.guide is not None or fitted.draws is not None
                if idatas is not None and seed == 0 and has_draws:
                    from ..arviz import toy_inference_data  # arviz is heavy: only when asked for

                    idatas[name] = (toy_inference_data(x, theta_draws=fitted.draws)
                                    if fitted.draws is not None else
                                    toy_inference_data(x, model=fitted.model, guide=fitted.guide))
            if run.reference:
                truth = UniformScale(0.5, 2.0, 1.0)
                with torch.no_grad():
                    rows.append(_row(REFERENCE, seed, truth.log_marginal(x).mean().item(),
                                     truth.log_marginal(x_test).mean().item()))
    return rows


def _toy_budgets(name: str) -> tuple[str, ...]:
    """SVI fits (``svi`` and ELBO names) read steps, NUTS routes draws, warm-up and chains."""
    route, _ = toy.toy_inference(name)
    if route is toy.fit_svi:
        return ("steps",)
    if route in (toy.fit_nuts, toy.fit_nuts_latent):
        return ("samples", "warmup", "chains")
    return ()  # mle: L-BFGS to convergence


# one chain of 150 NUTS draws and warm-up steps: what 300 steps gave when one flag set
# every budget (pyro-vae toy runs 2 chains; a comparison budgets its time)
COMPARE_MODELS.register("toy")(CompareModel(
    toy.toy_inference_names, compare_toy, _toy_budgets,
    defaults={"steps": 300, "samples": 150, "chains": 1}, has_reference=True,
))


# ---------------------------------------------------------------------------- mixture


def compare_gmm(run: CompareRun, idatas: InferenceDataSink = None) -> list[dict[str, Any]]:
    """The mixture's routes (map = EM, vi, nuts) on simulated data, K = 3, D = 2.

    1000 training and 1000 test points from one random 3-component mixture (the seeds change
    the fits' restarts, initial values and draws); ``run.steps`` SVI steps of ``vi`` (default
    200); ``run.chains`` NUTS chains (default 2) of ``run.samples`` draws after ``run.warmup``
    warm-up steps each (default 200 each).  ``map`` is EM to convergence.  Test
    log-likelihood: the exact marginal at the MAP (``map``) or the posterior predictive mean
    over draws (``vi``, ``nuts``).
    """
    truth = random_mixture(3, 2, separation=3.0, anisotropy=3.0, seed=0)
    generator = torch.Generator().manual_seed(0)
    x, _ = sample_mixture(truth, 1000, generator)
    x_test, _ = sample_mixture(truth, 1000, generator)
    rows = []
    announce = Announcer(run)
    for seed in range(run.seeds):
        for name in run.inference:
            announce(name, seed)
            log = _open_log(run, name, seed)  # only vi logs steps
            pyro.clear_param_store()  # the vi route's AutoNormal would resume from the last fit
            fitted = fit_gmm(x, 3, "diag", name, seed=seed, restarts=3, steps=run.steps,
                             num_samples=run.samples, warmup_steps=run.warmup,
                             num_chains=run.chains, log=log)
            if name == "vi":
                bound = fitted.info["final_elbo_per_point"]
            else:  # the log joint at the point estimate, per point
                bound = (log_marginal(x, fitted.params).sum()
                         + fitted.model.log_prior(fitted.params)).item() / x.shape[0]
            test = fitted.log_likelihood(x_test).mean().item()
            rows.append(_row(name, seed, bound, test, seconds=fitted.seconds))
            _close_log(log, run, rows[-1])
            if idatas is not None and seed == 0 and fitted.samples is not None:
                from ..arviz import gmm_inference_data  # arviz is heavy: only when asked for

                idatas[name] = gmm_inference_data(
                    x, fitted, num_chains=fitted.info.get("num_chains", 1))
        if run.reference:
            with torch.no_grad():
                rows.append(_row(REFERENCE, seed, log_marginal(x, truth).mean().item(),
                                 log_marginal(x_test, truth).mean().item()))
    return rows


_GMM_BUDGETS = {"map": (), "vi": ("steps",), "nuts": ("samples", "warmup", "chains")}

COMPARE_MODELS.register("gmm")(CompareModel(
    GMM_ROUTES.names, compare_gmm, lambda name: _GMM_BUDGETS.get(name, ()),
    defaults={"steps": 200, "samples": 200, "chains": 2}, has_reference=True,
))
