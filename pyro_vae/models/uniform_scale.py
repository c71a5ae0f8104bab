"""The lecture's uniform-scale latent toy model and its exact marginal.

    z ~ Uniform(a, b),    x | z ~ Normal(mu, z),    theta = (a, b, mu),  0 < a < b.

The latent is one-dimensional, so everything the VAE can only estimate is exact
here.  With c = (x - mu)^2 / 2 and E1 the exponential integral,

    p(x) = 1/(b - a) * int_a^b N(x; mu, z) dz
         = [E1(c / b^2) - E1(c / a^2)] / (2 sqrt(2 pi) (b - a))

(substitute t = c / z^2), and the posterior is p(z | x) = N(x; mu, z) / ((b - a) p(x))
on (a, b).  :class:`UniformScaleMarginal` is that marginal as a Pyro distribution
with analytic gradients, so maximum likelihood and NUTS over theta can integrate z
out exactly; :func:`log_marginal_quadrature` is the independent check.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from scipy import integrate, special
from torch import nn
from torch.distributions.utils import broadcast_all
from torch.nn.functional import softplus

from ..errors import UserError

__all__ = [
    "UniformScale",
    "UniformScaleMarginal",
    "check_theta",
    "latent_model",
    "log_e1_difference",
    "log_marginal_quadrature",
    "marginal_model",
    "theta_prior",
]

_LOG_2_SQRT_2PI = math.log(2.0 * math.sqrt(2.0 * math.pi))
# above this argument scipy's exp1 underflows (E1(700) ~ 1e-307): use the asymptotic series
_E1_ASYMPTOTIC_FROM = 700.0
# E1(u_a) - E1(u_b) by the midpoint rule when u_a - u_b < this x min(u_b, 1)
_NARROW = 1e-4


def check_theta(a: float, b: float, mu: float) -> None:
    """Raise :class:`UserError` unless 0 < a < b and all three are finite."""
    if not all(math.isfinite(float(v)) for v in (a, b, mu)):
        raise UserError(f"theta must be finite, got a={a}, b={b}, mu={mu}")
    if not a > 0:
        raise UserError(f"the scale's lower bound must be positive: a={a} <= 0")
    if not a < b:
        raise UserError(f"the scale's bounds must satisfy a < b: a={a} >= b={b}")


def _log_e1(u: np.ndarray) -> np.ndarray:
    """log E1(u) for u > 0, accurate where E1 itself would underflow."""
    out = np.empty_like(u)
    small = u < _E1_ASYMPTOTIC_FROM
    out[small] = np.log(special.exp1(u[small]))
    v = u[~small]
    w = 1 / v  # E1(v) = e^-v / v * (1 - w + 2w^2 - 6w^3 + 24w^4 - ...); next term < 1e-12 here
    out[~small] = -v - np.log(v) + np.log1p(w * (-1 + w * (2 + w * (-6 + 24 * w))))
    return out


def _log_e1_difference_numpy(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log D = log[E1(c / b^2) - E1(c / a^2)], broadcast, in float64; the forward pass.

    Three regimes, each free of cancellation and overflow: c = 0 (the limit 2 log(b / a)),
    a narrow interval (the midpoint rule), otherwise log E1(u_b) + log1p(-E1(u_a) / E1(u_b)).
    :func:`log_e1_difference` is the public, differentiable face of this.
    """
    c, a, b = np.broadcast_arrays(c, a, b)
    out = np.empty(c.shape)
    at_mode = c == 0
    # c = 0 (x = mu): both E1 diverge; their difference tends to 2 log(b / a)
    out[at_mode] = np.log(2.0 * np.log(b[at_mode] / a[at_mode]))
    u_b, u_a = c[~at_mode] / b[~at_mode] ** 2, c[~at_mode] / a[~at_mode] ** 2
    width = u_a - u_b
    # a narrow interval [u_b, u_a]: D = int e^-t / t dt is the midpoint value times the width
    # (relative error ~ (width / min(u, 1))^2 / 12 < 1e-9), where the difference of the two
    # E1 would cancel to nothing
    narrow = width < _NARROW * np.minimum(u_b, 1.0)
    mid = 0.5 * (u_a + u_b)
    inner = np.empty(u_b.shape)
    inner[narrow] = np.log(width[narrow]) - mid[narrow] - np.log(mid[narrow])
    wide = ~narrow
    log_e1_b, log_e1_a = _log_e1(u_b[wide]), _log_e1(u_a[wide])
    # E1 decreases and u_a > u_b, so the ratio E1(u_a) / E1(u_b) lies in (0, 1)
    inner[wide] = log_e1_b + np.log1p(-np.exp(log_e1_a - log_e1_b))
    out[~at_mode] = inner
    return out


