"""Pyro VAE training vs a hand-written PyTorch VAE: seconds per epoch, side by side.

Same networks (784-400-50), same initial weights, same mini-batches of the same
data, same Adam; epochs alternate between the two so that machine noise hits
both alike.  Prints the median seconds per epoch of each and their ratio.

    python benchmarks/vae_throughput.py [--repeats 5] [--batch-size 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import setup

from pyro_vae.infer import fit
from pyro_vae.reference import plain_optimizer, train_plain_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--elbo", default="trace")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    config, x_train, _, transform, model, guide, encoder, decoder = setup(device=args.device)
    optimizer = plain_optimizer(encoder, decoder, config.train.lr)
    pyro_seconds, plain_seconds = [], []
    for _ in range(args.repeats):
        result = fit(model, guide, x_train, epochs=1, batch_size=args.batch_size,
                     elbo=args.elbo, batch_transform=transform, progress=False)
        pyro_seconds += result.seconds_per_epoch
        plain_seconds.append(
            train_plain_epoch(encoder, decoder, optimizer, x_train, args.batch_size, transform)
        )
    pyro_s, plain_s = statistics.median(pyro_seconds), statistics.median(plain_seconds)
    n = x_train.shape[0]
    print(f"VAE 784-400-50, {n} examples, batch {args.batch_size}, {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"| loop | s/epoch | examples/s |\n|---|---|---|")
    print(f"| plain PyTorch (lecture loss) | {plain_s:.3f} | {n / plain_s:,.0f} |")
    print(f"| pyro-vae fit, {args.elbo} | {pyro_s:.3f} | {n / pyro_s:,.0f} |")
    print(f"throughput ratio pyro / plain = {plain_s / pyro_s:.2f}  (>= 1 means Pyro is as fast)")


if __name__ == "__main__":
    main()
