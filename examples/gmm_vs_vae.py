"""Why a mixture is not enough: mixtures and VAEs on the same binarized MNIST digits.

Every log-likelihood compared here is a log-probability mass of the same binary test
images (``mnist5k``'s 1000 test digits, binarized by the one fixed draw every evaluation in
this package uses), in nats per image, higher is better:

* a mixture of K products of Bernoullis - the discrete analogue of the Gaussian mixture
  (x | j ~ prod_d Bernoulli(p_jd)), fitted by EM on a fixed binarization of the training
  digits; log p(x) = logsumexp_j [log alpha_j + sum_d log Bernoulli(x_d; p_jd)], exact;
* the VAE (Bernoulli decoder, N(0, I) prior) and the same VAE with the learned ``mixture``
  prior (the bridge between the two models: a Gaussian mixture in latent space), trained
  by ``train_vae``; log p(x) by importance sampling with ``eval_particles`` samples.

A Gaussian mixture on the same pixels gives a *density*, not a probability mass, so its
number is not comparable; the Gaussian mixture (the package's Pyro model, route ``map``,
full covariances on 50 principal components of the grey levels) appears only through its
samples, decoded back to pixels.

    .venv/bin/python examples/gmm_vs_vae.py [--epochs 10] [--out runs/gmm_vs_vae]

writes ``docs/figures/gmm_vs_vae.png`` and prints the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyro_vae import load_config, load_dataset, restore_vae, train_vae  # noqa: E402
from pyro_vae.data import binarize_test_set, fixed_binarization  # noqa: E402
from pyro_vae.inference.gmm import fit_gmm  # noqa: E402
from pyro_vae.models.gmm_density import sample_mixture  # noqa: E402
from pyro_vae.plots.common import image_grid, save_figure  # noqa: E402

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "gmm_vs_vae.png"


def bernoulli_mixture_em(x, k, *, iters=100, tol=1e-4, seed=0):
    """EM for p(x) = sum_j alpha_j prod_d p_jd^x_d (1 - p_jd)^(1 - x_d) on binary x (N, D).

    A Beta(2, 2) prior on each p_jd (add one pixel on and one off) keeps the logs finite.
    Returns (log_weights (K,), probs (K, D)).
    """
    g = torch.Generator().manual_seed(seed)
    resp = torch.distributions.Dirichlet(torch.ones(k, dtype=x.dtype)).sample((len(x),))
    resp = resp[torch.randperm(len(x), generator=g)]
    previous = -math.inf
    for _ in range(iters):
        nk = resp.sum(0)
        probs = (resp.T @ x + 1) / (nk[:, None] + 2)
        log_weights = (nk / nk.sum()).log()
        joint = bernoulli_joint(x, log_weights, probs)
        log_norm = torch.logsumexp(joint, -1, keepdim=True)
        resp = torch.exp(joint - log_norm)
        ll = log_norm.mean().item()
        if ll - previous < tol:
            break
        previous = ll
    return log_weights, probs


def bernoulli_joint(x, log_weights, probs):
    """log alpha_j + log p(x_i | j): (N, K)."""
    return log_weights + x @ probs.log().T + (1 - x) @ torch.log1p(-probs).T


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--eval-particles", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/gmm_vs_vae"))
    parser.add_argument("--em-iters", type=int, default=100, help="EM iterations at most")
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument("--reuse", action="store_true",
                        help="use VAE runs already in --out instead of training them again")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    data = load_dataset("mnist5k")
    x_test = binarize_test_set(data.x_test).double()  # the draw train_vae evaluates on
    x_train = fixed_binarization(data.x_train).double()
    results = {"test_images": len(x_test), "unit": "nats per image, log p(x), higher is better"}
    bernoulli = {}
    for k in (10, 50, 200):
        log_w, probs = bernoulli_mixture_em(x_train, k, iters=args.em_iters, seed=k)
        test_ll = torch.logsumexp(bernoulli_joint(x_test, log_w, probs), -1).mean().item()
        results[f"bernoulli_mixture_k{k}"] = test_ll
        bernoulli[k] = (log_w, probs)

    vaes = {}
    for name, prior in (("vae_normal_prior", "normal"), ("vae_mixture_prior", "mixture")):
        config = load_config(None, [f"train.epochs={args.epochs}", f"prior.name=\"{prior}\"",
                                    f"inference.eval_particles={args.eval_particles}"])
        run = args.out / name
        if args.reuse and (run / "metrics.json").exists():
            metrics = json.loads((run / "metrics.json").read_text())
        else:
            metrics = train_vae(config, run, overwrite=True, progress=False)
        results[name] = metrics["test_log_likelihood"]
        vaes[name] = restore_vae(args.out / name / "checkpoint.pt")

    # Gaussian mixture on 50 principal components of the grey levels: samples only
    grey = data.x_train.double()
    centre = grey.mean(0)
    basis = torch.linalg.svd(grey - centre, full_matrices=False)[2][:50].T
    gmm = fit_gmm((grey - centre) @ basis, 10, "full", "map", restarts=2)
    z, _ = sample_mixture(gmm.params, 64, torch.Generator().manual_seed(0))
    gmm_images = (z @ basis.T + centre).clamp(0, 1)

    g = torch.Generator().manual_seed(0)
    log_w, probs = bernoulli[50]
    j = torch.multinomial(log_w.exp(), 64, replacement=True, generator=g)
    torch.manual_seed(0)
    panels = {
        "Gaussian mixture, K=10, 50 PCs\n(sample: j ~ alpha, x ~ N(mu_j, Sigma_j))": gmm_images,
        "Bernoulli mixture, K=50\n(E[x | j], j ~ alpha)  "
        f"test {results['bernoulli_mixture_k50']:.1f}": probs[j],
        f"VAE, N(0, I) prior\n(E[x | z], z ~ p(z))  test {results['vae_normal_prior']:.1f}":
            vaes["vae_normal_prior"].model.sample_means(64),
        f"VAE, mixture prior\n(E[x | z], z ~ p(z))  test {results['vae_mixture_prior']:.1f}":
            vaes["vae_mixture_prior"].model.sample_means(64),
    }
    fig, axes = plt.subplots(1, 5, figsize=(22, 5),
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.2], "wspace": 0.35})
    for ax, (title, images) in zip(axes[:-1], panels.items(), strict=True):
        ax.imshow(image_grid(images.detach().float(), (28, 28), 8), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    names = ["mixture\nK=10", "mixture\nK=50", "mixture\nK=200", "VAE", "VAE,\nmix prior"]
    keys = ["bernoulli_mixture_k10", "bernoulli_mixture_k50", "bernoulli_mixture_k200",
            "vae_normal_prior", "vae_mixture_prior"]
    values = [results[key] for key in keys]
    ax = axes[-1]
    ax.scatter(values, range(len(values)), color=["C0", "C0", "C0", "C3", "C3"], s=60)
    for i, value in enumerate(values):
        ax.annotate(f"{value:.1f}", (value, i), textcoords="offset points", xytext=(0, 8),
                    ha="center", fontsize=8)
    ax.set_yticks(range(len(values)), names, fontsize=8)
    ax.set_ylim(-0.7, len(values) - 0.3)
    ax.set_xlabel("test log p(x), nats / image (higher is better)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("the same 1000 binarized test digits\n(VAE: log p(x) by importance "
                 f"sampling, {args.eval_particles} samples)", fontsize=9)
    fig.suptitle(
        "Why a mixture is not enough: mixtures of K = 10 / 50 / 200 Bernoulli templates reach "
        + " / ".join(f"{v:.1f}" for v in values[:3])
        + f" nats per test digit, the VAE (a continuous code z, decoder E[x | z]) "
        f"{values[3]:.1f} after {args.epochs} epochs",
        fontsize=11,
    )
    results["figure"] = str(save_figure(fig, args.figure))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
