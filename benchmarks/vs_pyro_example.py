"""Our default training loop against Pyro's own VAE example loop, same data and networks.

Pyro's VAE tutorial (``examples/vae``) trains with ``SVI(model, guide, pyro.optim.Adam,
Trace_ELBO())`` on batches of 256 from a ``DataLoader`` (one worker) over
torchvision's MNIST, which turns every image into a PIL image and back into a
float tensor (``ToTensor``) one item at a time.  torchvision is not installed
here, so :class:`PerItemImages` does that per-item work itself (PIL, as
torchvision's MNIST does, then ToTensor's steps).  Both loops see the same
grey-level mnist5k images (the tutorial's Bernoulli on grey levels), start from
the same weights and are evaluated by the same code.  Whole runs take turns, and
the median seconds per epoch of each is reported with the test ELBO at the end.

    python benchmarks/vs_pyro_example.py [--epochs 10] [--rounds 2] [--elbos auto,fused]
        [--threads 1,2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from common import setup, test_elbo
from PIL import Image
from torch import nn

from pyro_vae.train import fit

EXAMPLE_BATCH = 256


class PerItemImages(torch.utils.data.Dataset):
    """(N, 784) grey levels stored as uint8 28x28 images, converted on every access like
    ``torchvision.datasets.MNIST(transform=ToTensor())``: (1, 28, 28) floats in [0, 1]."""

    def __init__(self, x: torch.Tensor):
        self.images = (x * 255).round().to(torch.uint8).reshape(-1, 28, 28).cpu().numpy()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])  # what MNIST.__getitem__ does
        pixels = torch.from_numpy(np.array(image, np.uint8, copy=True))  # ToTensor from here on
        pixels = pixels.view(28, 28, 1).permute(2, 0, 1).contiguous()
        return pixels.to(torch.get_default_dtype()).div(255), 0


class PyroExampleVAE(nn.Module):
    """The tutorial's model and guide, written as it writes them, around our networks."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.latent_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.latent_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = torch.sigmoid(self.decoder(z))
            pyro.sample(
                "obs",
                dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                obs=x.reshape(-1, 784),
            )

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_log_scale = self.encoder(x.reshape(-1, 784)).chunk(2, dim=-1)
            pyro.sample("latent", dist.Normal(z_loc, z_log_scale.exp()).to_event(1))


def example_run(vae: PyroExampleVAE, x_train, epochs: int, lr: float, workers: int) -> list[float]:
    """The tutorial's training loop; seconds of each epoch."""
    loader = torch.utils.data.DataLoader(
        PerItemImages(x_train), batch_size=EXAMPLE_BATCH, shuffle=True, num_workers=workers
    )
    svi = pyro.infer.SVI(
        vae.model, vae.guide, pyro.optim.Adam({"lr": lr}), loss=pyro.infer.Trace_ELBO()
    )
    seconds = []
    # the tutorial turns distribution validation off
    with pyro.validation_enabled(False):
        for _ in range(epochs):
            start = time.perf_counter()
            epoch_loss = 0.0
            for x, _ in loader:
                epoch_loss += svi.step(x)
            seconds.append(time.perf_counter() - start)
    return seconds


def compare(
    epochs: int = 10, rounds: int = 2, elbos=("auto", "fused"), workers: int = 1, seed: int = 0
) -> dict[str, float]:
    """Print s/epoch and test ELBO of the example loop and of ``fit`` with each of ``elbos``;
    return the median s/epoch of each ("example" and the ELBO names).

    Each round runs the example and then each of ours from the same weights; the first
    epoch of every run is left out of the median (warm-up).
    """
    config, x_train, x_test, _, model0, guide0, _, _ = setup(['data.binarize="none"'], seed=seed)
    lr = config.train.lr
    seconds = {"example": [], **{elbo: [] for elbo in elbos}}
    test, resolved = {}, {}
    for _ in range(rounds):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        model, guide = copy.deepcopy(model0), copy.deepcopy(guide0)
        vae = PyroExampleVAE(guide.encoder, model.decoder, config.model.latent_dim)
        seconds["example"] += example_run(vae, x_train, epochs, lr, workers)[1:]
        test["example"] = test_elbo(model, guide, x_test)  # the same networks, our evaluation
        for elbo in elbos:
            pyro.clear_param_store()
            model, guide = copy.deepcopy(model0), copy.deepcopy(guide0)
            result = fit(
                model,
                guide,
                x_train,
                epochs=epochs,
                batch_size=EXAMPLE_BATCH,
                lr=lr,
                elbo=elbo,
                seed=seed,
                progress=False,
            )
            seconds[elbo] += result.seconds_per_epoch[1:]
            test[elbo], resolved[elbo] = test_elbo(model, guide, x_test), result.elbo
    median = {name: statistics.median(values) for name, values in seconds.items()}
    n = x_train.shape[0]
    print(
        f"\nPyro's VAE example loop vs ours: grey-level mnist5k ({n} train), "
        f"batch {EXAMPLE_BATCH}, {epochs} epochs, median of {rounds} runs; "
        "test ELBO: 1000 test images, 100 particles, nats"
    )
    print(
        "| training loop | s/epoch | examples/s | speed-up vs example | test ELBO |\n"
        "|---|---|---|---|---|"
    )
    print(
        f"| Pyro example: per-item PIL/ToTensor DataLoader ({workers} worker), SVI, Trace_ELBO, "
        f"pyro.optim.Adam | {median['example']:.3f} | {n / median['example']:,.0f} | 1.00 "
        f"| {test['example']:.2f} |"
    )
    for elbo in elbos:
        print(
            f"| pyro-vae fit, elbo={elbo} ({resolved[elbo]}), index batches of a preloaded tensor "
            f"| {median[elbo]:.3f} | {n / median[elbo]:,.0f} "
            f"| {median['example'] / median[elbo]:.2f} "
            f"| {test[elbo]:.2f} |"
        )
    print("target: >= 2.5x faster than the example with equal test ELBO")
    return median


def compare_threads(thread_counts, epochs: int = 10, rounds: int = 2, elbos=("auto",),
                    workers: int = 1) -> None:
    """:func:`compare` at each torch thread count, then each loop at its own best count.

    The example's DataLoader worker is a process of its own: with one training thread it
    has a core to itself on a 2-core machine, with two it competes for one.  Comparing the
    loops at one setting favours one of them, so the last line pairs each one's best.
    """
    before = torch.get_num_threads()
    medians = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        print(f"\n{threads} torch thread(s):", end="")
        medians[threads] = compare(epochs, rounds, elbos, workers)
    torch.set_num_threads(before)
    for name in elbos:
        best = {loop: min(thread_counts, key=lambda t: medians[t][loop])
                for loop in ("example", name)}
        example, ours = (medians[best[loop]][loop] for loop in ("example", name))
        print(f"each at its best thread count: example {example:.3f} s/epoch "
              f"({best['example']} thread(s)), fit elbo={name} {ours:.3f} s/epoch "
              f"({best[name]} thread(s)): {example / ours:.2f}x faster (target >= 2.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--elbos", default="auto,fused", help="our loop's ELBOs (config default: auto)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="DataLoader workers (the tutorial: 1)"
    )
    parser.add_argument("--threads", default=f"1,{torch.get_num_threads()}",
                        help="comma-separated torch thread counts to run at (default: 1 and "
                             "torch's default)")
    args = parser.parse_args()
    threads = sorted({int(t) for t in args.threads.split(",")})
    compare_threads(threads, args.epochs, args.rounds, tuple(args.elbos.split(",")),
                    args.workers)


if __name__ == "__main__":
    main()
