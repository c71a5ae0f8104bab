"""Quality check: the Pyro VAE against the hand-written PyTorch VAE after the same training.

Both start from the same weights and see the same dynamically binarized
mini-batches for the same number of epochs; both are then evaluated by the same
code (test ELBO and importance-sampled log p(x), K particles, nats per example).

    python benchmarks/vae_reference.py [--epochs 30] [--eval-particles 1000]
"""

from __future__ import annotations

import argparse
import time

import pyro
from common import setup

from pyro_vae.elbos import importance_estimate
from pyro_vae.lecture.plain_vae import plain_optimizer, train_plain_epoch
from pyro_vae.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--eval-particles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--elbo", default="trace", help="the Pyro ELBO to train with")
    args = parser.parse_args()
    config, x_train, x_test, transform, model, guide, encoder, decoder = setup(seed=args.seed)
    t = config.train
    pyro_fit = fit(model, guide, x_train, epochs=args.epochs, batch_size=t.batch_size, lr=t.lr,
                   elbo=args.elbo, seed=args.seed, batch_transform=transform, progress=False)
    pyro.set_rng_seed(args.seed)
    optimizer = plain_optimizer(encoder, decoder, t.lr)
    plain_seconds = sum(
        train_plain_epoch(encoder, decoder, optimizer, x_train, t.batch_size, transform)
        for _ in range(args.epochs)
    )
    pyro_name = f"pyro-vae ({args.elbo})"
    rows = {}
    for name, (enc, dec) in {pyro_name: (guide.encoder, model.decoder),
                             "plain PyTorch": (encoder, decoder)}.items():
        guide.encoder, model.decoder = enc, dec  # evaluate both through the same Pyro model
        pyro.set_rng_seed(args.seed)
        start = time.perf_counter()
        estimate = importance_estimate(model, guide, x_test, args.eval_particles)
        rows[name] = (estimate.elbo.mean().item(), estimate.log_likelihood.mean().item(),
                      time.perf_counter() - start)
    print(f"mnist5k (4000 train / 1000 test), {args.epochs} epochs, batch {t.batch_size}, "
          f"K={args.eval_particles}, seed {args.seed}")
    print("| training loop | test ELBO | test log p(x) | s/epoch |\n|---|---|---|---|")
    seconds = {pyro_name: sum(pyro_fit.seconds_per_epoch) / args.epochs,
               "plain PyTorch": plain_seconds / args.epochs}
    for name, (elbo, loglik, _) in rows.items():
        print(f"| {name} | {elbo:.2f} | {loglik:.2f} | {seconds[name]:.3f} |")
    gap = rows["plain PyTorch"][1] - rows[pyro_name][1]
    print(f"log-likelihood gap (plain - pyro) = {gap:.2f} nats per example")


if __name__ == "__main__":
    main()