class _LogE1Difference(torch.autograd.Function):
    """log D(c, a, b) with D = E1(c / b^2) - E1(c / a^2), differentiable (twice) in c, a, b.

    From d/du E1(u) = -exp(-u) / u:
        dD/dc = (exp(-c/a^2) - exp(-c/b^2)) / c,  dD/da = -2 exp(-c/a^2) / a,
        dD/db = 2 exp(-c/b^2) / b,
    all finite at c = 0.  The backward pass is written in torch operations on the
    saved output, so autograd can differentiate it again (Hessians, NUTS).
    """

    @staticmethod
    def forward(ctx, c, a, b):
        values = _log_e1_difference_numpy(
            *(t.detach().cpu().double().numpy() for t in (c, a, b))
        )
        out = torch.as_tensor(values, dtype=c.dtype, device=c.device)
        ctx.save_for_backward(c, a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        c, a, b, out = ctx.saved_tensors
        k = a.pow(-2) - b.pow(-2)
        positive = c > 0
        safe_c = torch.where(positive, c, torch.ones_like(c))
        # (1 - exp(-c k)) / c, with its limit k at c = 0
        slope = torch.where(positive, -torch.expm1(-safe_c * k) / safe_c, k)
        grad_c = -torch.exp(-c / b**2 - out) * slope
        grad_a = -2.0 * torch.exp(-c / a**2 - out) / a
        grad_b = 2.0 * torch.exp(-c / b**2 - out) / b
        return tuple(
            (grad * g).sum_to_size(t.shape) for g, t in ((grad_c, c), (grad_a, a), (grad_b, b))
        )


def log_e1_difference(c, a, b) -> torch.Tensor:
    """log[E1(c / b^2) - E1(c / a^2)] for c >= 0, 0 < a < b; broadcast, float64, differentiable."""
    return _LogE1Difference.apply(*(torch.as_tensor(t, dtype=torch.float64) for t in (c, a, b)))


class UniformScaleMarginal(dist.TorchDistribution):
    """The toy model's marginal p(x | a, b, mu) with z integrated out exactly.

    Parameters
    ----------
    a, b : tensor
        Bounds of the scale, 0 < a < b (broadcast with ``mu``).
    mu : tensor
        Location.
    """

    arg_constraints = {"a": constraints.positive, "b": constraints.positive, "mu": constraints.real}
    support = constraints.real
    has_rsample = False

    def __init__(self, a, b, mu, validate_args=None):
        self.a, self.b, self.mu = broadcast_all(a, b, mu)
        super().__init__(self.a.shape, validate_args=validate_args)
        if self._validate_args and not bool((self.a < self.b).all()):
            raise ValueError("UniformScaleMarginal needs a < b")

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(UniformScaleMarginal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.a, new.b, new.mu = (t.expand(batch_shape) for t in (self.a, self.b, self.mu))
        super(UniformScaleMarginal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=()):
        with torch.no_grad():
            z = dist.Uniform(self.a, self.b).sample(sample_shape)
            return dist.Normal(self.mu, z).sample()

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        # where b - a has underflowed to 0 (NUTS warm-up can get there) the closed form is
        # 0 / 0; its limit is the Normal at z = a.  The closed form gets a stand-in b there so
        # that neither branch of the where (nor its gradient) holds a NaN.
        point = self.b <= self.a
        b = torch.where(point, 2.0 * self.a, self.b)
        c = 0.5 * (value - self.mu) ** 2
        spread = log_e1_difference(c, self.a, b) - _LOG_2_SQRT_2PI - torch.log(b - self.a)
        return torch.where(point, dist.Normal(self.mu, self.a).log_prob(value), spread)


def log_marginal_quadrature(x, a: float, b: float, mu: float) -> np.ndarray:
    """log p(x) by adaptive quadrature of N(x; mu, z) / (b - a) over z in (a, b), per point.

    Independent of the E1 closed form; used to check it.  ``x`` is array-like (N,).
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))

    def density(z, xi):
        return math.exp(-0.5 * ((xi - mu) / z) ** 2) / (z * math.sqrt(2 * math.pi))

    values = [
        integrate.quad(density, a, b, args=(xi,), epsabs=0.0, epsrel=1e-13, limit=200)[0]
        for xi in x
    ]
    return np.log(values) - math.log(b - a)


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class UniformScale(nn.Module):
    """The Pyro model z ~ Uniform(a, b), x | z ~ Normal(mu, z) with learnable theta.

    theta is stored unconstrained, ``a = softplus(u_a)`` and ``b = a + softplus(u_gap)``,
    so every optimizer step keeps 0 < a < b.  Plain ``nn.Parameter``s trained through
    ``model.parameters()`` (as :func:`pyro_vae.train.fit` does): nothing goes into
    Pyro's global param store, so no stale value can leak from one model to the next.
    The toy model runs in float64: it is one-dimensional, so this costs nothing, and it
    keeps guide samples strictly inside (a, b).

    Parameters
    ----------
    a, b, mu : float
        Initial theta; :class:`~pyro_vae.errors.UserError` unless 0 < a < b.
    """

    def __init__(self, a: float = 0.5, b: float = 2.0, mu: float = 0.0):
        super().__init__()
        check_theta(a, b, mu)
        as_param = lambda v: nn.Parameter(torch.tensor(float(v), dtype=torch.float64))
        self.raw_a = as_param(_inverse_softplus(a))
        self.raw_gap = as_param(_inverse_softplus(b - a))
        self.mu = as_param(mu)

    @property
    def a(self) -> torch.Tensor:
        """Lower bound of the scale, softplus(u_a) > 0; a scalar tensor."""
        return softplus(self.raw_a)

    @property
    def b(self) -> torch.Tensor:
        """Upper bound of the scale, a + softplus(u_gap) > a; a scalar tensor."""
        return self.a + softplus(self.raw_gap)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b), scalars; the support of the prior and of every guide."""
        a = self.a
        return a, a + softplus(self.raw_gap)

    def theta(self) -> dict[str, float]:
        """Current (a, b, mu) as floats."""
        a, b = self.bounds()
        return {"a": a.item(), "b": b.item(), "mu": self.mu.item()}

    def forward(self, x: torch.Tensor | None = None, *, n: int | None = None) -> torch.Tensor:
        """Run the model.

        Parameters
        ----------
        x : (B,) tensor or None
            Observed batch; ``None`` generates ``n`` new points.
        n : int, optional
            Size of the full data set that ``x`` is a mini-batch of (default B).

        Returns
        -------
        (B,) tensor: the observed or generated x.
        """
        if x is None and n is None:
            raise ValueError("give the data x or the number n of points to generate")
        batch = n if x is None else x.shape[0]
        a, b = self.bounds()
        with pyro.plate("data", size=n or batch, subsample_size=batch):
            z = pyro.sample("z", dist.Uniform(a, b))
            return pyro.sample("x", dist.Normal(self.mu, z), obs=x)

    def marginal(self) -> UniformScaleMarginal:
        """p(x | theta) with z integrated out, differentiable in theta."""
        a, b = self.bounds()
        return UniformScaleMarginal(a, b, self.mu)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x_i | theta) by the E1 closed form, shape (N,) for x of shape (N,)."""
        return self.marginal().log_prob(x)

    @torch.no_grad()
    def sample(self, num_points: int) -> torch.Tensor:
        """Draw x_1..x_N from p(x | theta): z ~ Uniform(a, b), then x ~ Normal(mu, z); (N,)."""
        return self.marginal().sample((num_points,))

    @torch.no_grad()
    def log_posterior(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(z | x) = log N(x; mu, z) - log(b - a) - log p(x), shape (B, G).

        For x of shape (B,) and a grid z of shape (G,) inside (a, b).
        """
        a, b = self.bounds()
        joint = dist.Normal(self.mu, z).log_prob(x[:, None]) - torch.log(b - a)
        return joint - self.log_marginal(x)[:, None]


def theta_prior(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weak priors on the data's own scale s: a, b - a ~ LogNormal(log s, 2), mu ~ N(mean, 10 s).

    Scaled to the data so that they stay weak whatever the units; b = a + gap keeps a < b.
    """
    scale = x.std()
    a = pyro.sample("a", dist.LogNormal(scale.log(), 2.0))
    gap = pyro.sample("gap", dist.LogNormal(scale.log(), 2.0))
    mu = pyro.sample("mu", dist.Normal(x.mean(), 10.0 * scale))
    return a, a + gap, mu


def marginal_model(x: torch.Tensor) -> None:
    """Bayesian toy model, z integrated out: theta ~ :func:`theta_prior`, x_i ~ p(x | theta)."""
    a, b, mu = theta_prior(x)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", UniformScaleMarginal(a, b, mu), obs=x)


def latent_model(x: torch.Tensor) -> None:
    """Bayesian toy model with its N latent scales: theta ~ :func:`theta_prior`, z_i, x_i | z_i."""
    a, b, mu = theta_prior(x)
    with pyro.plate("data", x.shape[0]):
        # z = a + (b - a) w with w ~ U(0, 1) is z ~ U(a, b); HMC's transform to the real
        # line is fixed at initialization, so the latent's support must not depend on theta
        w = pyro.sample("w", dist.Uniform(x.new_zeros(()), x.new_ones(())))
        pyro.sample("x", dist.Normal(mu, a + (b - a) * w), obs=x)
