"""NumPyro's VAE beside ``fit`` and the plain PyTorch loop: examples per second and test ELBO.

The same VAE in all three routes: encoder 784-400-100 and decoder 50-400-784, softplus,
PyTorch's initialisation (uniform on +-1/sqrt(fan_in)), z ~ N(0, I), q(z|x) =
N(mu(x), diag(exp(2 log sigma(x)))), x | z ~ Bernoulli(logits = decoder(z)), the data inside
``plate("data", N, subsample_size=B)`` so each batch's loss is scaled by N / B, Adam at the
config's learning rate, the same mnist5k training images drawn anew into binary pixels for
every batch (dynamic binarization), the same batch size and the same initial weights (the
NumPyro parameters start as copies of the PyTorch ones).

NumPyro's step is ``svi.update`` under ``jax.jit`` with the batch's gather and its Bernoulli
draw inside the same compiled function (one dispatch per step, as a NumPyro user who wants
speed writes it; the draw's key is split off the SVI state's key).  ``fit`` is the default
``pyro-vae train`` (the config's ``elbo`` and ``precision``) through ``fit_route`` of
``vae_throughput.py``; the plain loop is :mod:`pyro_vae.lecture.plain_vae`.

Beside them, ``fit`` in float32 (where the default precision is not) and the bare loop of the
same fused loss and fused Adam in float32 (``vae_throughput.loop_route``): what ``fit``'s
bookkeeping (NaN guard, progress, checkpoints' state) costs is their ratio.  And ``fit`` with
``compile="on"`` (the fused loss and its gradient under ``torch.compile``;
``train.compile = "auto"`` turns it on for long runs) at the default precision and in float32,
its compile counted as one-time.

The routes take turns (the noise of a shared machine hits all alike), in a fresh random order
each turn (no route always runs right after the same one), each turn two epochs of
which the second is timed; the first epoch of each route is a warm-up whose extra time
(JAX's compilation, ``fit``'s set-up) is reported separately.  The table gives the median
seconds per epoch over ``--repeats`` turns, examples per second and the throughput ratio
route / NumPyro (>= 1: at least as fast as NumPyro).  A summary per batch size gives the
ratios the targets are about (``fit`` / bare loop as the median of the turns' ratios,
:func:`paired_ratio`) and each float32 route's share of the float32 ceiling: the
FLOP/s of its matrix products (:func:`flop_per_example` x examples/s) over torch's own
best float32 matrix product on this CPU (:func:`gemm_peak`).  Then the same at full-MNIST
size (``--full-size`` rows: mnist5k's training images tiled; NumPyro, ``fit`` eager and
compiled, and the bare loop, whose 15 times longer epochs make the fit / bare-loop ratio less
noisy than mnist5k's), and the test ELBO after ``--quality-epochs`` epochs of NumPyro and of
``fit`` from the same seeds and initial weights, both evaluated by the same code
(``common.test_elbo``: 1000 binarized test images, 100 particles each; NumPyro's parameters
copied into the PyTorch networks), beside NumPyro's own estimate of its ELBO as a check of
that copy.  NumPyro's estimator is ``TraceMeanField_ELBO`` by default, the closed-form KL of
``fit``'s default.  The random draws differ (JAX's generator is not torch's), so the ELBOs
agree within the noise of training, not to round-off.

    python benchmarks/vs_numpyro.py [--repeats 5] [--batch-sizes 128,1024]
        [--quality-epochs 10] [--quality-seeds 0,1,2] [--train-size N]
        [--routes fit32,fitc,fitc32,loop,plain]
        [--full-size 60000] [--full-repeats 2] [--numpyro-elbo trace|meanfield]
        [--markdown docs/results/vs_numpyro.md] [--quick]

Needs the ``bench`` extra (``pip install -e ".[bench]"``: numpyro and jax, CPU).
:func:`numpyro_examples_per_second` and :func:`numpyro_available` serve other benchmarks.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import platform
import statistics
import time

import numpy as np
import pyro
import torch
from common import plain_test_elbo, setup, take_turns, test_elbo, write_markdown
from vae_throughput import elbo_loop_route, fit_route

from pyro_vae.config import load_config
from pyro_vae.lecture.plain_vae import plain_optimizer, train_plain_epoch
from pyro_vae.train import fit, resolve_precision

try:  # the optional ``bench`` extra
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
except ImportError:
    numpyro = None

__all__ = [
    "numpyro_available",
    "numpyro_examples_per_second",
    "NumPyroVAE",
    "vae_model",
    "vae_guide",
    "params_from_torch",
    "params_to_torch",
]

NETWORKS = ("encoder", "decoder")
# seconds of idleness before every route's turn: the same epoch ran 13% slower right after a
# NumPyro epoch than after half a second's pause (4 pairs, 2-core CPU; JAX's thread pool
# keeps spinning for a while after its work), and 7% faster after a pause than right after
# its own warm-up epoch, so every route gets the pause and no route follows another's work
PAUSE = 0.5


def numpyro_available() -> bool:
    """Whether numpyro and jax are installed (the ``bench`` extra)."""
    return numpyro is not None


def layer_sizes(data_dim: int, latent_dim: int, hidden) -> dict[str, list[int]]:
    """Widths of the encoder D -> reversed(hidden) -> 2L and the decoder L -> hidden -> D,
    as :func:`pyro_vae.nets.mlp_pair` builds them."""
    return {
        "encoder": [data_dim, *reversed(hidden), 2 * latent_dim],
        "decoder": [latent_dim, *hidden, data_dim],
    }


def _torch_linear_init(fan_in: int, shape: tuple[int, ...]):
    """nn.Linear's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as a lazy
    ``numpyro.param`` initial value (a function of a PRNG key)."""
    bound = 1.0 / np.sqrt(fan_in)
    return lambda key: jax.random.uniform(key, shape, minval=-bound, maxval=bound)


def _mlp(net: str, sizes: list[int], h):
    """The network ``net`` applied to h (..., sizes[0]) -> (..., sizes[-1]): Linear layers
    with softplus between them; parameters named as the nn.Sequential's state_dict keys."""
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if k:
            h = jax.nn.softplus(h)
        # weights are (in, out), the transpose of nn.Linear's, so that h @ w needs no transpose
        w = numpyro.param(f"{net}.{2 * k}.weight", _torch_linear_init(n_in, (n_in, n_out)))
        b = numpyro.param(f"{net}.{2 * k}.bias", _torch_linear_init(n_in, (n_out,)))
        h = h @ w + b
    return h


