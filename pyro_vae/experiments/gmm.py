"""The Gaussian mixture end to end: data -> fit by a named route -> choice of K -> metrics, figures.

:func:`run_gmm` takes :class:`GMMOptions` (what ``pyro-vae gmm`` parses its flags into) and
returns the metrics it also writes to ``out/metrics.json``: log-likelihoods in nats per point
(higher is better), BIC and AIC (lower is better), the fitted parameters, the route's
diagnostics and, when a range of K is asked for, the selection curve over it; the fitted
mixture is saved as ``out/mixture.pt``.  :func:`run_gmm_predict` scores new points with a
saved mixture (``pyro-vae gmm-predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import load_dataset, read_numpy
from ..errors import UserError
from ..files import atomic_write
from ..inference.gaussian_mixture import GaussianMixture
from ..inference.gmm import aic, bic, check_data, fit_gmm, selection_row
from ..inference.gmm_em import check_reg_covar
from ..models.gmm_density import log_marginal, random_mixture, sample_mixture
from ..progress import progress_bar, say
from ..train import TrainingLog
from .runs import prepare_out, write_metrics

__all__ = ["GMMOptions", "MAX_SEPARATION", "MAX_SIMULATED", "Simulation", "load_gmm_data",
           "parse_components", "run_gmm", "run_gmm_predict"]

MAX_SIMULATED = 10**8  # numbers in a simulated data set (800 MB of float64)
MAX_SEPARATION = 1e6  # far apart enough for any demonstration, far from overflowing a square


@dataclass(frozen=True)
class Simulation:
    """Simulated data: ``n`` training points (and n / 4 test points) from a random ``k``-component
    mixture in ``d`` dimensions whose means are ``separation`` x N(0, I) apart
    (:func:`~pyro_vae.models.gmm_density.random_mixture`)."""

    n: int
    d: int
    k: int
    separation: float = 4.0

    @classmethod
    def parse(cls, spec: str) -> Simulation:
        """``"N,D,K[,SEP]"`` -> Simulation; :class:`UserError` unless N, D, K are positive
        integers."""
        try:
            fields = [float(v) for v in spec.split(",")]
            n, d, k = (int(v) for v in fields[:3])
            separation = fields[3] if len(fields) > 3 else 4.0
            integers = all(v == int(v) for v in fields[:3])
            if len(fields) not in (3, 4) or min(n, d, k) < 1 or not integers:
                raise ValueError
            if n * d > MAX_SIMULATED or not 0 <= separation <= MAX_SEPARATION:
                raise ValueError
        except ValueError:
            raise UserError(
                f"--simulate takes N,D,K[,SEP] with positive integers N, D, K (N x D at most "
                f"{MAX_SIMULATED}) and SEP from 0 to {MAX_SEPARATION:g}; got {spec!r}"
            ) from None
        return cls(n, d, k, separation)


def parse_components(text: str) -> int | tuple[int, int]:
    """``"K"`` -> K (fit that K), ``"A:B"`` -> (A, B) (fit each K from A to B and keep the one
    BIC chooses); :class:`UserError` unless whole numbers with A <= B (their range against the
    data is checked by :func:`run_gmm`)."""
    try:
        bounds = [int(part) for part in text.split(":")]
        if len(bounds) not in (1, 2) or bounds[0] > bounds[-1]:
            raise ValueError
    except ValueError:
        raise UserError(f"--components takes a number K or a range A:B of whole numbers with "
                        f"A <= B (e.g. 2:8), got {text!r}") from None
    return bounds[0] if len(bounds) == 1 else (bounds[0], bounds[1])


@dataclass(frozen=True)
class GMMOptions:
    """One ``pyro-vae gmm`` run.

    Exactly one source: ``data`` (an N x D ``.npy`` file; 20% held out unless ``test`` is
    given), ``dataset`` (a name in :data:`pyro_vae.data.DATASETS`, with its test split) or
    ``simulate``.  ``pca`` projects train and test onto the first P principal axes of train.
    ``components`` is K, or a range (A, B) of K to fit by the route, BIC choosing among them.
    ``steps`` is the ``vi`` route's SVI steps; ``samples`` the ``nuts`` route's draws per chain
    (as many warm-up steps) and ``chains`` its chains.  ``idata`` (``vi``, ``nuts``) is a
    NetCDF file for the ArviZ InferenceData.  ``tensorboard`` (``vi``) is a folder for the
    TensorBoard event files of the SVI steps: itself for one K, ``K<k>`` in it for each K of a
    range (the ELBO per point every few steps, then the options as hparams with the final
    ELBO, test log-likelihood and BIC of that K, as in ``selection``).
    """

    components: int | tuple[int, int]
    data: Path | None = None
    dataset: str | None = None
    simulate: Simulation | None = None
    test: Path | None = None
    pca: int | None = None
    covariance: str = "diag"
    inference: str = "map"
    restarts: int = 3
    reg_covar: float = 1e-6
    steps: int = 500
    samples: int = 200
    # chains run one after another, each adding its whole time: 2 is the fewest with a
    # between-chain r-hat (the toy's default too); 4 for a final analysis (Vehtari et al. 2021)
    chains: int = 2
    seed: int = 0
    out: Path = Path("runs/gmm")
    overwrite: bool = False
    idata: Path | None = None
    tensorboard: Path | None = None

    @property
    def ks(self) -> list[int]:
        """The numbers of components to fit."""
        low, high = (self.components,) * 2 if isinstance(self.components, int) else (
            self.components)
        return list(range(low, high + 1))

    def __post_init__(self):
        sources = [self.data, self.dataset, self.simulate]
        if sum(source is not None for source in sources) != 1:
            raise UserError("give exactly one data source: data, dataset or simulate")


def _read_matrix(path: Path, what: str) -> torch.Tensor:
    """An N x D ``.npy`` file as float64 (N, D), checked by :func:`check_data`."""
    array = read_numpy(path)
    if not isinstance(array, np.ndarray):
        array.close()
        raise UserError(f"{what} {path} must be a .npy array (N x D), not an .npz archive")
    return check_data(array, f"{what} {path}")


def _pca(x_train: torch.Tensor, x_test: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets projected on the first ``p`` principal axes of x_train (centred at its mean)."""
    if not 1 <= p <= x_train.shape[1]:
        raise UserError(f"--pca must be between 1 and D={x_train.shape[1]}, got {p}")
    centre = x_train.mean(0)
    _, _, vt = torch.linalg.svd(x_train - centre, full_matrices=False)
    basis = vt[:p].T
    return (x_train - centre) @ basis, (x_test - centre) @ basis


