"""Configs: every invalid entry exits 2 naming its key; every shipped example config trains."""

import json
import math

import pytest
import torch

from pyro_vae.build import build_vae
from pyro_vae.cli import main
from pyro_vae.config import RunConfig, dump_toml, load_config, shipped_configs
from pyro_vae.errors import UserError
from pyro_vae.train import fit

EXAMPLES = sorted(shipped_configs().values())
# small data, so that a value wrongly accepted costs seconds, not a training run
FAST = ["--dataset", "digits", "--quiet", "--set", "data.train_size=8", "--set", "data.test_size=8",
        "--set", "train.epochs=1", "--set", "inference.eval_particles=2"]


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.latent_dim=-1", "model.latent_dim"),
        ("model.latent_dim=0", "model.latent_dim"),
        ("model.hidden=[400, -2]", "model.hidden"),
        ("model.hidden=400", "model.hidden"),
        ('model.network="no_such_net"', "model.network"),
        ('model.activation="gelu"', "model.activation"),
        ("model.channels=[0, 8]", "model.channels"),
        ("model.bogus=1", "model.bogus"),
        ("bogus.key=1", "bogus"),
        ('prior.name="no_such_prior"', "prior.name"),
        ("prior.components=0", "prior.components"),
        ("prior.df=0", "prior.df"),
        ('prior.df="three"', "prior.df"),
        ('likelihood.name="no_such_likelihood"', "likelihood.name"),
        ("likelihood.scale=0", "likelihood.scale"),
        ("likelihood.learn_scale=1", "likelihood.learn_scale"),
        ("likelihood.epsilon=0.5", "likelihood.epsilon"),
        ('guide.name="no_such_guide"', "guide.name"),
        ("guide.flows=0", "guide.flows"),
        (('guide.name="iaf"', "guide.flow_hidden=[1]"), "guide.flow_hidden"),
        ('inference.elbo="no_such_elbo"', "inference.elbo"),
        ("inference.num_particles=0", "inference.num_particles"),
        ("inference.kl_warmup_epochs=-1", "inference.kl_warmup_epochs"),
        ("inference.free_bits=-0.5", "inference.free_bits"),
        ("inference.kl_weight=-1", "inference.kl_weight"),
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-3", "train.lr"),
        ("train.lr=nan", "train.lr"),
        ('train.epochs="ten"', "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("data.train_size=0", "data.train_size"),
        ('data.binarize="otsu"', "data.binarize"),
    ],
)
def test_invalid_entry_exits_2_naming_the_key(override, key, tmp_path, capsys):
    overrides = (override,) if isinstance(override, str) else override
    sets = [arg for item in overrides for arg in ("--set", item)]
    assert main(["train", *FAST, *sets, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_impossible_combination_exits_2_naming_the_key(tmp_path, capsys):
    """The VampPrior mixes q(z | u_k): it has no density for a point-mass guide."""
    argv = ["train", *FAST, "--set", 'prior.name="vamp"', "--set", 'guide.name="delta"',
            "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "prior.name" in err and "guide.name" in err


def test_invalid_entry_in_a_config_file(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[prior]\nname = "mixture"\ncomponents = -3\n')
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "prior.components" in capsys.readouterr().err


def test_set_overrides_the_file_and_unknown_names_list_the_choices(tmp_path, capsys):
    config = load_config(EXAMPLES[0], ["prior.components=7", 'guide.name="iaf"'])
    assert config.prior.components == 7 and config.guide.name == "iaf"
    argv = ["train", *FAST, "--set", 'prior.name="no_such_prior"', "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "mixture" in capsys.readouterr().err  # the valid choices are listed


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_round_trips_through_toml(path):
    config = load_config(path)
    assert RunConfig.from_dict(load_config(None).to_dict()) == load_config(None)
    again = RunConfig.from_dict(__import__("tomllib").loads(dump_toml(config)))
    assert again == config


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_builds_and_takes_one_svi_step(path):
    """The config's own model, guide and inference options on 8 random images of its data's size."""
    config = load_config(path)
    side = 8 if config.data.dataset == "digits" else 28
    binary = config.data.binarize != "none"
    model, guide = build_vae(config, side * side, binary_data=binary, image_shape=(side, side))
    x = torch.rand(8, side * side, generator=torch.Generator().manual_seed(0))
    inference = config.inference
    result = fit(
        model, guide, x.round() if binary else x, epochs=1, batch_size=8, lr=config.train.lr,
        elbo=inference.elbo, num_particles=inference.num_particles, progress=False,
        kl_warmup_epochs=inference.kl_warmup_epochs, free_bits=inference.free_bits,
        kl_weight=inference.kl_weight,
    )
    assert math.isfinite(result.train_elbo[0])


@pytest.fixture
def loaded_once(mnist5k, monkeypatch):
    """Reuse the session's mnist5k instead of reading it again for every config."""
    import pyro_vae.experiments.vae as experiment

    original = experiment.load_dataset

    def load(name, *, path=None, data_dir=None, device="cpu"):
        if name == "mnist5k" and path is None:
            return mnist5k.to(device)
        return original(name, path=path, data_dir=data_dir, device=device)

    monkeypatch.setattr(experiment, "load_dataset", load)


# the whole CLI pipeline (data, training, K-sample evaluation, four figures) per config;
# the default config in the fast set, the others with -m slow
PIPELINE = [pytest.param(p, marks=[] if p.stem == "vae_mnist5k" else [pytest.mark.slow], id=p.stem)
            for p in EXAMPLES]


@pytest.mark.parametrize("path", PIPELINE)
def test_example_config_trains_one_tiny_epoch(path, tmp_path, capsys, loaded_once):
    out = tmp_path / path.stem
    argv = ["train", "--config", str(path), "--set", "train.epochs=1",
            "--set", "data.train_size=64", "--set", "data.test_size=16",
            "--set", "inference.eval_particles=4", "--quiet", "--json", "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["num_train"] == 64 and metrics["num_test"] == 16
    assert metrics["elbo"] in ("meanfield", "trace")
    assert math.isfinite(metrics["test_elbo"])
    if load_config(path).guide.name == "delta":
        # a point mass: no importance-sampled log p(x)
        assert metrics["test_log_likelihood"] is None
    else:
        assert math.isfinite(metrics["test_log_likelihood"])
    assert load_config(out / "config.toml") == load_config(path, ["train.epochs=1",
        "data.train_size=64", "data.test_size=16", "inference.eval_particles=4"])


def test_a_shipped_config_is_selected_by_name_or_path(tmp_path):
    shipped = shipped_configs()
    path = shipped["vae_vamp_prior"]
    assert load_config("vae_vamp_prior") == load_config("vae_vamp_prior.toml") == load_config(path)
    assert load_config("vae_vamp_prior").prior.name == "vamp"
    local = tmp_path / "vae_vamp_prior.toml"  # a file that exists wins over a shipped name
    local.write_text(path.read_text().replace("components = 100", "components = 7"))
    assert load_config(local).prior.components == 7
    with pytest.raises(UserError, match="no shipped config has that name .*vae_vamp_prior"):
        load_config("vae_vampprior")
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "vae_vamp_prior")  # a folder and a name: a path, not a name


def test_pyro_vae_configs_lists_each_shipped_config_in_one_line_and_shows_one(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = list(shipped_configs())
    assert [line.split()[0] for line in lines[:-1]] == names
    assert all(len(line.split(maxsplit=1)[1]) <= 100 for line in lines[:-1])
    assert main(["configs", "vae_iaf_guide"]) == 0
    assert capsys.readouterr().out == shipped_configs()["vae_iaf_guide"].read_text()
    assert main(["configs", "nope"]) == 2


def test_max_plate_nesting_is_inferred_unless_set_and_gives_the_same_run(tmp_path):
    """Unset, Pyro infers the VAE's one plate (on a forked generator, so the draws are those
    of an explicit 1); 0 is refused like every impossible count."""
    runs = []
    for extra in ([], ["--set", "inference.max_plate_nesting=1"]):
        out = tmp_path / str(len(runs))
        assert main(["train", "--dataset", "digits", "--epochs", "1", "--quiet",
                     "--set", "model.hidden=[16]", "--set", "model.latent_dim=2",
                     "--set", "inference.eval_particles=3", *extra, "--out", str(out)]) == 0
        runs.append(json.loads((out / "metrics.json").read_text()))
    assert runs[0]["train_elbo"] == runs[1]["train_elbo"]
    assert runs[0]["test_log_likelihood"] == runs[1]["test_log_likelihood"]
    with pytest.raises(UserError, match="inference.max_plate_nesting must be an integer from 1"):
        load_config(None, ["inference.max_plate_nesting=0"])
