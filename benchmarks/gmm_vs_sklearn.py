"""EM on the Pyro mixture model (route ``map``) against scikit-learn's GaussianMixture.

For each setting both fit the same training points with the same K, covariance type,
number of restarts (k-means starts), ``tol``, ``reg_covar`` and ``max_iter``, one after the
other (the order alternates between repeats), with the same number of threads.  Printed:
held-out log-likelihood per point (nats, higher is better; mean over repeats, each with
its own seed) and fit time (median over repeats), as a Markdown table with differences
and time ratios.

Target (issue 6): held-out log-likelihood no worse than EM's by more than 0.01 nats/point,
in no more than EM's time for N >= 10k.  Ours is the estimator users keep,
:class:`pyro_vae.inference.gaussian_mixture.GaussianMixture`, built with the same arguments as
scikit-learn's; "labels agree" is the share of held-out points both assign to the same
component (components matched one to one by their means), on the first repeat.

    .venv/bin/python benchmarks/gmm_vs_sklearn.py            # every setting, a few minutes
    .venv/bin/python benchmarks/gmm_vs_sklearn.py --quick    # a small subset
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from common import write_markdown
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture as SklearnMixture
from threadpoolctl import threadpool_limits

from pyro_vae.data import load_dataset
from pyro_vae.inference.gaussian_mixture import GaussianMixture
from pyro_vae.models.gmm_density import random_mixture, sample_mixture


@dataclass
class Setting:
    name: str
    k: int
    covariance: str
    n: int = 0  # simulated: training points (test: n / 4, at least 2000)
    d: int = 0
    separation: float = 4.0
    anisotropy: float = 1.0
    pca: int = 0  # > 0: the digits data set projected on this many principal axes


SETTINGS = [
    Setting("well separated", 3, "full", n=10_000, d=2, separation=6.0),
    Setting("overlapping", 5, "diag", n=16_000, d=10, separation=1.0, anisotropy=2.0),
    Setting("overlapping", 5, "full", n=16_000, d=10, separation=1.0, anisotropy=2.0),
    Setting("anisotropic", 5, "full", n=20_000, d=10, separation=3.0, anisotropy=10.0),
    Setting("anisotropic", 5, "diag", n=20_000, d=10, separation=3.0, anisotropy=10.0),
    Setting("high-D", 8, "diag", n=50_000, d=50, separation=1.0, anisotropy=3.0),
    Setting("high-D", 4, "full", n=20_000, d=50, separation=1.0, anisotropy=3.0),
    Setting("large N", 4, "full", n=100_000, d=5, separation=2.0, anisotropy=3.0),
    Setting("large N", 6, "diag", n=100_000, d=20, separation=1.5, anisotropy=3.0),
    Setting("digits, PCA 20", 10, "full", pca=20),
    Setting("digits, PCA 20", 10, "diag", pca=20),
]
QUICK = [SETTINGS[0], SETTINGS[1], SETTINGS[3], SETTINGS[9]]


def make_data(setting: Setting, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if setting.pca:
        data = load_dataset("digits")
        x, x_test = data.x_train.double(), data.x_test.double()
        centre = x.mean(0)
        basis = torch.linalg.svd(x - centre, full_matrices=False)[2][: setting.pca].T
        return (x - centre) @ basis, (x_test - centre) @ basis
    truth = random_mixture(setting.k, setting.d, separation=setting.separation,
                           anisotropy=setting.anisotropy, full=setting.covariance == "full",
                           seed=seed)
    g = torch.Generator().manual_seed(seed)
    x, _ = sample_mixture(truth, setting.n, g)
    x_test, _ = sample_mixture(truth, max(2000, setting.n // 4), g)
    return x, x_test


def run_setting(setting: Setting, *, restarts: int, repeats: int, seed: int) -> dict:
    x, x_test = make_data(setting, seed)
    x_np, x_test_np = x.numpy(), x_test.numpy()
    options = dict(covariance_type=setting.covariance, n_init=restarts, tol=1e-3,
                   reg_covar=1e-6, max_iter=100)
    ours_t, theirs_t, ours_ll, theirs_ll = [], [], [], []
    for repeat in range(repeats):
        def ours(repeat=repeat):
            start = time.perf_counter()
            fitted = GaussianMixture(setting.k, seed=seed + repeat, **options).fit(x_np)
            ours_t.append(time.perf_counter() - start)
            return fitted

        def theirs(repeat=repeat):
            start = time.perf_counter()
            sk = SklearnMixture(setting.k, random_state=seed + repeat, **options).fit(x_np)
            theirs_t.append(time.perf_counter() - start)
            return sk

        if repeat % 2:
            sk, fitted = theirs(), ours()
        else:
            fitted, sk = ours(), theirs()
        # each repeat is another seed: local optima differ, so quality is a mean over seeds
        ours_ll.append(fitted.score(x_test_np))
        theirs_ll.append(sk.score(x_test_np))
        if repeat == 0:
            agree = labels_agree(fitted, sk, x_test_np)
    n, d = x.shape
    return {
        "setting": setting.name, "n": n, "d": d, "k": setting.k,
        "covariance": setting.covariance, "restarts": restarts,
        "seeds": f"{seed}..{seed + repeats - 1}",
        "ours_ll": statistics.mean(ours_ll), "sklearn_ll": statistics.mean(theirs_ll),
        "ll_diff": statistics.mean(ours_ll) - statistics.mean(theirs_ll),
        "ours_ll_per_seed": ours_ll, "sklearn_ll_per_seed": theirs_ll,
        "ours_s": statistics.median(ours_t), "sklearn_s": statistics.median(theirs_t),
        "time_ratio": statistics.median(ours_t) / statistics.median(theirs_t),
        "labels_agree": agree,
    }


def labels_agree(ours: GaussianMixture, theirs: SklearnMixture, x: np.ndarray) -> float:
    """Share of the points of x both label alike, our components matched to theirs one to one
    by the closest means (the labels of a mixture are arbitrary)."""
    cost = ((ours.means_[:, None] - theirs.means_[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    theirs_of_ours = cols[np.argsort(rows)]
    return float((theirs_of_ours[ours.predict(x)] == theirs.predict(x)).mean())


def markdown(rows: list[dict], threads: int) -> str:
    lines = [
        "| setting | N | D | K | cov | held-out log-lik, ours | sklearn EM | ours - EM "
        "| labels agree | time ours (s) | sklearn (s) | time ours / EM | meets target |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        quality = r["ll_diff"] >= -0.01
        fast = r["time_ratio"] <= 1.0 or r["n"] < 10_000
        lines.append(
            f"| {r['setting']} | {r['n']} | {r['d']} | {r['k']} | {r['covariance']} "
            f"| {r['ours_ll']:.4f} | {r['sklearn_ll']:.4f} | {r['ll_diff']:+.4f} "
            f"| {r['labels_agree']:.4f} | {r['ours_s']:.3f} | {r['sklearn_s']:.3f} "
            f"| {r['time_ratio']:.2f} "
            f"| {'yes' if quality and fast else 'no'} |"
        )
    lines.append(f"\n{rows[0]['restarts']} restarts, tol 1e-3, reg_covar 1e-6, max_iter 100, "
                 f"{threads} thread(s) for both; N = training points; log-lik in nats/point on "
                 f"held-out points, mean over the repeats (seeds {rows[0]['seeds']}); times are "
                 f"medians over the same repeats.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four small settings, one repeat")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for torch and BLAS alike (1: fair on a busy box)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--markdown", help="also write the table to this file (the README's "
                                           "docs/results/gmm_vs_sklearn.md)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else SETTINGS
    repeats = 1 if args.quick else args.repeats
    rows = []
    with threadpool_limits(args.threads):
        for setting in settings:
            rows.append(run_setting(setting, restarts=args.restarts, repeats=repeats,
                                    seed=args.seed))
            r = rows[-1]
            print(f"{r['setting']:>16} {r['covariance']}: ll {r['ours_ll']:.4f} vs "
                  f"{r['sklearn_ll']:.4f}, {r['ours_s']:.3f} s vs {r['sklearn_s']:.3f} s",
                  flush=True)
    print()
    table = markdown(rows, args.threads)
    print(table)
    if args.markdown:
        write_markdown(args.markdown, "gmm_vs_sklearn.py", args.quick,
                       f"Measured {time.strftime('%Y-%m-%d')} on the 2-core CPU, taking turns "
                       f"with scikit-learn setting by setting:", table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
