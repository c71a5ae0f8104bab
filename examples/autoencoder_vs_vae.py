"""Autoencoder vs VAE: why the autoencoder's latent space is no place to sample from.

Trains the ``delta`` guide (deterministic encoder) as the plain autoencoder
(the shipped config ``autoencoder``: KL weight 0, reconstruction loss only) and as the MAP limit
of the VAE (KL weight 1: reconstruction + log p(z*)), and the Gaussian-guide VAE,
all with the same networks, prior, data (mnist5k), seed and epochs and a 2-D
latent space, then draws for each model the latent map of
the test images coloured by digit, the decoder's output over a grid of the latent
square [-3, 3]^2 (where N(0, I) puts 99% of its mass) and straight-line
interpolations between pairs of test digits; and measures two numbers:

(a) MMD^2 between codes of the test images and draws from the prior N(0, I):
    the unbiased estimate with a Gaussian kernel of bandwidth 1 (the prior's own
    scale, the same for both models).  The codes are draws from the aggregate
    posterior q(z) = mean_x q(z|x) (for the autoencoder q(z|x) is a point mass, so
    they are the codes themselves).  Small means "sampling the prior visits the
    region the decoder was trained on".
(b) The mean, over 1000 decoded prior draws z ~ p(z), of the binary cross-entropy
    (nats per image) between E[x | z] and the closest training image (grey levels
    as targets).  Small means "a prior sample decodes to something close to a real
    digit"; large means it decodes to a blur or a mixture of digits.

Usage::

    python examples/autoencoder_vs_vae.py --epochs 30 --out runs/ae_vs_vae \\
        --figure docs/figures/autoencoder_vs_vae.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from pyro_vae.config import load_config  # noqa: E402
from pyro_vae.data import load_dataset  # noqa: E402
from pyro_vae.experiments.vae import restore_vae, train_vae  # noqa: E402
from pyro_vae.plots.common import image_grid  # noqa: E402

# label -> (shipped config, extra overrides)
MODELS = {
    "plain autoencoder (delta guide, no prior term)": ("autoencoder", []),
    "MAP autoencoder (delta guide + log p(z))": ("autoencoder", ["inference.kl_weight=1.0"]),
    "VAE (Gaussian guide)": ("vae_mnist5k", []),
}
SQUARE = 3.0  # half-width of the decoded latent square, in prior standard deviations
GRID = 15
PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))  # interpolate between one test digit of each


def mmd2_gaussian(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 1.0) -> float:
    """Unbiased MMD^2 between samples x (N, L) and y (M, L), k(a, b) = exp(-|a - b|^2 / (2 h^2))."""

    def mean_kernel(a, b, same):
        k = torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2))
        if same:  # drop the diagonal k(a_i, a_i) = 1: the unbiased U-statistic
            n = len(a)
            return (k.sum() - n) / (n * (n - 1))
        return k.mean()

    return (mean_kernel(x, x, True) + mean_kernel(y, y, True) - 2 * mean_kernel(x, y, False)).item()


def nearest_training_bce(means: torch.Tensor, x_train: torch.Tensor) -> float:
    """Mean over rows of ``means`` (S, D) of min_j BCE(x_train[j], means) in nats."""
    p = means.clamp(1e-6, 1 - 1e-6)
    # BCE[j, s] = -sum_d x_jd log p_sd + (1 - x_jd) log(1 - p_sd), as two matrix products
    bce = -(x_train @ p.log().T + (1 - x_train) @ torch.log1p(-p).T)
    return bce.min(0).values.mean().item()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/ae_vs_vae"))
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/autoencoder_vs_vae.png"))
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = parser.parse_args(argv)

    data = load_dataset("mnist5k")
    results, trained = {}, {}
    for i, (label, (config_file, extra)) in enumerate(MODELS.items()):
        overrides = ["model.latent_dim=2", f"train.epochs={args.epochs}", f"train.seed={args.seed}",
                     *extra, *args.set]
        config = load_config(config_file, overrides)  # a shipped config, by name
        out = args.out / f"{i}_{Path(config_file).stem}"
        metrics = train_vae(config, out, overwrite=True, progress=False)
        trained[label] = restore_vae(out / "checkpoint.pt")
        results[label] = {k: metrics[k] for k in ("test_elbo", "test_log_likelihood", "elbo")}

    x_test, y_test = data.x_test, data.y_test
    pyro.set_rng_seed(args.seed)
    prior_draws = torch.randn(1000, 2)
    fig, axes = plt.subplots(len(MODELS), 3, figsize=(15, 5 * len(MODELS)))
    for row, (label, run) in enumerate(trained.items()):
        model, guide = run.model, run.guide
        with torch.no_grad():
            loc, _ = guide.encode(x_test)
            codes = guide.posterior(x_test).sample()  # aggregate-posterior draws (= loc for delta)
            prior_means = model.decode_mean(model.prior().sample((1000,)))
        results[label]["mmd2_codes_vs_prior"] = mmd2_gaussian(codes, prior_draws)
        results[label]["nearest_train_bce_of_prior_samples"] = nearest_training_bce(
            prior_means, data.x_train
        )
        r = results[label]

        ax = axes[row, 0]
        points = loc.numpy()
        scatter = ax.scatter(points[:, 0], points[:, 1], c=y_test.numpy(), cmap="tab10", s=5)
        ax.add_patch(plt.Rectangle((-SQUARE, -SQUARE), 2 * SQUARE, 2 * SQUARE, fill=False, ls="--"))
        fig.colorbar(scatter, ax=ax, label="digit")
        ax.set_title(f"{label}\ntest codes; MMD$^2$ to N(0, I) = {r['mmd2_codes_vs_prior']:.3f}")
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")

        ticks = torch.linspace(-SQUARE, SQUARE, GRID)
        # rows of the picture run from z2 = +3 (top) to -3 (bottom), like the scatter's axes
        z_grid = torch.stack(torch.meshgrid(ticks.flip(0), ticks, indexing="ij")[::-1], -1)
        images = model.decode_mean(z_grid.reshape(-1, 2))
        axes[row, 1].imshow(image_grid(images, (28, 28), GRID), cmap="gray", vmin=0, vmax=1)
        axes[row, 1].set_title(f"E[x | z] over the dashed square [-{SQUARE:g}, {SQUARE:g}]$^2$\n"
                               f"prior samples' BCE to nearest training image = "
                               f"{r['nearest_train_bce_of_prior_samples']:.1f} nats")
        axes[row, 1].axis("off")

        first = [int(torch.nonzero(y_test == digit)[0]) for digit in range(10)]
        steps = torch.linspace(0, 1, 10)[:, None]
        lines = [model.decode_mean(loc[first[a]] * (1 - steps) + loc[first[b]] * steps)
                 for a, b in PAIRS]
        axes[row, 2].imshow(image_grid(torch.cat(lines), (28, 28), 10), cmap="gray", vmin=0, vmax=1)
        axes[row, 2].set_title("straight lines between the codes of two test digits\n"
                               + ", ".join(f"{a}->{b}" for a, b in PAIRS))
        axes[row, 2].axis("off")

    fig.suptitle(f"mnist5k, 2-D latent space, same networks, prior N(0, I), seed {args.seed}, "
                 f"{args.epochs} epochs")
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=100)
    plt.close(fig)
    summary = {"epochs": args.epochs, "seed": args.seed, "figure": str(args.figure), **results}
    (args.out / "autoencoder_vs_vae.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
