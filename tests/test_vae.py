"""The VAE model and guide: shapes, plate scaling, the lecture's loss, training, evaluation."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import tiny_vae
from pyro import poutine

from pyro_vae.elbos import importance, importance_estimate, log_importance_weights, make_elbo
from pyro_vae.guides import AmortizedGuide, active_units
from pyro_vae.lecture.plain_vae import lecture_loss
from pyro_vae.train import fit

D, LATENT = 784, 8


@pytest.fixture
def pair():
    return tiny_vae(D, latent_dim=LATENT, hidden=32)


@pytest.fixture
def batch(mnist5k):
    return torch.bernoulli(mnist5k.x_test[:16], generator=torch.Generator().manual_seed(1))


def test_shapes(pair, batch):
    model, guide = pair
    guide_trace = poutine.trace(guide).get_trace(batch, n=1000)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch, n=1000)
    assert guide_trace.nodes["z"]["value"].shape == (16, LATENT)
    assert model_trace.nodes["x"]["fn"].event_shape == (D,)
    assert model_trace.nodes["x"]["fn"].batch_shape == (16,)
    generated = model(n=5)
    assert generated.shape == (5, D) and set(generated.unique().tolist()) <= {0.0, 1.0}
    assert model.sample_means(3).shape == (3, D)


def test_plate_scales_the_batch_elbo_by_n_over_b(pair, batch):
    """A batch of B = 16 out of n = 4000 counts 250 times: the ELBO estimates the full data set."""
    model, guide = pair

    def elbo_estimate(n, replay_from=None):
        replayed = guide if replay_from is None else poutine.replay(guide, trace=replay_from)
        guide_trace = poutine.trace(replayed).get_trace(batch, n=n)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch, n=n)
        assert model_trace.nodes["x"]["scale"] == n / 16
        return (model_trace.log_prob_sum() - guide_trace.log_prob_sum()).item(), guide_trace

    full, guide_trace = elbo_estimate(4000)
    batch_only, _ = elbo_estimate(16, replay_from=guide_trace)  # the same z
    assert full / batch_only == pytest.approx(4000 / 16, rel=1e-6)


def test_lecture_loss_is_the_analytic_kl_elbo(pair, batch):
    """BCE + |y1|^2/2 + |e^y2|^2/2 - sum y2 = -ELBO(meanfield) + latent_dim/2, same noise u."""
    model, guide = pair
    pyro.set_rng_seed(7)
    u = dist.Normal(0.0, 1.0).rsample((16, LATENT))
    pyro.set_rng_seed(7)
    guide_trace = poutine.trace(guide).get_trace(batch)
    loc, scale = guide.encode(batch)
    assert torch.allclose(guide_trace.nodes["z"]["value"], loc + scale * u)
    pyro.set_rng_seed(7)
    pyro_loss = make_elbo("meanfield").loss(model, guide, batch)
    lecture = lecture_loss(guide.encoder, model.decoder, batch, u).sum().item()
    assert lecture - 16 * LATENT / 2 == pytest.approx(pyro_loss, rel=1e-5)


def test_importance_estimate_k1_is_the_elbo_and_larger_k_is_not_below(pair, batch):
    model, guide = pair
    pyro.set_rng_seed(0)
    w = log_importance_weights(model, guide, batch, 1)
    pyro.set_rng_seed(0)
    one = importance_estimate(model, guide, batch, num_particles=1)
    assert torch.equal(one.elbo, one.log_likelihood) and torch.allclose(one.elbo, w[0])
    # in expectation: the mean of many single-particle estimates is the ELBO estimate
    many = log_importance_weights(model, guide, batch, 2000)
    assert many.mean() == pytest.approx(one.elbo.mean().item(), abs=4 * many.std().item() / 16**0.5)
    k100 = importance_estimate(model, guide, batch, num_particles=100)
    assert (k100.log_likelihood >= k100.elbo).all()  # Jensen, per data point
    assert k100.log_likelihood.mean() > many.mean()


def test_importance_estimate_groups_particles_when_one_row_exceeds_the_bound(
        pair, batch, monkeypatch):
    """With room for 3 particles of one 784-pixel row, K = 10 is drawn as 3 + 3 + 3 + 1 per
    row and joined before the logsumexp: the numbers of doing that by hand."""
    model, guide = pair
    monkeypatch.setattr(importance, "CHUNK_ELEMENTS", 3 * D)
    pyro.set_rng_seed(0)
    grouped = importance_estimate(model, guide, batch[:4], num_particles=10)
    pyro.set_rng_seed(0)
    by_hand = [torch.cat([log_importance_weights(model, guide, row, k) for k in (3, 3, 3, 1)])
               for row in batch[:4].split(1)]
    weights = torch.cat(by_hand, dim=1)  # (10, 4)
    torch.testing.assert_close(grouped.elbo, weights.mean(0))  # same draws, summed anew
    torch.testing.assert_close(grouped.log_likelihood, weights.logsumexp(0) - math.log(10))
    assert (grouped.log_likelihood >= grouped.elbo).all()


def test_pyro_svi_trains_the_same_pair(pair, batch):
    """The model and guide are ordinary Pyro: SVI with pyro.optim works on them too."""
    model, guide = pair
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    losses = [svi.step(batch) for _ in range(30)]
    assert sum(losses[-5:]) < sum(losses[:5])


def test_a_few_epochs_raise_the_test_elbo(pair, mnist5k):
    model, guide = pair
    x_train = torch.bernoulli(mnist5k.x_train[:600], generator=torch.Generator().manual_seed(0))
    x_test = torch.bernoulli(mnist5k.x_test[:200], generator=torch.Generator().manual_seed(1))
    before = importance_estimate(model, guide, x_test, 1).elbo.mean().item()
    result = fit(model, guide, x_train, x_test=x_test, epochs=3, batch_size=64, lr=3e-3,
                 progress=False)
    assert len(result.train_elbo) == len(result.test_elbo) == 3
    assert result.test_elbo[-1] > before + 100  # from ~-550 nats to under -250
    assert result.test_elbo[-1] > result.test_elbo[0]


def test_watching_the_test_elbo_does_not_change_training(mnist5k):
    """fit's per-epoch test ELBO draws on forked generators: with or without x_test, the
    same seed trains to the same parameters (bit for bit)."""
    x_train = torch.bernoulli(mnist5k.x_train[:128], generator=torch.Generator().manual_seed(0))
    x_test = x_train[:32]
    trained = []
    for watched in (None, x_test):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide = tiny_vae(D, latent_dim=2)
        fit(model, guide, x_train, x_test=watched, epochs=2, batch_size=32, progress=False)
        trained.append([p.detach().clone() for m in (model, guide) for p in m.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*trained, strict=True))


class _FixedGuide(AmortizedGuide):
    """q(z | x) = N(x[:, :4] * mask, 1) (through an identity flow when ``flow``)."""

    def __init__(self, mask, flow=False):
        super().__init__(torch.nn.Identity())
        self.mask, self.flow = mask, flow

    def posterior(self, x):
        base = dist.Normal(x[:, :4] * self.mask, torch.ones(4)).to_event(1)
        if not self.flow:
            return base
        return dist.TransformedDistribution(base, [dist.transforms.AffineTransform(0.0, 1.0)])


@pytest.mark.parametrize("flow", [False, True])
def test_active_units_count_the_dimensions_whose_posterior_mean_varies(flow):
    """Uniform data give mean variance 1/12 > 0.01 on the kept dimensions, 0 on the others;
    without a closed-form mean (a flow) 1000 draws keep the noise variance near 1e-3."""
    x = torch.rand(500, 6)
    assert active_units(_FixedGuide(torch.tensor([1.0, 1.0, 1.0, 0.0]), flow), x) == 3
    assert active_units(_FixedGuide(torch.tensor([0.0, 1.0, 0.0, 0.0]), flow), x) == 1
    assert active_units(_FixedGuide(torch.tensor([0.05, 0.0, 0.0, 0.0]), flow), x) == 0
