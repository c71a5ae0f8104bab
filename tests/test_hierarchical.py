"""The two-layer VAE: p(z2) p(z1 | z2) p(x | z1) with q(z1 | x) q(z2 | z1) (Burda et al., 2016).

Its ELBO against a hand computation, the IWAE bound's growth with K, the per-site mean-field
estimator, every registered ELBO through ``fit``, building from config, and the command line
(train with figures, evaluate, sample, resume) at toy size.
"""

import json
import math
from contextlib import nullcontext

import pyro
import pytest
import torch
from pyro import poutine
from torch.distributions import Bernoulli, Normal, kl_divergence

from pyro_vae.build import build_vae, init_decoder_bias
from pyro_vae.cli import main
from pyro_vae.config import load_config
from pyro_vae.elbos import (
    ELBOS,
    FusedELBO,
    IWAEBound,
    importance_estimate,
    log_importance_weights,
    make_elbo,
    resolve_elbo,
)
from pyro_vae.errors import UserError
from pyro_vae.guides.hierarchical import HierarchicalGaussianGuide
from pyro_vae.models import HierarchicalVAE
from pyro_vae.train import fit

D, D1, D2 = 6, 3, 2
# Pyro's TraceMeanField_ELBO warns when model and guide sample in different orders (z2, z1
# against z1, z2); the guide makes that order safe (see pyro_vae.guides.hierarchical)
MEAN_FIELD_ORDER = "mean field restriction"


def tiny_pair(*overrides: str, data_dim: int = D, dtype=torch.float64):
    config = load_config(None, [f"model.latent_dims=[{D1}, {D2}]", "model.hidden=[5]",
                                "model.hidden_between=[4]", *overrides])
    model, guide = build_vae(config, data_dim)
    return model.to(dtype), guide.to(dtype)


# four binary points of D = 6 pixels
X = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1],
                  [0, 1, 0, 1, 0, 1]], dtype=torch.float64)


def two_prototypes(rows: int = 64, side: int = 4) -> torch.Tensor:
    """Binary images near one of two prototypes (5% of pixels flipped): something to learn."""
    g = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(2, side * side, generator=g) < 0.5).float()
    x = prototypes[torch.arange(rows) % 2]
    flip = torch.rand(x.shape, generator=g) < 0.05
    return torch.where(flip, 1 - x, x)


def hand_terms(model, guide, x, z1, z2):
    """Per-point log p(x|z1), log p(z1|z2), log p(z2), log q(z1|x), log q(z2|z1), and
    KL(q(z2|z1) || p(z2)), from the networks and torch's distributions, not the modules' helpers."""
    m1, log_s1 = guide.encoder(x).chunk(2, -1)
    m2, log_s2 = guide.upper(z1).chunk(2, -1)
    pm, log_ps = model.between(z2).chunk(2, -1)
    q_z2 = Normal(m2, log_s2.exp())
    p_z2 = Normal(torch.zeros_like(z2), torch.ones_like(z2))
    return {
        "log_px": Bernoulli(logits=model.decoder(z1)).log_prob(x).sum(-1),
        "log_pz1": Normal(pm, log_ps.exp()).log_prob(z1).sum(-1),
        "log_pz2": p_z2.log_prob(z2).sum(-1),
        "log_qz1": Normal(m1, log_s1.exp()).log_prob(z1).sum(-1),
        "log_qz2": q_z2.log_prob(z2).sum(-1),
        "kl_z2": kl_divergence(q_z2, p_z2).sum(-1),
    }


def guide_draws(guide, x, n, seed):
    """(z1, z2) that the guide draws with ``seed``: the ELBOs draw them first, the same way."""
    pyro.set_rng_seed(seed)
    trace = poutine.trace(guide).get_trace(x, n=n)
    return trace.nodes["z1"]["value"], trace.nodes["z2"]["value"]


