"""Score-function versus reparameterized ELBO gradients, measured where the README quotes them.

Both estimators have the same mean (the gradient of the ELBO with respect to the guide's
parameters); the table gives the total variance of each (the trace of its covariance over
independent estimates), their ratio, and the largest |z| of the difference of the two means
over the gradient's coordinates (a check that they estimate the same thing):

1. the toy model (z ~ Uniform(a, b), x | z ~ Normal(mu, z)) at its maximum-likelihood theta,
   a per-point Gaussian guide at its initialization (random means, scale e^-0.5), on 50 of
   5000 simulated points, with 1, 4 and 16 particles per estimate;
2. the toy model's trained amortized guide: the ``gradient_variance_ratio`` that
   ``pyro-vae toy --simulate 0.5,2.0,1.0,5000 --inference svi`` reports;
3. the default VAE's encoder at initialization, on 32 binarized mnist5k digits.

    python benchmarks/gradient_variance.py --markdown docs/results/gradient_variance.md

writes the README's table (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch

from pyro_vae.build import build_vae
from pyro_vae.cli import main as pyro_vae
from pyro_vae.config import RunConfig
from pyro_vae.data import load_dataset
from pyro_vae.guides.uniform_scale import LocalUniformScaleGuide
from pyro_vae.inference.uniform_scale import fit_mle, simulate
from pyro_vae.lecture.gradients import compare_gradient_estimators

TRUTH = (0.5, 2.0, 1.0, 5000)  # a, b, mu, N of the README's toy runs
TOY_POINTS, TOY_REPEATS, VAE_IMAGES, VAE_REPEATS = 50, 400, 32, 100


def row(setting: str, particles: int | str, repeats: int | str, comparison=None,
        ratio: float | None = None) -> str:
    """One table row; ``comparison`` a GradientComparison, or only the ``ratio`` reported."""
    if comparison is None:
        return f"| {setting} | {particles} | {repeats} | | | {ratio:.3g} | |"
    z = comparison.z_scores
    z = z[torch.isfinite(z)]  # a coordinate both estimators give exactly 0 has no z
    return (f"| {setting} | {particles} | {repeats} | {comparison.var_reparam.sum().item():.4g} "
            f"| {comparison.var_score.sum().item():.4g} | {comparison.variance_ratio:.3g} "
            f"| {z.abs().max().item():.2f} |")


def toy_per_point_rows() -> list[str]:
    x = simulate(*TRUTH, seed=0)
    model = fit_mle(x, seed=0).model
    points = x[:TOY_POINTS]
    pyro.set_rng_seed(0)
    guide = LocalUniformScaleGuide(model, TOY_POINTS)
    with torch.no_grad():  # a guide not yet fitted: its means anywhere, its scales moderate
        guide.loc.normal_()
        guide.log_scale.fill_(-0.5)
    return [row("toy, per-point guide at initialization", k, TOY_REPEATS,
                compare_gradient_estimators(model, guide, points, list(guide.parameters()),
                                            num_repeats=TOY_REPEATS, num_particles=k))
            for k in (1, 4, 16)]


def toy_amortized_row() -> str:
    a, b, mu, n = TRUTH
    with tempfile.TemporaryDirectory() as out:
        status = pyro_vae(["toy", "--simulate", f"{a},{b},{mu},{n}", "--inference", "svi",
                           "--out", out])
        if status != 0:
            raise SystemExit(f"pyro-vae toy exited with {status}")
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    return row("toy, trained amortized guide (`toy --inference svi`)", 1, "see `toy`",
               ratio=metrics["gradient_variance_ratio"])


def vae_row() -> str:
    images = torch.bernoulli(load_dataset("mnist5k").x_train[:VAE_IMAGES],
                             generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(0)
    vae, encoder = build_vae(RunConfig(), images.shape[1], binary_data=True)
    comparison = compare_gradient_estimators(vae, encoder, images, list(encoder.parameters()),
                                             num_repeats=VAE_REPEATS)
    return row("VAE encoder at initialization (default config, mnist5k)", 1, VAE_REPEATS,
               comparison)


def table() -> str:
    rows = [*toy_per_point_rows(), toy_amortized_row(), vae_row()]
    return "\n".join([
        "<!-- written by benchmarks/gradient_variance.py -->",
        f"Score-function against reparameterized ELBO gradients w.r.t. the guide's parameters "
        f"(total variance over independent estimates; max |z|: the largest standardized "
        f"difference of the two means over the coordinates), measured "
        f"{time.strftime('%Y-%m-%d')} on the 2-core CPU:",
        "",
        "| setting | particles | estimates | variance, reparameterized | variance, score "
        "function | ratio | max abs z |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds latency
    text = table()
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
