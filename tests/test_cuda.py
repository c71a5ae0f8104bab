"""On a CUDA GPU: the fused ELBO is Pyro's there too, and training reads the device only at checks.

Skipped without a GPU (CI has none); ``benchmarks/gpu_check.sh`` runs this file on one.
"""

import copy
import warnings

import pyro
import pytest
import torch
from test_fused import N, assert_same, binary_batch, loss_and_grads, tiny_pair

from pyro_vae.infer import _CHECK_EVERY, fit, make_elbo

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("name, plain", [("fused", "meanfield"), ("fused_trace", "trace")])
def test_fused_elbo_equals_pyro_on_cuda(name, plain):
    model, guide = (m.cuda() for m in tiny_pair())
    x = binary_batch().cuda()
    fused = loss_and_grads(make_elbo(name), model, guide, x, N, seed=3, fused=True)
    reference = loss_and_grads(make_elbo(plain), model, guide, x, N, seed=3, fused=False)
    assert fused[0].is_cuda
    assert_same(fused, reference)


def _synchronisations(fit_call) -> int:
    """How many times ``fit_call()`` made the host wait for the GPU."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing CUDA operation" in str(w.message) for w in caught)


def test_training_on_cuda_synchronises_once_per_check_not_once_per_step():
    model, guide = (m.cuda() for m in tiny_pair())
    x = torch.bernoulli(torch.full((960, 12), 0.4, device="cuda"))
    counts = []
    for epochs in (1, 2):  # 60 steps per epoch
        pyro.clear_param_store()
        pair = [copy.deepcopy(m) for m in (model, guide)]
        counts.append(_synchronisations(
            lambda pair=pair, epochs=epochs: fit(
                *pair, x, epochs=epochs, batch_size=16, elbo="auto", progress=False
            )
        ))
    assert counts[1] - counts[0] == 60 // _CHECK_EVERY