def params_from_torch(encoder: torch.nn.Module, decoder: torch.nn.Module) -> dict:
    """NumPyro parameters (name -> jax array) equal to the PyTorch networks' weights."""
    params = {}
    for net, module in zip(NETWORKS, (encoder, decoder), strict=True):
        for key, value in module.state_dict().items():
            value = value.detach().cpu().numpy()
            params[f"{net}.{key}"] = jnp.asarray(value.T if key.endswith("weight") else value)
    return params


def params_to_torch(params: dict, encoder: torch.nn.Module, decoder: torch.nn.Module):
    """Copies of ``encoder`` and ``decoder`` holding NumPyro's parameters."""
    copies = []
    for net, module in zip(NETWORKS, (encoder, decoder), strict=True):
        module = copy.deepcopy(module)
        state = {}
        for key in module.state_dict():
            value = np.asarray(params[f"{net}.{key}"])
            state[key] = torch.tensor(value.T if key.endswith("weight") else value)
        module.load_state_dict(state)
        copies.append(module)
    return tuple(copies)


def vae_model(x, sizes, n):
    """p(z) p(x | z) for a batch x (B, D) of n examples; ``sizes`` from :func:`layer_sizes`."""
    with numpyro.plate("data", n, subsample_size=x.shape[0]):
        z = numpyro.sample("z", dist.Normal(jnp.zeros(sizes["decoder"][0]), 1.0).to_event(1))
        logits = _mlp("decoder", sizes["decoder"], z)
        numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def vae_guide(x, sizes, n):
    """q(z | x) = N(mu(x), diag(sigma(x)^2)) with (mu, log sigma) = encoder(x)."""
    loc, log_scale = jnp.split(_mlp("encoder", sizes["encoder"], x), 2, axis=-1)
    with numpyro.plate("data", n, subsample_size=x.shape[0]):
        numpyro.sample("z", dist.Normal(loc, jnp.exp(log_scale)).to_event(1))