def test_sites_shapes_and_interface():
    model, guide = tiny_pair()
    guide_trace = poutine.trace(guide).get_trace(X, n=10)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(X, n=10)
    assert [k for k, s in guide_trace.nodes.items() if s["type"] == "sample"][-2:] == ["z1", "z2"]
    assert guide_trace.nodes["z1"]["value"].shape == (4, D1)
    assert guide_trace.nodes["z2"]["value"].shape == (4, D2)
    for name in ("z2", "z1", "x"):
        assert model_trace.nodes[name]["scale"] == 10 / 4  # every site in the data plate
        assert model_trace.nodes[name]["fn"].batch_shape == (4,)
    assert model(n=5).shape == (5, D)
    assert model.sample_means(7).shape == (7, D)
    draws = model.prior().sample((3, 5))  # what the ArviZ export asks of model.prior()
    assert draws.shape == (3, 5, D1)
    with pytest.raises(NotImplementedError, match="importance sampling"):
        model.prior().log_prob(draws)
    loc, scale = guide.encode(X)
    assert loc.shape == scale.shape == (4, D1) and bool((scale > 0).all())
    assert model.decode_mean(loc).shape == (4, D)


def test_elbo_equals_the_hand_computation():
    """Trace_ELBO, one particle: (n/B) sum_b [log p(x|z1) + log p(z1|z2) + log p(z2)
    - log q(z1|x) - log q(z2|z1)] at the guide's draws; K = 1 of IWAE and of the importance
    weights give the same number."""
    model, guide = tiny_pair()
    n = 10
    pyro.set_rng_seed(3)
    elbo = -pyro.infer.Trace_ELBO().loss(model, guide, X, n=n)
    z1, z2 = guide_draws(guide, X, n, seed=3)
    with torch.no_grad():
        t = hand_terms(model, guide, X, z1, z2)
        per_point = t["log_px"] + t["log_pz1"] + t["log_pz2"] - t["log_qz1"] - t["log_qz2"]
    assert elbo == pytest.approx(n / 4 * per_point.sum().item(), rel=1e-12)
    pyro.set_rng_seed(3)
    assert -IWAEBound(num_particles=1).loss(model, guide, X, n=n) == pytest.approx(elbo, rel=1e-12)
    pyro.set_rng_seed(3)
    weights = log_importance_weights(model, guide, X, 1)
    assert weights.shape == (1, 4)
    # the estimate's draws are its own (no data-set size): compare it with its own draws
    z1, z2 = guide_draws(guide, X, None, seed=3)
    with torch.no_grad():
        t = hand_terms(model, guide, X, z1, z2)
    own = t["log_px"] + t["log_pz1"] + t["log_pz2"] - t["log_qz1"] - t["log_qz2"]
    torch.testing.assert_close(weights[0], own, rtol=1e-12, atol=1e-12)


def test_meanfield_takes_the_closed_form_at_z2_only():
    """KL(q(z2|z1) || p(z2)) in closed form; z1's term stays Monte Carlo, because p(z1 | z2)
    depends on the z2 the guide draws from z1 (a closed form at one z2 would be biased)."""
    model, guide = tiny_pair()
    n = 10
    z1, z2 = guide_draws(guide, X, n, seed=5)
    with pytest.raises(NotImplementedError):
        kl_divergence(guide.posterior(X), model.conditional(z2))
    kl_divergence(guide.posterior_top(z1), model.top_prior())  # registered: no error
    pyro.set_rng_seed(5)
    with pytest.warns(UserWarning, match=MEAN_FIELD_ORDER):
        meanfield = -make_elbo("meanfield").loss(model, guide, X, n=n)
    with torch.no_grad():
        t = hand_terms(model, guide, X, z1, z2)
        per_point = t["log_px"] + t["log_pz1"] - t["log_qz1"] - t["kl_z2"]
    assert meanfield == pytest.approx(n / 4 * per_point.sum().item(), rel=1e-12)
    assert resolve_elbo(model, guide, X, n=n) == "trace"  # what "auto" amounts to here


