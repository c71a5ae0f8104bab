"""The Gaussian mixture end to end: data -> fit by a named route -> choice of K -> metrics, figures.

:func:`run_gmm` takes :class:`GMMOptions` (what ``pyro-vae gmm`` parses its flags into) and
returns the metrics it also writes to ``out/metrics.json``: log-likelihoods in nats per point
(higher is better), BIC and AIC (lower is better), the fitted parameters, the route's
diagnostics and, for K = 1 .. K + 2 by EM, the selection curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import load_dataset, read_numpy
from ..errors import UserError
from ..inference.gmm import aic, bic, check_data, fit_gmm, select_components
from ..inference.gmm_em import check_reg_covar
from ..models.gmm_density import log_marginal, random_mixture, sample_mixture
from ..progress import say
from .runs import prepare_out, write_metrics

__all__ = ["GMMOptions", "MAX_SEPARATION", "MAX_SIMULATED", "Simulation", "load_gmm_data",
           "run_gmm"]

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


@dataclass(frozen=True)
class GMMOptions:
    """One ``pyro-vae gmm`` run.

    Exactly one source: ``data`` (an N x D ``.npy`` file; 20% held out unless ``test`` is
    given), ``dataset`` (a name in :data:`pyro_vae.data.DATASETS`, with its test split) or
    ``simulate``.  ``pca`` projects train and test onto the first P principal axes of train.
    ``steps`` is the ``vi`` route's SVI steps; ``samples`` the ``nuts`` route's draws per chain
    (as many warm-up steps, 2 chains).  ``idata`` (``vi``, ``nuts``) is a NetCDF file for the
    ArviZ InferenceData.
    """

    components: int
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
    seed: int = 0
    out: Path = Path("runs/gmm")
    overwrite: bool = False
    idata: Path | None = None

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
    """Fit, score, choose K and draw; returns the metrics written to ``out/metrics.json``.

    Writes ``metrics.json``, ``mixture.png`` (the components over the data) and
    ``selection.png`` (log-likelihoods, BIC and AIC against K) to ``options.out``, and the
    InferenceData to ``options.idata`` when given.
    """
    x_train, x_test, source = load_gmm_data(options)
    n, d = x_train.shape
    k = options.components
    if not 1 <= k <= n:
        raise UserError(f"--components must be between 1 and the N={n} training points, got {k}")
    check_reg_covar(options.reg_covar)
    if options.steps < 1 or options.samples < 2:
        raise UserError("--steps must be >= 1 and --samples >= 2")
    if options.idata is not None and (options.inference == "map"
                                      or Path(options.idata).suffix != ".nc"):
        raise UserError("--idata needs posterior draws (--inference vi or nuts) and a file name "
                        "ending in .nc")
    out = prepare_out(options.out, options.overwrite)
    fitted = fit_gmm(x_train, k, options.covariance, options.inference, seed=options.seed,
                     restarts=options.restarts, reg_covar=options.reg_covar, steps=options.steps,
                     num_samples=options.samples, warmup_steps=options.samples)
    plug_in_total = log_marginal(x_train, fitted.params).sum().item()
    # K from 1 to K + 2 by the fast EM route: the curve and the BIC/AIC choice
    ks = list(range(1, min(k + 2, n) + 1))
    selection = select_components(x_train, x_test, ks, options.covariance, "map",
                                  seed=options.seed, restarts=options.restarts,
                                  reg_covar=options.reg_covar)
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
        "selection": selection,
        "best_k": {
            "bic": min(selection, key=lambda row: row["bic"])["components"],
            "aic": min(selection, key=lambda row: row["aic"])["components"],
            "test_log_likelihood": max(selection, key=lambda row: row["test_log_likelihood"])[
                "components"],
        },
    }
    at_edge = [name for name, best in metrics["best_k"].items() if best == ks[-1] < n]
    if at_edge:  # the sweep stopped where the criterion was still improving
        metrics["selection_warning"] = (
            f"the best K by {' and '.join(at_edge)} is {ks[-1]}, the largest tried: a larger K "
            f"may be better; try --components {ks[-1] + 2}")
        say(f"pyro-vae gmm: warning: {metrics['selection_warning']}")
    # matplotlib is heavy: imported only when a run draws its figures
    from ..plots.gmm import save_mixture_figure, save_selection_curve

    metrics["figures"] = {
        "mixture": str(save_mixture_figure(x_train, fitted.params, out / "mixture.png",
                                           f"{options.inference}: K={k}, {options.covariance}")),
        "selection": str(save_selection_curve(selection, out / "selection.png")),
    }
    if options.idata is not None:
        from ..arviz import gmm_inference_data, save_inference_data  # arviz is heavy

        idata = gmm_inference_data(x_train, fitted, num_chains=fitted.info.get("num_chains", 1),
                                   seed=options.seed)
        metrics["idata"] = str(save_inference_data(idata, options.idata))
    write_metrics(out, metrics)
    return metrics
