"""Priors p(z) and conditional priors p(z|c).

Every prior is a :class:`torch.nn.Module` with one contract::

    prior(batch_shape, c=None) -> pyro distribution with event_dim == 1

The distribution's event is the latent vector z (``event_shape == (z_dim,)``);
its batch shape is ``batch_shape`` (for conditional priors, the batch shape
of ``c``). Constants are registered buffers and learned quantities are
parameters, so ``.to(device)`` moves a prior with its model and nothing inside
a model or guide is created on a fixed device.

A user's own prior is any module honouring the same contract.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn
from torch.nn.functional import softplus

__all__ = [
    "Prior",
    "StandardNormal",
    "Normal",
    "GaussianMixture",
    "Laplace",
    "Flat",
    "get",
]


def _check_dim(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class Prior(nn.Module):
    """Base class of priors over a ``z_dim``-dimensional latent vector."""

    #: True for priors whose samples are meaningless (improper densities)
    improper = False

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = _check_dim("z_dim", z_dim)
        # A zero-size buffer that tells the prior's device and dtype.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def _zeros(self) -> torch.Tensor:
        return self._anchor.new_zeros(self.z_dim)

    def forward(self, batch_shape=(), c=None) -> dist.TorchDistribution:
        if c is not None:
            raise ValueError(
                f"{type(self).__name__} is not a conditional prior; it was given c= "
                "(use priors.ConditionalNormal for p(z|c))"
            )
        return self.distribution().expand(torch.Size(batch_shape))

    def distribution(self) -> dist.TorchDistribution:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}"


class StandardNormal(Prior):
    r""":math:`p(z) = \mathcal N(0, I)`, the prior of Kingma & Welling (2014)."""

    def distribution(self):
        zeros = self._zeros()
        return dist.Normal(zeros, zeros + 1.0).to_event(1)


class Normal(Prior):
    r"""A diagonal Gaussian :math:`\mathcal N(\mu, \mathrm{diag}(\sigma^2))` with learned
    :math:`\mu` and :math:`\sigma` (initialized at the standard normal)."""

    def __init__(self, z_dim: int):
        super().__init__(z_dim)
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.raw_scale = nn.Parameter(torch.full((z_dim,), _inverse_softplus(1.0)))

    @property
    def scale(self) -> torch.Tensor:
        return softplus(self.raw_scale)

    def distribution(self):
        return dist.Normal(self.loc, self.scale).to_event(1)


class GaussianMixture(Prior):
    r"""A learned mixture of ``components`` diagonal Gaussians,

    .. math:: p(z) = \sum_{k=1}^K \pi_k\, \mathcal N(z; \mu_k, \mathrm{diag}(\sigma_k^2)),

    with learned weights :math:`\pi = \mathrm{softmax}(w)`, means and scales, as a
    :class:`~pyro.distributions.MixtureSameFamily` (the component is summed out).
    The means start spread out (a standard normal draw, fixed by ``seed``) so
    components do not collapse onto one another at the first step.

    :param int z_dim: latent dimension.
    :param int components: number of mixture components K.
    :param float init_scale: initial standard deviation of each component.
    :param int seed: seed of the initial means (independent of the global RNG).
    """

    def __init__(self, z_dim: int, components: int = 10, init_scale: float = 0.5, seed: int = 0):
        super().__init__(z_dim)
        self.components = _check_dim("components", components)
        generator = torch.Generator().manual_seed(seed)
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(torch.randn(components, z_dim, generator=generator))
        self.raw_scales = nn.Parameter(
            torch.full((components, z_dim), _inverse_softplus(init_scale))
        )

    @property
    def scales(self) -> torch.Tensor:
        return softplus(self.raw_scales)

    @property
    def weights(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    def component_distribution(self) -> dist.TorchDistribution:
        """The K Gaussians as one distribution of batch shape ``(K,)``."""
        return dist.Normal(self.locs, self.scales).to_event(1)

    def distribution(self):
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits), self.component_distribution()
        )

    def extra_repr(self):
        return f"z_dim={self.z_dim}, components={self.components}"


class Laplace(Prior):
    r"""A factorized Laplace prior :math:`p(z) = \prod_j \tfrac{1}{2b} e^{-|z_j|/b}`.

    Its negative log-density is :math:`\|z\|_1 / b + D \log 2b`: an L1 penalty of
    weight :math:`\lambda = 1/b` (the sparse-coding reading of sparsity).

    :param float scale: the scale b.
    """

    def __init__(self, z_dim: int, scale: float = 1.0):
        super().__init__(z_dim)
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.register_buffer("scale", torch.tensor(float(scale)))

    def distribution(self):
        zeros = self._zeros()
        return dist.Laplace(zeros, zeros + self.scale).to_event(1)


class Flat(Prior):
    r"""The improper flat prior, :math:`\log p(z) = 0`.

    It contributes nothing to the loss: with a Delta guide the ELBO reduces to
    the reconstruction term, which is the deterministic autoencoder's loss.
    It cannot be sampled.
    """

    improper = True

    def distribution(self):
        return dist.ImproperUniform(constraints.real, torch.Size(), torch.Size([self.z_dim]))


_REGISTRY = {
    "standard-normal": StandardNormal,
    "normal": Normal,
    "gaussian-mixture": GaussianMixture,
    "gmm": GaussianMixture,
    "laplace": Laplace,
    "flat": Flat,
}


def get(name: str, z_dim: int, **kwargs) -> Prior:
    """Builds a prior from its command-line name (``standard-normal``, ``normal``,
    ``gaussian-mixture``/``gmm``, ``laplace``, ``flat``)."""
    try:
        cls = _REGISTRY[name.lower().replace("_", "-")]
    except KeyError:
        raise ValueError(f"unknown prior {name!r}; expected one of {sorted(_REGISTRY)}") from None
    return cls(z_dim, **kwargs)


class ConditionalNormal(Prior):
    r"""A learned conditional prior :math:`p(z|c) = \mathcal N(\mu(c), \mathrm{diag}\,\sigma^2(c))`,
    the prior network of the conditional VAE (Sohn, Lee & Yan 2015).

    :math:`\mu` and :math:`\sigma` come from one MLP on the flattened condition c
    (``hidden=()`` makes it a single linear map). Its last layer starts at zero
    weights and at the bias that gives :math:`\mu = 0,\ \sigma = 1`, so before
    training :math:`p(z|c) = \mathcal N(0, I)` for every c and the conditional VAE
    starts as a VAE whose networks read c.

    Called as ``prior(batch_shape, c)`` with ``c`` of shape ``(*batch_shape, c_dim)``.

    :param int c_dim: size of the flattened condition.
    :param int z_dim: latent dimension.
    :param tuple hidden: hidden widths of the prior network.

    **References**

    [1] `Learning Structured Output Representation using Deep Conditional Generative
    Models`, Kihyuk Sohn, Honglak Lee, Xinchen Yan (NeurIPS 2015)
    """

    def __init__(self, c_dim: int, z_dim: int, hidden=(256,)):
        super().__init__(z_dim)
        from .nets import MIN_SCALE, MLP

        self.c_dim = _check_dim("c_dim", c_dim)
        self.min_scale = MIN_SCALE
        self.net = MLP(c_dim, tuple(hidden), 2 * z_dim)
        last = self.net[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias[:z_dim] = 0.0
            last.bias[z_dim:] = _inverse_softplus(1.0 - MIN_SCALE)

    def loc_scale(self, c: torch.Tensor):
        r""":math:`(\mu(c), \sigma(c))`, each of shape ``(*c.shape[:-1], z_dim)``."""
        loc, raw_scale = self.net(c.to(self._anchor.dtype)).chunk(2, dim=-1)
        return loc, softplus(raw_scale) + self.min_scale

    def forward(self, batch_shape=(), c=None) -> dist.TorchDistribution:
        if c is None:
            raise ValueError(
                "ConditionalNormal is a conditional prior p(z|c) and needs c= of shape "
                f"(..., {self.c_dim})"
            )
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"c must be a torch.Tensor, got {type(c).__name__}")
        if c.dim() < 1 or c.shape[-1] != self.c_dim:
            raise ValueError(
                f"c must have shape (..., {self.c_dim}) for this prior (c_dim={self.c_dim}), "
                f"got {tuple(c.shape)}"
            )
        loc, scale = self.loc_scale(c)
        prior = dist.Normal(loc, scale).to_event(1)
        batch_shape = torch.Size(batch_shape)
        if batch_shape and prior.batch_shape != batch_shape:
            try:
                prior = prior.expand(batch_shape)
            except (RuntimeError, ValueError):
                raise ValueError(
                    f"c of shape {tuple(c.shape)} does not fit batch_shape {tuple(batch_shape)}"
                ) from None
        return prior

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, z_dim={self.z_dim}"


__all__.append("ConditionalNormal")
_REGISTRY["conditional-normal"] = lambda z_dim, c_dim, **kwargs: ConditionalNormal(
    c_dim, z_dim, **kwargs
)