def test_meanfield_and_trace_agree_in_expectation():
    """Same draws (same seed): they differ only by z2's log q - log p against its closed-form
    KL, a zero-mean difference; its mean over 20 seeds x 200 copies of each point is ~0."""
    model, guide = tiny_pair()
    copies = X.repeat(200, 1)
    differences = []
    for seed in range(20):
        pyro.set_rng_seed(seed)
        trace = pyro.infer.Trace_ELBO().loss(model, guide, copies)
        pyro.set_rng_seed(seed)
        with pytest.warns(UserWarning, match=MEAN_FIELD_ORDER):
            meanfield = make_elbo("meanfield").loss(model, guide, copies)
        differences.append((trace - meanfield) / copies.shape[0])
    diff = torch.tensor(differences)
    standard_error = diff.std() / math.sqrt(len(diff))
    assert diff.abs().max() > 0  # they are different estimators
    assert abs(diff.mean()) < 4 * standard_error


def test_iwae_bound_increases_with_k():
    """Mean over 500 draws per point of the K-sample bound: K = 1 < 5 < 50 (by many
    standard errors at this untrained, badly matched guide)."""
    model, guide = tiny_pair()
    copies = X.repeat(500, 1)
    means, errors = [], []
    pyro.set_rng_seed(0)
    with torch.no_grad():
        for k in (1, 5, 50):
            bound, scale = IWAEBound(num_particles=k).pointwise(model, guide, copies)
            assert bound.shape == (copies.shape[0],) and scale == 1.0
            means.append(bound.mean().item())
            errors.append(bound.std().item() / math.sqrt(bound.numel()))
    assert means[0] + 5 * errors[0] < means[1] and means[1] + 5 * errors[1] < means[2]
    estimate = importance_estimate(model, guide, X, num_particles=200)
    assert bool((estimate.log_likelihood > estimate.elbo).all())
    assert bool((estimate.log_likelihood > means[2] - 1.0).all())  # near K = 50's mean


@pytest.mark.parametrize("name", ELBOS.names())
def test_every_registered_elbo_trains(name, one_thread):
    """One epoch of ``fit`` per ELBO name; fused ones fall back to Pyro's for this model."""
    model, guide = tiny_pair(data_dim=16, dtype=torch.float32)
    x = two_prototypes(16)
    # Pyro's TraceMeanField_ELBO itself warns; anything else would fail (filterwarnings = error)
    mean_field = name in ("meanfield", "fused")
    with pytest.warns(UserWarning, match=MEAN_FIELD_ORDER) if mean_field else nullcontext():
        result = fit(model, guide, x, epochs=1, batch_size=8, elbo=name, num_particles=2,
                     progress=False)
    assert math.isfinite(result.train_elbo[0])
    assert result.elbo == ("trace" if name == "auto" else name)


def test_fused_path_declines_and_falls_back_to_pyro():
    model, guide = tiny_pair()
    fused = FusedELBO(analytic_kl=False)
    assert "not pyro_vae's VAE" in fused.decline_reason(model, guide, X, n=10)
    pyro.set_rng_seed(2)
    plain = pyro.infer.Trace_ELBO().loss(model, guide, X, n=10)
    pyro.set_rng_seed(2)
    assert fused.loss(model, guide, X, n=10) == pytest.approx(plain, rel=1e-12)


def test_training_raises_the_elbo_with_auto_free_bits_and_warmup(one_thread):
    model, guide = tiny_pair(data_dim=16, dtype=torch.float32)
    x = two_prototypes(64)
    result = fit(model, guide, x, x_test=x[:16], epochs=8, batch_size=16, lr=1e-2, elbo="auto",
                 progress=False, seed=1)
    assert result.elbo == "trace"
    assert result.train_elbo[-1] > result.train_elbo[0] + 1.0
    assert result.test_elbo[-1] > result.test_elbo[0]
    model, guide = tiny_pair(data_dim=16, dtype=torch.float32)
    result = fit(model, guide, x, epochs=2, batch_size=16, elbo="meanfield", free_bits=0.5,
                 kl_warmup_epochs=1, progress=False)  # free bits: Monte Carlo KL at z1
    assert all(math.isfinite(v) for v in result.train_elbo)