@functools.cache
def _svi(sizes: tuple, n: int, lr: float, elbo: str):
    """(SVI, its jitted init, its jitted step) for the setting: one compilation per setting
    and batch shape, shared by every :class:`NumPyroVAE` of that setting (seeds, weights)."""
    loss = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}[elbo]()
    svi = SVI(vae_model, vae_guide, numpyro.optim.Adam(lr), loss, sizes=dict(sizes), n=n)

    def update(state, x, idx):
        """One SVI step on the binarized rows ``idx`` of x; returns (state, loss)."""
        key, draw = jax.random.split(state.rng_key)
        batch = jax.random.bernoulli(draw, x[idx]).astype(x.dtype)
        return svi.update(state._replace(rng_key=key), batch)

    # init compiled: op by op it takes seconds (each eager op compiles on first use); the
    # state's buffers are replaced by the step's outputs: donating them saves copies
    return svi, jax.jit(svi.init), jax.jit(update, donate_argnums=0)


@functools.cache
def _elbo_estimate(sizes: tuple, m: int, particles: int):
    """Jitted (key, params, x) -> -ELBO of the M rows of x summed, ``particles`` draws each."""
    loss = Trace_ELBO(num_particles=particles)
    return jax.jit(lambda key, params, x: loss.loss(key, params, vae_model, vae_guide, x,
                                                     sizes=dict(sizes), n=m))


