"""Two CPU processes (``gloo``) train exactly like one process with the combined batch.

The point-mass (``delta``) guide makes the ELBO deterministic, so the comparison
needs no shared random numbers: the summed gradient of the two shards' mini-batches
must equal the single-process gradient of their union, and ``fit`` with
``distributed=True`` must reach the parameters of a single-process ``fit``.
"""

import json

import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import tiny_vae

from pyro_vae.elbos import make_elbo
from pyro_vae.train import fit
from pyro_vae.train.distributed import DataParallelELBO, free_port, shard

WORLD, N, D, BATCH, SEED, EPOCHS = 2, 16, 12, 3, 0, 3
ELBO_NAMES = ("trace", "fused")


def tiny_pair():
    pyro.set_rng_seed(SEED)
    return tiny_vae(D, 'guide.name="delta"')


def data() -> torch.Tensor:
    return torch.bernoulli(torch.full((N, D), 0.4), generator=torch.Generator().manual_seed(1))


def parameters(model, guide) -> list[torch.Tensor]:
    return [p.detach().clone() for p in (*model.parameters(), *guide.parameters())]


def gradients(elbo, model, guide, x, n) -> list[torch.Tensor]:
    for p in (*model.parameters(), *guide.parameters()):
        p.grad = None
    elbo.differentiable_loss(model, guide, x, n=n).backward()
    return [p.grad.clone() for p in (*model.parameters(), *guide.parameters())]


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # two processes on a 2-core machine
    address = f"tcp://127.0.0.1:{port}"
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=WORLD)
    pyro.enable_validation(True)
    x = shard(data(), rank, WORLD)
    results = {}
    for name in ELBO_NAMES:
        model, guide = tiny_pair()
        # one step's gradient from the first BATCH rows of this shard, n = shard size
        elbo = DataParallelELBO(make_elbo(name), model, guide)
        results[f"{name}/grad"] = gradients(elbo, model, guide, x[:BATCH], x.shape[0])
        model, guide = tiny_pair()
        # whole-shard batches: the union over processes is the whole data set, in any order
        fit(model, guide, x, epochs=EPOCHS, batch_size=x.shape[0], elbo=name, seed=SEED,
            progress=False, distributed=True)
        results[f"{name}/fit"] = parameters(model, guide)
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_shards_are_equal_and_disjoint():
    x = torch.arange(7).unsqueeze(1)
    shards = [shard(x, r, WORLD) for r in range(WORLD)]
    assert [s.shape[0] for s in shards] == [3, 3]  # the 7th row is left out
    assert sorted(torch.cat(shards).flatten().tolist()) == list(range(6))


@pytest.mark.parametrize("name", ELBO_NAMES)
def test_summed_gradient_equals_combined_batch(ranks, name):
    x = data()
    model, guide = tiny_pair()
    # the union of the processes' batches: rows r, r + W, ... of the first BATCH of each shard
    combined = torch.cat([shard(x, r, WORLD)[:BATCH] for r in range(WORLD)])
    expected = gradients(make_elbo(name), model, guide, combined, N)
    for result in ranks:
        for got, want in zip(result[f"{name}/grad"], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ELBO_NAMES)
def test_distributed_fit_equals_single_process_fit(ranks, name):
    model, guide = tiny_pair()
    fit(model, guide, data(), epochs=EPOCHS, batch_size=N, elbo=name, seed=SEED, progress=False)
    for result in ranks:
        for got, want in zip(result[f"{name}/fit"], parameters(model, guide), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


TINY_RUN = ["--set", 'guide.name="delta"', "--set", 'data.binarize="static"',
            "--set", "data.train_size=64", "--set", "data.test_size=16",
            "--set", "model.hidden=[8]", "--set", "model.latent_dim=2",
            "--batch-size", "64", "--epochs", "2", "--quiet",
            # float32: the runs are compared to round-off, and bfloat16's (the default "auto"
            # on a CPU with AMX) differs between a half batch and the whole one
            "--precision", "float32"]


def test_train_distributed_command_equals_single_process_run(tmp_path, capsys):
    """``pyro-vae train --distributed 2`` starts two processes; rank 0 writes the run, whose
    trained parameters are those of one process with the combined (here: whole) batch."""
    from pyro_vae.cli import main
    from pyro_vae.train.checkpoint import load_checkpoint

    assert main(["train", "--distributed", "2", "--out", str(tmp_path / "ddp"), "--json",
                 *TINY_RUN]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["world_size"] == 2 and metrics["num_train"] == 64
    assert (tmp_path / "ddp" / "samples.png").exists()
    assert main(["train", "--out", str(tmp_path / "one"), *TINY_RUN]) == 0
    states = [load_checkpoint(tmp_path / run / "checkpoint.pt") for run in ("ddp", "one")]
    for key in ("model_state", "guide_state"):
        for name, value in states[1][key].items():
            torch.testing.assert_close(states[0][key][name], value, rtol=1e-5, atol=1e-6)


def test_train_distributed_refuses_resume_and_bad_counts(tmp_path, capsys):
    from pyro_vae.cli import main

    assert main(["train", "--distributed", "--out", str(tmp_path / "a"), *TINY_RUN]) == 2
    assert "without a number it must run under torchrun" in capsys.readouterr().err
    assert main(["train", "--distributed", "2", "--resume", str(tmp_path)]) == 2
    assert "drop --distributed" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