def test_build_from_config():
    config = load_config(None, ["model.latent_dims=[6, 3]", "model.hidden=[12, 10]",
                                "model.hidden_between=[9, 7]", 'model.activation="tanh"'])
    model, guide = build_vae(config, 20)
    assert isinstance(model, HierarchicalVAE) and isinstance(guide, HierarchicalGaussianGuide)
    linear = [torch.nn.Linear]

    def widths(net):
        return [(m.in_features, m.out_features) for m in net if type(m) in linear]

    assert widths(guide.encoder) == [(20, 10), (10, 12), (12, 12)]  # x -> reversed(hidden) -> 2 d1
    assert widths(model.decoder) == [(6, 12), (12, 10), (10, 20)]  # z1 -> hidden -> D
    assert widths(guide.upper) == [(6, 7), (7, 9), (9, 6)]  # z1 -> reversed(between) -> 2 d2
    assert widths(model.between) == [(3, 9), (9, 7), (7, 12)]  # z2 -> between -> 2 d1
    assert isinstance(model.decoder[1], torch.nn.Tanh)
    assert model.top_prior().event_shape == (3,)
    init_decoder_bias(model, config, torch.full((20,), 0.25))
    torch.testing.assert_close(model.decoder[-1].bias, torch.full((20,), math.log(1 / 3)))


@pytest.mark.parametrize("override, key", [('prior.name="mixture"', "prior.name"),
                                           ('guide.name="iaf"', "guide.name")])
def test_other_prior_or_guide_is_a_one_line_user_error(override, key):
    config = load_config(None, ["model.latent_dims=[6, 3]", override])
    with pytest.raises(UserError, match=key) as info:
        build_vae(config, 16)
    assert "\n" not in str(info.value)


def test_command_line_train_evaluate_sample_resume_and_arviz(tmp_path, capsys, one_thread):
    """``pyro-vae train --set model.latent_dims=[6,3]`` end to end on 8x8 digits: metrics,
    checkpoint, the four figures; then evaluate, sample and --resume on its run folder."""
    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "16",
            "--set", "model.latent_dims=[6,3]", "--set", "model.hidden=[16]",
            "--set", "model.hidden_between=[8]", "--set", "data.train_size=64",
            "--set", "data.test_size=16", "--eval-particles", "4", "--quiet", "--json",
            "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["elbo"] == "trace"  # auto: Monte Carlo at z1 makes it trace
    assert math.isfinite(metrics["test_elbo"]) and math.isfinite(metrics["test_log_likelihood"])
    assert set(metrics["figures"]) == {"curves", "samples", "reconstructions", "latent"}
    checkpoint = out / "checkpoint.pt"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--eval-particles", "4",
                 "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert math.isfinite(evaluated["test_log_likelihood"])
    png = tmp_path / "samples.png"
    assert main(["sample", "--checkpoint", str(checkpoint), "-n", "4", "--out", str(png)]) == 0
    assert png.stat().st_size > 0
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(resumed["train_elbo"]) == 2

    from pyro_vae.arviz import vae_inference_data  # arviz is heavy: only this test needs it
    from pyro_vae.experiments.vae import restore_vae

    trained = restore_vae(checkpoint)
    x = torch.rand(5, 64, generator=torch.Generator().manual_seed(0)).round()
    idata = vae_inference_data(trained.model, trained.guide, x, num_draws=3, num_prior_draws=2)
    assert idata.posterior["z"].shape == (1, 3, 5, 6)
    assert idata.prior["z"].shape == (1, 2, 5, 6)
    assert idata.log_likelihood["x"].shape == (1, 3, 5)