class NumPyroVAE:
    """The VAE as a NumPyro model and guide, trained by SVI with a jitted step.

    Parameters
    ----------
    x_train : (N, D) float array
        Grey levels in [0, 1]; each batch is drawn into binary pixels x ~ Bernoulli(x_train).
    batch_size : int
        B; the last batch of an epoch keeps the remainder (its own compiled shape).
    seed : int
        Seeds the SVI state's key (noise and binarization) and the epochs' shuffles.
    init_params : dict, optional
        Initial parameters (:func:`params_from_torch`); default PyTorch's initialisation
        drawn from the seed.
    elbo : "trace" or "meanfield"
        ``Trace_ELBO`` (Monte Carlo KL) or ``TraceMeanField_ELBO`` (closed-form KL).
    config : RunConfig, optional
        Widths, latent size and learning rate (default: the project's defaults).
    """

    def __init__(self, x_train, batch_size: int, seed: int = 0, init_params=None,
                 elbo: str = "trace", config=None):
        config = config or load_config(None)
        x_train = np.asarray(x_train, dtype=np.float32)
        self.x = jnp.asarray(x_train)
        self.n, data_dim = self.x.shape
        self.batch_size = batch_size
        self.sizes = layer_sizes(data_dim, config.model.latent_dim, config.model.hidden)
        self._frozen = tuple((net, tuple(widths)) for net, widths in self.sizes.items())
        self.svi, init, self._step = _svi(self._frozen, self.n, config.train.lr, elbo)
        self.shuffle = np.random.default_rng(seed)
        start = time.perf_counter()
        self.state = init(jax.random.PRNGKey(seed), x_train[:batch_size], init_params=init_params)
        jax.block_until_ready(self.state)
        self.init_seconds = time.perf_counter() - start

    def epoch(self) -> tuple[float, float]:
        """One epoch over a fresh shuffle: (seconds, mean loss per example), the loss being
        -ELBO (nats per example) averaged over the epoch's steps."""
        start = time.perf_counter()
        order = self.shuffle.permutation(self.n).astype(np.int32)
        losses = []
        for begin in range(0, self.n, self.batch_size):
            self.state, loss = self._step(self.state, self.x, order[begin:begin + self.batch_size])
            losses.append(loss)
        jax.block_until_ready(self.state)
        mean_loss = float(np.mean(jax.device_get(losses))) / self.n
        return time.perf_counter() - start, mean_loss

    @property
    def params(self) -> dict:
        """The current parameters, name -> array (the next epoch's step reuses their buffers:
        copy what is to outlive it)."""
        return self.svi.get_params(self.state)

    def elbo(self, x, particles: int = 100, seed: int = 0, chunk: int = 10) -> float:
        """NumPyro's own estimate of the mean ELBO (nats per example) of the rows of x (M, D),
        binary pixels, ``particles`` draws each, drawn ``chunk`` at a time (memory)."""
        x = jnp.asarray(np.asarray(x, dtype=np.float32))
        loss = _elbo_estimate(self._frozen, x.shape[0], chunk)  # n = M: the ELBO of x itself
        keys = jax.random.split(jax.random.PRNGKey(seed), -(-particles // chunk))
        return -float(np.mean([loss(key, self.params, x) for key in keys])) / x.shape[0]


def numpyro_examples_per_second(x_train: np.ndarray, batch_size: int, epochs: int,
                                seed: int = 0) -> float:
    """Examples per second of NumPyro's VAE (the project's default sizes) on ``x_train``
    (N, D) grey levels: one warm-up epoch (compilation), then ``epochs`` timed epochs."""
    vae = NumPyroVAE(x_train, batch_size, seed)
    vae.epoch()
    seconds = sum(vae.epoch()[0] for _ in range(epochs))
    return vae.n * epochs / seconds


def flop_per_example(data_dim: int, latent_dim: int, hidden) -> int:
    """Floating-point operations of one example's training step in the matrix products:
    forward (one multiply-add per weight), the weights' gradients (as many), the inputs'
    gradients (as many, less the first layer's: the data needs none); 2 FLOP per
    multiply-add.  The element-wise work (softplus, log-densities, Adam) is left out."""
    sizes = layer_sizes(data_dim, latent_dim, hidden)
    macs = sum(n_in * n_out for widths in sizes.values()
               for n_in, n_out in zip(widths[:-1], widths[1:], strict=True))
    return 2 * (3 * macs - data_dim * sizes["encoder"][1])


def gemm_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 20) -> float:
    """FLOP/s of torch's matrix product of two (size, size) matrices at the current thread
    count, the best of ``repeats``: the arithmetic ceiling this CPU gives torch."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    best = math.inf
    for _ in range(repeats + 3):  # the first calls pay for oneDNN's set-up
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _after_a_pause(turn, seconds: float = PAUSE):
    """``turn`` run after ``seconds`` in which no route runs (see :data:`PAUSE`)."""

    def paused():
        time.sleep(seconds)
        return turn()

    return paused


def throughput(batch_size: int, args, data) -> list[dict]:
    """Rows (route, batch, s/epoch, examples/s, ratio to NumPyro, one-time s) at one batch size:
    NumPyro, the default ``fit``, ``fit`` in float32 (where the default is not), the bare loop
    of the same fused loss and fused Adam in float32, and the plain PyTorch loop."""
    config, x_train, _, transform, model0, guide0, encoder0, decoder0 = data
    encoder, decoder = copy.deepcopy(encoder0), copy.deepcopy(decoder0)
    optimizer = plain_optimizer(encoder, decoder, config.train.lr)
    precision = resolve_precision(config.train.precision, x_train.device)[0]
    setups = {"fit": [], "fit32": [], "fitc": [], "fitc32": []}
    names = {
        "numpyro": f"NumPyro, {args.numpyro_elbo} ELBO, jax.jit(svi.update)",
        "fit": f"fit, default (elbo={config.inference.elbo}, precision="
               f"{config.train.precision} -> {precision})",
        "fit32": "fit, float32",
        "fitc": f"fit, compile=on, precision {precision}",
        "fitc32": "fit, compile=on, float32",
        "loop": "bare loop: fused loss, backward, fused Adam (float32)",
        "plain": "plain PyTorch (lecture.plain_vae)",
    }
    vae = NumPyroVAE(x_train.numpy(), batch_size, args.seed, params_from_torch(encoder, decoder),
                     args.numpyro_elbo, config)
    n = x_train.shape[0]
    epochs = {
        "numpyro": lambda: vae.epoch()[0],
        "fit": fit_route(model0, guide0, x_train, batch_size, transform, config.inference.elbo,
                         setups["fit"], precision=config.train.precision),
        "fit32": fit_route(model0, guide0, x_train, batch_size, transform,
                           config.inference.elbo, setups["fit32"], precision="float32"),
        "fitc": fit_route(model0, guide0, x_train, batch_size, transform, config.inference.elbo,
                          setups["fitc"], precision=config.train.precision, compile="on"),
        "fitc32": fit_route(model0, guide0, x_train, batch_size, transform,
                            config.inference.elbo, setups["fitc32"], precision="float32",
                            compile="on"),
        "loop": elbo_loop_route(model0, guide0, x_train, batch_size, transform, "fused",
                                fused_adam=True),
        "plain": lambda: train_plain_epoch(encoder, decoder, optimizer, x_train, batch_size,
                                           transform),
    }
    if precision == "float32":  # the default is the float32 route
        del epochs["fit32"], epochs["fitc32"]
    if args.routes:  # NumPyro and the default fit always; the others on request
        epochs = {k: e for k, e in epochs.items() if k in ("numpyro", "fit", *args.routes)}
    # the warm-up: JAX compiles its step (a second shape for a ragged last batch) here
    first = {key: epoch() for key, epoch in epochs.items() if key not in setups}
    first["numpyro"] += vae.init_seconds
    # each timed epoch follows an untimed one of its own (fit's two epochs do so by themselves)
    turns = {key: _after_a_pause(epoch if key in setups
                                 else (lambda epoch=epoch: (epoch(), epoch())[1]))
             for key, epoch in epochs.items()}
    per_turn = take_turns(args.repeats, turns, shuffle_seed=args.seed)
    seconds = {key: statistics.median(values) for key, values in per_turn.items()}
    rows = []
    for key, s in seconds.items():
        # fit's one-time cost is its first run's (compiling, where it compiles)
        once = setups[key][0] if key in setups else first[key] - s
        rows.append({"route": names[key], "key": key, "batch": batch_size, "seconds": s,
                     "turns": per_turn[key], "examples_per_s": n / s,
                     "ratio": seconds["numpyro"] / s, "one_time_s": max(once, 0.0)})
    return rows


def quality(args, seed: int, data) -> dict:
    """Test ELBO (nats per example) of NumPyro and of ``fit`` after ``--quality-epochs``
    epochs from the seed's initial weights, by the same evaluator; NumPyro's own estimate."""
    config, x_train, x_test, transform, model0, guide0, encoder0, decoder0 = data
    t = config.train
    vae = NumPyroVAE(x_train.numpy(), t.batch_size, seed, params_from_torch(encoder0, decoder0),
                     args.numpyro_elbo, config)
    evaluate = lambda: plain_test_elbo(
        model0, guide0, *params_to_torch(vae.params, encoder0, decoder0), x_test,
        particles=args.particles)
    initial = evaluate()
    losses = [vae.epoch()[1] for _ in range(args.quality_epochs)]
    model, guide = copy.deepcopy(model0), copy.deepcopy(guide0)
    fit(model, guide, x_train, epochs=args.quality_epochs, batch_size=t.batch_size, lr=t.lr,
        elbo=config.inference.elbo, seed=seed, batch_transform=transform, progress=False,
        precision=t.precision)
    return {"seed": seed, "numpyro_initial": initial, "numpyro_losses": losses,
            "numpyro": evaluate(), "fit": test_elbo(model, guide, x_test, args.particles),
            "numpyro_own": vae.elbo(x_test.numpy(), args.particles)}


def load(args, seed: int) -> tuple:
    """``common.setup`` for the seed, the training images tiled or cut to ``--train-size``."""
    config, x_train, *rest = setup(seed=seed)
    if args.train_size:
        x_train = x_train.repeat(-(-args.train_size // x_train.shape[0]), 1)[: args.train_size]
    return (config, x_train, *rest)


def _throughput_lines(rows: list[dict]) -> list[str]:
    lines = ["| route | batch | s/epoch | examples/s | ratio to NumPyro | one-time s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['route']} | {r['batch']} | {r['seconds']:.3f} "
                     f"| {r['examples_per_s']:,.0f} | {r['ratio']:.2f} | {r['one_time_s']:.2f} |")
    return lines


def paired_ratio(route: dict, reference: dict) -> float:
    """Throughput of ``route`` over ``reference``'s: the median over the turns of the ratio
    within a turn (the two ran minutes apart at most, so the machine's drift between turns,
    which moves a ratio of medians by several percent, cancels)."""
    return statistics.median(ref / own for own, ref in zip(route["turns"], reference["turns"],
                                                            strict=True))


def summary(rows: list[dict], ceiling: dict, payback: bool = True) -> list[str]:
    """Per batch size: the default fit against NumPyro, fit in float32 against its bare loop,
    and the float32 routes' share of the float32 ceiling (matrix-product FLOP/s of the
    training step over :func:`gemm_peak`); with ``payback``, the steps after which the
    compiled fit's first compile paid for itself (not for later tables of the same process,
    which reuse the compiled graphs)."""
    lines = []
    for batch in sorted({r["batch"] for r in rows}):
        at = {r["key"]: r for r in rows if r["batch"] == batch}
        fit32 = at.get("fit32", at["fit"])
        parts = [f"default fit / NumPyro = {at['fit']['ratio']:.2f} (target >= 1.0)"]
        parts += [f"{at[key]['route']} / NumPyro = {at[key]['ratio']:.2f}"
                  for key in ("fitc", "fitc32") if key in at]
        if payback and "fitc" in at and at["fitc"]["seconds"] < at["fit"]["seconds"]:
            saved = (at["fit"]["seconds"] - at["fitc"]["seconds"]) * batch / at["fit"]["n"]
            parts.append(f"its compile paid for itself after "
                         f"{at['fitc']['one_time_s'] / saved:,.0f} steps "
                         f"({saved * 1e3:.2f} ms saved per step)")
        if "loop" in at:
            parts.append(f"fit float32 / bare loop = {paired_ratio(fit32, at['loop']):.2f} "
                         f"(the median of the turns' ratios; target >= 0.97)")
        share = {key: at[key]["examples_per_s"] * ceiling["flop"] / ceiling["float32"]
                 for key in ("numpyro", "loop") if key in at}
        share["fit float32"] = fit32["examples_per_s"] * ceiling["flop"] / ceiling["float32"]
        parts.append("share of the float32 ceiling: " + ", ".join(
            f"{key} {value:.0%}" for key, value in share.items()))
        lines.append(f"- batch {batch}: " + "; ".join(parts) + ".")
    return lines


def markdown(rows: list[dict], full_rows: list[dict], qualities: list[dict], args,
             ceiling: dict) -> str:
    """The throughput table and its summary, the full-MNIST-size epochs, then the test-ELBO
    table with its mean difference."""
    lines = _throughput_lines(rows)
    lines.append(f"\n{rows[0]['n']} dynamically binarized mnist5k training images, median of "
                 f"{args.repeats} turns; one-time: the first epoch's extra seconds (JAX's "
                 "compilation and SVI set-up; fit's set-up).  The float32 ceiling: "
                 f"{ceiling['float32'] / 1e9:.0f} GFLOP/s (torch's 1024 x 1024 float32 "
                 f"matrix product at these threads; bfloat16 {ceiling['bfloat16'] / 1e9:.0f} "
                 f"GFLOP/s), {ceiling['flop'] / 1e6:.2f} MFLOP of matrix products per "
                 f"example's step, so at most {ceiling['float32'] / ceiling['flop']:,.0f} "
                 "examples/s in float32.\n")
    lines += summary(rows, ceiling)
    if full_rows:
        lines += ["", f"Epochs of full-MNIST size ({full_rows[0]['n']} rows: mnist5k's training "
                      f"images tiled), median of {args.full_repeats} turns:", ""]
        lines += _throughput_lines(full_rows)
        lines += [""] + summary(full_rows, ceiling, payback=False)
    if qualities:
        lines += ["", "| seed | NumPyro | fit, default | fit - NumPyro | NumPyro at the start "
                      "| NumPyro, its own estimate |", "|---:|---:|---:|---:|---:|---:|"]
        for q in qualities:
            lines.append(f"| {q['seed']} | {q['numpyro']:.3f} | {q['fit']:.3f} "
                         f"| {q['fit'] - q['numpyro']:+.3f} | {q['numpyro_initial']:.3f} "
                         f"| {q['numpyro_own']:.3f} |")
        mean = statistics.mean(q["fit"] - q["numpyro"] for q in qualities)
        lines.append(f"\nTest ELBO (nats per example, higher is better) after "
                     f"{args.quality_epochs} epochs at batch {qualities[0]['batch']}, "
                     f"{args.particles} particles per binarized test image, the same evaluator "
                     f"for both (NumPyro's {args.numpyro_elbo} ELBO); mean fit - NumPyro = "
                     f"{mean:+.3f} nats over {len(qualities)} seed(s) (target: within 0.3).")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Run the comparison; returns the rows, the test-ELBO results and the Markdown text."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="128,1024")
    parser.add_argument("--quality-epochs", type=int, default=10, help="0 skips the ELBO check")
    parser.add_argument("--quality-seeds", default="0,1,2")
    parser.add_argument("--particles", type=int, default=100, help="per test image")
    parser.add_argument("--train-size", type=int,
                        help="tile (or cut) the training images to N rows")
    parser.add_argument("--numpyro-elbo", choices=("trace", "meanfield"), default="meanfield",
                        help="meanfield: closed-form KL, the estimator of fit's default")
    parser.add_argument("--routes", type=lambda text: text.split(","),
                        help="of fit32,fitc,fitc32,loop,plain: time only these beside NumPyro "
                             "and fit")
    parser.add_argument("--full-size", type=int, default=60000,
                        help="rows of the full-MNIST-size epochs (0 skips them)")
    parser.add_argument("--full-repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="of the throughput tables")
    parser.add_argument("--markdown", help="also write the tables to this file (the README's "
                                           "docs/results/vs_numpyro.md)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny setting (tests): 512 images, batch 128, one turn, 2 epochs")
    args = parser.parse_args(argv)
    if not numpyro_available():
        parser.exit(2, "vs_numpyro.py needs numpyro and jax: pip install -e '.[bench]'\n")
    if args.quick:
        args.repeats, args.batch_sizes, args.train_size = 1, "128", 512
        args.full_size, args.full_repeats = 1024, 1
        args.quality_epochs, args.quality_seeds, args.particles = 2, "0", 10
    header = (f"VAE 784-400-50 on mnist5k, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, torch "
              f"{torch.__version__} ({torch.get_num_threads()} intra-op threads), "
              f"pyro {pyro.__version__}, numpyro {numpyro.__version__}, "
              f"jax {jax.__version__} ({jax.devices()[0]})")
    print(header, flush=True)
    data = load(args, args.seed)
    rows = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        rows += [dict(r, n=data[1].shape[0]) for r in throughput(batch_size, args, data)]
        print(f"batch {batch_size} done", flush=True)
    full_rows = []
    if args.full_size:
        full = load(argparse.Namespace(train_size=args.full_size), args.seed)
        timed = argparse.Namespace(**{**vars(args), "repeats": args.full_repeats,
                                      "routes": ["fit32", "fitc", "loop"]})
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            full_rows += [dict(r, n=args.full_size) for r in throughput(batch_size, timed, full)]
            print(f"full size, batch {batch_size} done", flush=True)
    ceiling = {"flop": flop_per_example(data[1].shape[1], data[0].model.latent_dim,
                                        data[0].model.hidden),
               **{str(dtype).removeprefix("torch."): gemm_peak(dtype)
                  for dtype in (torch.float32, torch.bfloat16)}}
    qualities = []
    if args.quality_epochs:
        for seed in (int(s) for s in args.quality_seeds.split(",")):
            seeded = data if seed == args.seed else load(args, seed)  # the same initial weights
            qualities.append(dict(quality(args, seed, seeded), batch=data[0].train.batch_size))
    table = markdown(rows, full_rows, qualities, args, ceiling)
    print(f"\n{table}")
    if args.markdown:
        write_markdown(args.markdown, "vs_numpyro.py", args.quick,
                       f"Measured {time.strftime('%Y-%m-%d')} side by side, taking turns: "
                       f"{header}.", table)
    return {"rows": rows, "full_rows": full_rows, "quality": qualities, "ceiling": ceiling,
            "table": table}


if __name__ == "__main__":
    main()