def load_gmm_data(options: GMMOptions) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x_train (N, D), x_test (M, D), description) as float64 tensors from the options' source.

    Simulated data and the random split of ``data`` follow ``options.seed``.
    """
    if options.simulate is not None:
        spec = options.simulate
        truth = random_mixture(spec.k, spec.d, separation=spec.separation, anisotropy=3.0,
                               full=options.covariance == "full", seed=options.seed)
        generator = torch.Generator().manual_seed(options.seed)
        x_train, _ = sample_mixture(truth, spec.n, generator)
        x_test, _ = sample_mixture(truth, max(1, spec.n // 4), generator)
        source = (f"simulated: {spec.n} points, D={spec.d}, K={spec.k}, "
                  f"separation {spec.separation:g}")
    elif options.dataset is not None:
        data = load_dataset(options.dataset)
        x_train = check_data(data.x_train, options.dataset)
        x_test = check_data(data.x_test, f"{options.dataset} test split")
        source = f"{options.dataset} (pixels in [0, 1])"
    else:
        x = _read_matrix(options.data, "--data")
        source = str(options.data)
        if options.test is None:
            if len(x) < 2:
                raise UserError(
                    f"--data {options.data} has {len(x)} row; need 2 or more to hold some out"
                )
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(options.seed))
            n_test = max(1, len(x) // 5)
            x_train, x_test = x[order[n_test:]], x[order[:n_test]]
        else:
            x_train = x
    if options.test is not None:
        if options.data is None:
            raise UserError(
                "--test goes with --data; named and simulated data bring their own test set"
            )
        x_test = _read_matrix(options.test, "--test")
        if x_test.shape[1] != x_train.shape[1]:
            raise UserError(
                f"--test has D={x_test.shape[1]} features but --data has D={x_train.shape[1]}"
            )
    if options.pca is not None:
        x_train, x_test = _pca(x_train, x_test, options.pca)
        source += f", first {options.pca} principal components"
    return x_train, x_test, source


def run_gmm(options: GMMOptions) -> dict[str, Any]:
    """Fit (each K of a range), score, choose K and draw; the metrics of ``out/metrics.json``.

    Writes ``metrics.json``, ``mixture.pt`` (the fitted mixture,
    :meth:`~pyro_vae.inference.gaussian_mixture.GaussianMixture.save`), ``mixture.png`` (the
    components over the data) and, for a range of K, ``selection.png`` (log-likelihoods, BIC
    and AIC against K) to ``options.out``, and the InferenceData to ``options.idata`` when
    given.  Of a range, the K with the lowest BIC is the fit kept (BIC reads the training
    data only; the test log-likelihood stays an honest score of the choice).
    """
    x_train, x_test, source = load_gmm_data(options)
    n, d = x_train.shape
    ks = options.ks
    if not 1 <= ks[0] <= ks[-1] <= n:
        shown = options.components if len(ks) == 1 else f"{ks[0]}:{ks[-1]}"
        raise UserError(f"--components must be between 1 and the N={n} training points, "
                        f"got {shown}")
    check_reg_covar(options.reg_covar)
    if options.steps < 1 or options.samples < 2 or options.chains < 1:
        raise UserError("--steps must be >= 1, --samples >= 2 and --chains >= 1")
    if options.idata is not None and (options.inference == "map"
                                      or Path(options.idata).suffix != ".nc"):
        raise UserError("--idata needs posterior draws (--inference vi or nuts) and a file name "
                        "ending in .nc")
    logs = _training_logs(options)
    out = prepare_out(options.out, options.overwrite)
    fits, bar = {}, progress_bar(len(ks), f"gmm: K = {ks[0]}..{ks[-1]}", enabled=len(ks) > 1)
    for k in ks:
        fits[k] = fit_gmm(x_train, k, options.covariance, options.inference, seed=options.seed,
                          restarts=options.restarts, reg_covar=options.reg_covar,
                          steps=options.steps, num_samples=options.samples,
                          warmup_steps=options.samples, num_chains=options.chains,
                          log=logs.get(k))
        bar.update()
    bar.close()
    selection = [selection_row(fitted, x_train, x_test) for fitted in fits.values()]
    for row in selection if logs else ():
        _log_hparams(logs[row["components"]], options, fits[row["components"]], row)
    k = min(selection, key=lambda row: row["bic"])["components"]
    fitted = fits[k]
    plug_in_total = log_marginal(x_train, fitted.params).sum().item()
    metrics = {
        "data": source,
        "num_train": n,
        "num_test": x_test.shape[0],
        "dim": d,
        "components": k,
        "covariance": options.covariance,
        "inference": options.inference,
        "train_log_likelihood": fitted.log_likelihood(x_train).mean().item(),
        "test_log_likelihood": fitted.log_likelihood(x_test).mean().item(),
        "log_likelihood_kind": "plug-in log p(x | MAP)" if fitted.samples is None
        else "posterior predictive log mean_s p(x | theta_s)",
        "bic": bic(plug_in_total, n, k, d, options.covariance),
        "aic": aic(plug_in_total, k, d, options.covariance),
        "weights": fitted.params.weights.tolist(),
        "means": fitted.params.locs.tolist(),
        "scales": fitted.params.scales.tolist(),
        "seconds": fitted.seconds,
        "diagnostics": fitted.info,
    }
    if options.tensorboard is not None:
        metrics["tensorboard"] = str(options.tensorboard)
    if len(ks) > 1:
        metrics.update(components_tried=[ks[0], ks[-1]], chosen_by="bic", selection=selection)
        metrics["best_k"] = {
            "bic": k,
            "aic": min(selection, key=lambda row: row["aic"])["components"],
            "test_log_likelihood": max(selection, key=lambda row: row["test_log_likelihood"])[
                "components"],
        }
        warning = _edge_warning(metrics["best_k"], ks, n)
        if warning:
            metrics["selection_warning"] = warning
            say(f"pyro-vae gmm: warning: {warning}")
    mixture = GaussianMixture.from_fit(fitted, x_train, n_init=options.restarts,
                                       reg_covar=options.reg_covar, seed=options.seed)
    metrics["mixture"] = str(mixture.save(out / "mixture.pt"))
    # matplotlib is heavy: imported only when a run draws its figures
    from ..plots.gmm import save_mixture_figure, save_selection_curve

    metrics["figures"] = {
        "mixture": str(save_mixture_figure(x_train, fitted.params, out / "mixture.png",
                                           f"{options.inference}: K={k}, {options.covariance}")),
    }
    if len(ks) > 1:
        metrics["figures"]["selection"] = str(save_selection_curve(selection,
                                                                   out / "selection.png"))
    if options.idata is not None:
        from ..arviz import gmm_inference_data, save_inference_data  # arviz is heavy

        idata = gmm_inference_data(x_train, fitted, num_chains=fitted.info.get("num_chains", 1),
                                   seed=options.seed)
        metrics["idata"] = str(save_inference_data(idata, options.idata))
    write_metrics(out, metrics)
    return metrics


def _training_logs(options: GMMOptions) -> dict[int, TrainingLog]:
    """K -> the TensorBoard log of its ``vi`` fit (``tensorboard`` for one K, ``K<k>`` in it
    for a range); none without ``options.tensorboard``."""
    if options.tensorboard is None:
        return {}
    if options.inference != "vi":
        raise UserError(f"--tensorboard logs SVI's steps: --inference {options.inference} has "
                        "none (give vi)")
    ks, folder = options.ks, Path(options.tensorboard)
    return {k: TrainingLog(folder if len(ks) == 1 else folder / f"K{k}") for k in ks}


def _log_hparams(log: TrainingLog, options: GMMOptions, fitted, row: dict[str, Any]) -> None:
    """One K's options as hparams with its final numbers (``row``: its selection row), closed."""
    config = {"gmm": {"components": row["components"], "covariance": options.covariance,
                      "steps": options.steps, "restarts": options.restarts,
                      "seed": options.seed}}
    log.hparams(config, {"final_elbo_per_point": fitted.info["final_elbo_per_point"],
                         "test_log_likelihood": row["test_log_likelihood"], "bic": row["bic"]})
    log.close()


