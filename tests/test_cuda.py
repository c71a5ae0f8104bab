"""On a CUDA GPU: the fused ELBO is Pyro's there too, and training reads the device only at checks.

Skipped without a GPU (CI has none); ``benchmarks/gpu_check.sh`` runs this file on one.
"""

import warnings

import pytest
import torch
from test_fused import N, assert_same, binary_batch, loss_and_grads, tiny_pair
from test_reliability import reads_added_by_one_epoch

from pyro_vae.elbos import make_elbo
from pyro_vae.train import CHECK_EVERY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("name, plain", [("fused", "meanfield"), ("fused_trace", "trace")])
def test_fused_elbo_equals_pyro_on_cuda(name, plain):
    model, guide = (m.cuda() for m in tiny_pair())
    x = binary_batch().cuda()
    fused = loss_and_grads(make_elbo(name), model, guide, x, N, seed=3, fused=True)
    reference = loss_and_grads(make_elbo(plain), model, guide, x, N, seed=3, fused=False)
    assert fused[0].is_cuda
    assert_same(fused, reference)


def _synchronisations(train) -> int:
    """How many times ``train()`` made the host wait for the GPU."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing CUDA operation" in str(w.message) for w in caught)


def test_training_on_cuda_synchronises_once_per_check_not_once_per_step():
    assert reads_added_by_one_epoch(_synchronisations, device="cuda") == 60 // CHECK_EVERY
