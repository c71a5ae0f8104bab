"""Learning-rate schedules, Adam's settings, the decoder's initial bias, the validation split."""

import math

import pyro
import pytest
import torch
from conftest import tiny_vae

from pyro_vae.build import init_decoder_bias
from pyro_vae.config import load_config
from pyro_vae.data import load_dataset
from pyro_vae.errors import UserError
from pyro_vae.experiments.runs import hold_out
from pyro_vae.experiments.vae import train_vae
from pyro_vae.train import fit
from pyro_vae.train.checkpoint import load_checkpoint
from pyro_vae.train.schedules import LR_SCHEDULES, iwae_stage, make_schedule

D = 16


def test_iwae_stages_last_3_to_the_i_epochs():
    """Stage i covers epochs [3^0 + ... + 3^(i-1), 3^0 + ... + 3^i): 1, 3, 9, ... 2187 epochs,
    3280 in all; later epochs stay in stage 7."""
    stages = [iwae_stage(e) for e in range(3300)]
    assert [stages.count(i) for i in range(8)] == [3**i for i in range(7)] + [3**7 + 20]
    assert stages == sorted(stages) and stages[3279] == 7 and stages[3280] == 7
    schedule = make_schedule("iwae")
    assert schedule(0) == 1.0
    assert schedule(1) == pytest.approx(10 ** (-1 / 7)) and schedule(3) == schedule(1)
    assert schedule(4) == pytest.approx(10 ** (-2 / 7))
    assert schedule(3279) == pytest.approx(10 ** (-1.0))


def test_step_and_exponential_schedules():
    step, exponential = make_schedule("step", 0.1, 3), make_schedule("exponential", 0.9)
    assert [step(e) for e in range(7)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01])
    assert [exponential(e) for e in range(3)] == pytest.approx([1, 0.9, 0.81])
    assert make_schedule("constant")(1000) == 1.0
    assert LR_SCHEDULES.names() == ["constant", "exponential", "iwae", "step"]


def _data():
    return torch.bernoulli(torch.full((40, D), 0.3), generator=torch.Generator().manual_seed(0))


def _params(model, guide):
    return [p.detach().clone() for m in (model, guide) for p in m.parameters()]


def test_a_schedule_sets_each_epochs_learning_rate():
    """With the rate set to 0 after the first epoch, three epochs end where one ends: the
    schedule really reaches Adam (and Adam's other state does not move the parameters)."""
    x = _data()
    runs = []
    for epochs, schedule in ((1, None), (3, lambda epoch: 1.0 if epoch == 0 else 0.0)):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide = tiny_vae(D)
        fit(model, guide, x, epochs=epochs, batch_size=10, progress=False, lr_schedule=schedule,
            elbo="meanfield")
        runs.append(_params(model, guide))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_a_resumed_run_continues_its_schedule(tmp_path):
    """2 epochs, then 2 more from the checkpoint, equal 4 epochs in one go (step schedule)."""
    x = _data()
    schedule = make_schedule("step", 0.5, 1)

    def run(epochs, resume=None, path=None):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide = tiny_vae(D)
        fit(model, guide, x, epochs=epochs, batch_size=10, progress=False, lr_schedule=schedule,
            elbo="meanfield", checkpoint=path, resume=resume)
        return _params(model, guide)

    whole = run(4)
    run(2, path=tmp_path / "c.pt")
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    resumed = run(4, resume=saved, path=tmp_path / "c.pt")
    assert all(torch.equal(a, b) for a, b in zip(whole, resumed, strict=True))


TINY = ["data.train_size=200", "data.test_size=40", "model.hidden=[8]", "model.latent_dim=2",
        "inference.eval_particles=2", "train.epochs=1"]


def test_adam_settings_and_schedule_come_from_the_config(tmp_path):
    config = load_config(None, [*TINY, "train.adam_betas=[0.5, 0.99]", "train.adam_eps=1e-4",
                                'train.schedule="exponential"', "train.lr_decay=0.5",
                                "train.epochs=2"])
    train_vae(config, tmp_path / "run", progress=False)
    payload = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    group = payload["optimizer_state"]["param_groups"][0]
    assert group["betas"] == (0.5, 0.99) or list(group["betas"]) == [0.5, 0.99]
    assert group["eps"] == 1e-4
    assert group["lr"] == pytest.approx(1e-3 * 0.5)  # the second epoch's rate


@pytest.mark.parametrize("override, message", [
    ('train.schedule="cosine"', "train.schedule"),
    ("train.lr_decay=0", "train.lr_decay"),
    ("train.adam_betas=[0.9]", "train.adam_betas"),
    ("train.adam_eps=0", "train.adam_eps"),
    ('model.decoder_bias="median"', "model.decoder_bias"),
    ("data.validation=-1", "data.validation"),
])
def test_bad_training_settings_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [override])


def test_decoder_bias_starts_at_the_logit_of_the_mean_pixel():
    model, _ = tiny_vae(D)
    mean = torch.linspace(0.0, 1.0, D)  # the ends are clamped: logit(0) would be -inf
    init_decoder_bias(model, load_config(), mean)
    expected = torch.logit(mean.clamp(1e-3, 1 - 1e-3))
    assert torch.allclose(model.decoder[-1].bias, expected)
    # z-independent part of the decoder's output: at zero hidden input the image is the mean
    at_zero = torch.sigmoid(model.decoder[-1](torch.zeros(8)))
    assert torch.allclose(at_zero, mean.clamp(1e-3, 1 - 1e-3), atol=1e-6)
    gaussian = load_config(None, ['likelihood.name="gaussian"'])
    with pytest.raises(UserError, match="bernoulli"):
        init_decoder_bias(tiny_vae(D, 'likelihood.name="gaussian"')[0], gaussian, mean)


def test_validation_holds_out_the_last_training_rows(mnist5k):
    held = hold_out(mnist5k, 400)
    assert held.x_train.shape[0] == mnist5k.x_train.shape[0] - 400
    assert torch.equal(held.x_test, mnist5k.x_train[-400:])
    assert torch.equal(held.y_test, mnist5k.y_train[-400:])
    with pytest.raises(UserError, match="data.validation"):
        hold_out(mnist5k, mnist5k.x_train.shape[0])


def test_train_with_validation_and_data_mean_bias(tmp_path):
    config = load_config(None, [*TINY, "data.validation=50", 'model.decoder_bias="data_mean"'])
    metrics = train_vae(config, tmp_path / "run", progress=False)
    assert metrics["evaluated_on"] == "validation" and metrics["num_test"] == 40
    assert math.isfinite(metrics["test_elbo"])


def test_mnist5k_is_unchanged_by_the_new_defaults():
    """The defaults (constant schedule, Adam's own betas and eps, zero bias) are the old run."""
    config = load_config()
    assert (config.train.schedule, config.train.adam_betas, config.train.adam_eps) == (
        "constant", [0.9, 0.999], 1e-8)
    assert config.model.decoder_bias == "zero" and config.data.validation == 0
    assert load_dataset("digits").x_train.shape[1] == 64