def _edge_warning(best_k: dict[str, int], ks: list[int], n: int) -> str | None:
    """What to say when a criterion's best K is an end of the range tried that K could pass
    (the criterion may still improve beyond it); ``None`` when every best K is inside."""
    high = [name for name, best in best_k.items() if best == ks[-1] < n]
    low = [name for name, best in best_k.items() if best == ks[0] > 1]
    width = ks[-1] - ks[0]
    if high:
        return (f"the best K by {' and '.join(high)} is {ks[-1]}, the largest tried: a larger K "
                f"may be better; try --components {ks[-1]}:{min(n, ks[-1] + max(width, 2))}")
    if low:
        return (f"the best K by {' and '.join(low)} is {ks[0]}, the smallest tried: a smaller K "
                f"may be better; try --components {max(1, ks[0] - max(width, 2))}:{ks[0]}")
    return None


def run_gmm_predict(model: Path, data: Path, out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Score the points of ``data`` (an N x D ``.npy`` file) with a saved mixture.

    Writes ``out/predictions.npz`` (``labels`` (N,) int64, the most probable component;
    ``responsibilities`` (N, K), p(z_i = j | x_i); ``log_likelihood`` (N,), log p(x_i) in
    nats) and ``out/metrics.json``; returns the metrics.  Inputs are checked before ``out``
    is created.
    """
    mixture = GaussianMixture.load(model)
    x = _read_matrix(data, "--data")
    if x.shape[1] != mixture.n_features_in_:
        raise UserError(f"--data has D={x.shape[1]} features but the mixture {model} was fitted "
                        f"on D={mixture.n_features_in_}")
    out = prepare_out(out, overwrite)
    responsibilities = mixture.predict_proba(x)
    labels = responsibilities.argmax(-1)
    log_likelihood = mixture.score_samples(x)
    path = out / "predictions.npz"
    with atomic_write(path) as f:  # never half a file at ``path``
        np.savez(f, labels=labels, responsibilities=responsibilities,
                 log_likelihood=log_likelihood)
    metrics = {
        "model": str(model),
        "data": str(data),
        "num_points": x.shape[0],
        "dim": x.shape[1],
        "components": mixture.n_components,
        "covariance": mixture.covariance_type,
        "inference": mixture.inference_,
        "mean_log_likelihood": float(log_likelihood.mean()),
        "counts": np.bincount(labels, minlength=mixture.n_components).tolist(),
        "predictions": str(path),
    }
    write_metrics(out, metrics)
    return metrics
