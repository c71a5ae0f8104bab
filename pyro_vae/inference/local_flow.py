"""A flexible local q: a normalizing flow with its own parameters for each image.

How much of the approximation gap log p(x) - ELBO(q*) is the Gaussian family's?  Fit a
richer family to each x alone and see how much closer its ELBO gets (Cremer, Li &
Duvenaud, 2018, used flows for this).  Here

    u_0 ~ N(mu, diag(sigma^2)),    u_k = m_k(u_{k-1}) + exp(s_k(u_{k-1})) * u_{k-1},
    z = u_F,                       log q(z) = log N(u_0; mu, sigma) - sum_k sum_j s_kj

with F inverse autoregressive layers (Kingma et al., 2016): (m_k, s_k) a one-hidden-layer
MADE (Germain et al., 2015), so output j depends on inputs before j only, and the
coordinate order reversed between layers.  Every image b has its own (mu, sigma) and
MADE weights, held as tensors with a leading dim B, so B flows are evaluated and fitted
at once by batched matrix products.  The last layer of each MADE starts at zero, so the
flow starts as the identity: q starts at the encoder's Gaussian and the fit (the loop
of :func:`~.local_refinement.fit_local`) can only add to its family.

z is the concatenation of the model's latent sites (:class:`LatentJoint`).  For the
two-layer VAE, z = (z2, z1) with d = d2 + d1 and the encoder's q(z1 | x) q(z2 | z1) is not
a diagonal Gaussian on it; the base then starts at the diagonal Gaussian with the moments
of that q, mu_j = E_q[z_j] and sigma_j = sd_q(z_j) from draws of the amortized guide, so
the flow starts near (not at) the encoder's q: the correlation between the layers is what
the autoregressive layers have to learn.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..guides.hierarchical import HierarchicalGaussianGuide
from .latent_joint import LatentJoint
from .local_refinement import LocalFit, fit_in_chunks, fit_local, gaussian_head, guide_draws

__all__ = ["LocalIAF", "flow_start", "fit_local_flow"]

# |s| <= this: a layer scales each coordinate by at most e^3 either way (no overflow)
_MAX_LOG_SCALE = 3.0
# draws of a two-layer guide whose moments start the base: each moment within ~3% of sd
_MOMENT_DRAWS = 1000


def _made_masks(dim: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (dim, hidden) and (hidden, dim) of a MADE: output j sees inputs i < j only."""
    degree_in = torch.arange(1, dim + 1)
    degree_hidden = torch.arange(hidden) % max(dim - 1, 1) + 1
    first = (degree_hidden[None, :] >= degree_in[:, None]).float()
    second = (degree_in[None, :] > degree_hidden[:, None]).float()
    return first, second


class LocalIAF:
    """B independent IAF flows of F layers on R^d, one per image; parameters are leaves.

    Parameters
    ----------
    loc, scale : (B, d) tensors
        The base Gaussian's start (the encoder's output).
    layers : int
        F, the number of autoregressive layers.
    hidden : int
        Width of each MADE's hidden layer.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, layers: int = 2,
                 hidden: int | None = None):
        batch, dim = loc.shape
        hidden = hidden or 2 * dim
        self.loc = loc.detach().clone().requires_grad_(True)
        self.log_scale = scale.detach().log().clone().requires_grad_(True)
        self.mask_in, self.mask_out = _made_masks(dim, hidden)
        self.layers = []
        for _ in range(layers):
            w_in = torch.randn(batch, dim, hidden) / math.sqrt(dim)
            self.layers.append([
                w_in.requires_grad_(True),
                torch.zeros(batch, hidden, requires_grad=True),
                torch.zeros(batch, hidden, 2 * dim, requires_grad=True),  # identity at start
                torch.zeros(batch, 2 * dim, requires_grad=True),
            ])

    def base_parameters(self) -> list[torch.Tensor]:
        """The base Gaussian's (loc, log scale), each (B, d)."""
        return [self.loc, self.log_scale]

    def flow_parameters(self) -> list[torch.Tensor]:
        """Every layer's MADE weights and biases, each with a leading dim B."""
        return [p for layer in self.layers for p in layer]

    def sample(self, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z of shape (num, B, d) and log q(z) of shape (num, B), reparameterized."""
        base = torch.distributions.Normal(self.loc, self.log_scale.exp())
        u = base.rsample((num,))
        log_q = base.log_prob(u).sum(-1)
        for k, (w_in, b_in, w_out, b_out) in enumerate(self.layers):
            if k % 2:  # reverse the order: each coordinate is conditioned on in some layer
                u = u.flip(-1)
            h = F.softplus(torch.einsum("nbi,bih->nbh", u, w_in * self.mask_in) + b_in)
            mask_out = self.mask_out.repeat(1, 2)
            shift, raw = (torch.einsum("nbh,bho->nbo", h, w_out * mask_out) + b_out).chunk(2, -1)
            log_scale = _MAX_LOG_SCALE * torch.tanh(raw / _MAX_LOG_SCALE)
            u = shift + log_scale.exp() * u
            log_q = log_q - log_scale.sum(-1)
            if k % 2:
                u = u.flip(-1)
        return u, log_q


def flow_start(guide, joint: LatentJoint) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale), each (B, d), where the base of ``joint``'s images starts: the Gaussian
    head of a one-layer guide, or the moments of draws of the two-layer guide's q."""
    if not isinstance(guide, HierarchicalGaussianGuide):
        return gaussian_head(guide, joint.x)
    z, _ = guide_draws(guide, joint, _MOMENT_DRAWS)
    return z.mean(0), z.std(0)


def fit_local_flow(
    model, guide, x: torch.Tensor, steps: int = 500, layers: int = 2, hidden: int | None = None,
    particles: int = 8, lr: float = 5e-2, eval_particles: int = 1000, bar=None,
) -> LocalFit:
    """A :class:`LocalIAF` fitted to each row of x (N, D) alone, its base started at
    :func:`flow_start`, by the loop and stopping rule of :func:`~.local_refinement.fit_local`."""
    def fit_chunk(joint: LatentJoint, rows: torch.Tensor) -> LocalFit:
        flow = LocalIAF(*flow_start(guide, joint), layers=layers, hidden=hidden)
        return fit_local(joint, flow.sample, flow.base_parameters(), steps, particles, lr,
                         eval_particles, slow=flow.flow_parameters())

    dim = LatentJoint(model, x[:1], keep_stream=True).latent_dim
    width = hidden or 2 * dim
    # per image: a step's (M, D) likelihood terms, or one layer's (H, 2d) output weights
    return fit_in_chunks(model, x, fit_chunk, max(particles * x.shape[1], width * 2 * dim), bar)
