r"""Posterior families q(z|x): what the guide draws z from, given the encoder's output.

Every posterior is a :class:`torch.nn.Module` with one contract::

    posterior(params) -> pyro distribution over z with event_dim == 1

``params`` is the encoder's output for a batch: ``(loc, scale)`` of shape
``(*batch, z_dim)`` each, and for the families that need more a third tensor, the
*context* ``h`` of shape ``(*batch, context_dim(z_dim))``. The distribution has
``rsample`` and ``log_prob``; the guide samples it at the site ``"z"``. A model
built with a posterior sizes its encoder from :meth:`Posterior.context_dim` and
calls :meth:`Posterior.setup` once with its ``z_dim`` (the families with weights
of their own build them there), so a posterior is written without ``z_dim``::

    VAE(x_shape=(64,), z_dim=8, posterior=posteriors.IAF(num_transforms=4))

:class:`DiagonalNormal` is every model's default. The flows (:class:`Planar`,
:class:`IAF`, :class:`Spline`) push the diagonal Gaussian
:math:`\mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))` through invertible maps
:math:`f_K \circ \dots \circ f_1` that read the context, and

.. math:: \log q(z_K|x) = \log \mathcal N(z_0; \mu, \sigma^2)
          - \sum_{k=1}^K \log\Big|\det \frac{\partial f_k}{\partial z_{k-1}}\Big|.

:class:`Planar` and :class:`IAF` start as the identity map, so an untrained flow
posterior is the diagonal one.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import (
    ConditionalAffineAutoregressive,
    ConditionalSplineAutoregressive,
)
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn
from torch.nn.functional import softplus

from . import _densities, _validate
from ._config import Configurable

__all__ = [
    "Posterior",
    "DiagonalNormal",
    "FullCovariance",
    "Planar",
    "IAF",
    "Spline",
    "get",
]


class Posterior(nn.Module, Configurable):
    """Base class of posterior families (see the module docstring for the contract)."""

    #: whether ``log_prob`` works at any z, not only at the distribution's own draws
    #: (an estimator that evaluates q elsewhere, AIS started from q, needs it)
    density_everywhere = True

    def __init__(self):
        super().__init__()
        self.z_dim = None

    def context_dim(self, z_dim: int) -> int:
        """How many numbers beyond ``(loc, scale)`` the encoder returns per point."""
        return 0

    def setup(self, z_dim: int) -> Posterior:
        """Builds the family's own weights for a ``z_dim``-dimensional latent; a model
        calls it once. Calling it again with the same ``z_dim`` does nothing."""
        z_dim = _validate.integer("z_dim", z_dim, minimum=1)
        if self.z_dim is not None:
            if self.z_dim != z_dim:
                raise ValueError(
                    f"this {type(self).__name__} posterior was set up for z_dim={self.z_dim} "
                    f"and cannot serve a model with z_dim={z_dim}; give each model its own"
                )
            return self
        self._build(z_dim)
        self.z_dim = z_dim
        return self

    def _build(self, z_dim: int) -> None:
        pass

    def split(self, params):
        """``(loc, scale, context)`` from the encoder's output (``context`` None for a
        family that reads none), checked against the family's needs."""
        if not isinstance(params, (tuple, list)) or len(params) not in (2, 3):
            raise TypeError(
                f"{type(self).__name__} reads the encoder's output (loc, scale) or "
                f"(loc, scale, context), got {type(params).__name__}"
            )
        loc, scale = params[0], params[1]
        context = params[2] if len(params) == 3 else None
        if loc.shape != scale.shape:
            raise ValueError(
                f"the encoder's loc and scale must have one shape, got {tuple(loc.shape)} "
                f"and {tuple(scale.shape)}"
            )
        if self.z_dim is None:
            raise RuntimeError(
                f"this {type(self).__name__} posterior is not set up: a model calls "
                "posterior.setup(z_dim) when built with it"
            )
        if loc.shape[-1] != self.z_dim:
            raise ValueError(
                f"the encoder returns {loc.shape[-1]} latent dimensions but the posterior was "
                f"set up for z_dim={self.z_dim}"
            )
        needed = self.context_dim(self.z_dim)
        got = 0 if context is None else context.shape[-1]
        if got != needed:
            what = "no context" if needed == 0 else f"a context of {needed} numbers per point"
            raise ValueError(
                f"{type(self).__name__} needs the encoder to return {what} after "
                f"(loc, scale), got {got}: build the encoder with "
                f"nets.make_encoder(..., context_dim=posterior.context_dim(z_dim))"
            )
        return loc, scale, context

    def forward(self, params) -> dist.TorchDistribution:
        return self.distribution(*self.split(params))

    def distribution(self, loc, scale, context) -> dist.TorchDistribution:
        """q(z|x) from the split encoder output."""
        raise NotImplementedError(f"{type(self).__name__} must define distribution()")

    def code(self, params) -> torch.Tensor:
        """A point summary of q(z|x): the mean of a Gaussian family, the flow applied to
        the base mean for a flow."""
        return self.split(params)[0]

    def extra_repr(self) -> str:
        return "" if self.z_dim is None else f"z_dim={self.z_dim}"


class DiagonalNormal(Posterior):
    r""":math:`q(z|x) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))`, the mean-field
    Gaussian of Kingma & Welling (2014) and the default of every model."""

    def distribution(self, loc, scale, context):
        return _densities.Normal(loc, scale).to_event(1)


class FullCovariance(Posterior):
    r"""A Gaussian with a full covariance,
    :math:`q(z|x) = \mathcal N(\mu(x), L(x) L(x)^\top)`, whose Cholesky factor
    :math:`L = \mathrm{diag}(\sigma(x)) + \mathrm{tril}(h(x), -1)` takes its diagonal
    from the encoder's scale and its :math:`D(D-1)/2` strictly lower entries from the
    context (Kingma et al. 2016, section 3, calls it the full-covariance baseline of
    IAF).
    """

    def context_dim(self, z_dim: int) -> int:
        return z_dim * (z_dim - 1) // 2

    def _build(self, z_dim):
        rows, cols = torch.tril_indices(z_dim, z_dim, -1)
        self.register_buffer("_lower", rows * z_dim + cols, persistent=False)

    def scale_tril(self, scale, context) -> torch.Tensor:
        """The Cholesky factor L, shape ``(*batch, z_dim, z_dim)``."""
        d = self.z_dim
        batch = scale.shape[:-1]
        flat = scale.new_zeros(*batch, d * d)
        if d > 1:
            flat = flat.index_copy(-1, self._lower, context)
        return flat.reshape(*batch, d, d) + torch.diag_embed(scale)

    def distribution(self, loc, scale, context):
        return dist.MultivariateNormal(loc, scale_tril=self.scale_tril(scale, context))


class _Flow(Posterior):
    """A diagonal Gaussian pushed through conditional transforms of the context."""

    def __init__(self, num_transforms: int, context: int | None):
        super().__init__()
        self.num_transforms = _validate.integer("num_transforms", num_transforms, minimum=1)
        self.context = None if context is None else _validate.integer("context", context, 1)

    def context_dim(self, z_dim: int) -> int:
        return z_dim if self.context is None else self.context

    def transforms(self, context) -> list:
        """The maps from the base draw :math:`z_0` to z, conditioned on ``context``."""
        return [layer.condition(context) for layer in self.layers]

    def distribution(self, loc, scale, context):
        base = dist.Normal(loc, scale).to_event(1)
        return _FlowDistribution(base, self.transforms(context))

    def code(self, params):
        loc, _, context = self.split(params)
        for transform in self.transforms(context):
            loc = transform(loc)
        return loc

    def extra_repr(self):
        return f"num_transforms={self.num_transforms}" + (
            "" if self.z_dim is None else f", z_dim={self.z_dim}"
        )


class _FlowDistribution(dist.TransformedDistribution):
    """A transformed distribution whose ``log_prob`` takes values that broadcast
    against its batch (z of shape ``(S, 1, z_dim)`` against the ``(N,)`` points of an
    aggregate posterior): the maps read a context per point, so the value is expanded
    to the full batch first. A value of the batch's own shape (the distribution's own
    draw) passes unchanged, so its cached inverse is found."""

    def log_prob(self, value):
        event = self.event_shape
        batch = value.shape[: value.dim() - len(event)]
        full = torch.broadcast_shapes(batch, self.batch_shape)
        if batch != full:
            value = value.expand(*full, *event)
        return super().log_prob(value)


class _PlanarMap(ConditionedPlanar):
    r"""Pyro's planar map with the invertibility constraint
    :math:`\hat u = u + (m(w^\top u) - w^\top u)\, w / \|w\|^2` taken with
    :math:`m(a) = -1 + \log(1 + e^{a + c})`, :math:`c = \log(e - 1)`: still
    :math:`m > -1` (so :math:`w^\top \hat u > -1`), and :math:`m(0) = 0`, so
    :math:`u = 0` is the identity map."""

    _SHIFT = math.log(math.e - 1.0)

    def u_hat(self, u, w):
        alpha = (u * w).sum(-1, keepdim=True)
        a_prime = softplus(alpha + self._SHIFT) - 1.0
        return u + (a_prime - alpha) * w / w.pow(2).sum(-1, keepdim=True)

    def _inverse(self, y):
        # y = x + u tanh(w.x + b): with a = w.x, w.y = a + (w.u) tanh(a + b), increasing
        # in a since w.u > -1, and |a - w.y| <= |w.u|. Bisection finds a; one Newton
        # step taken with gradients gives a's gradient by the implicit function theorem.
        bias, u, w = self._params() if callable(self._params) else self._params
        u = self.u_hat(u, w)
        c = (w * u).sum(-1, keepdim=True)
        t = (w * y).sum(-1, keepdim=True)

        def g(a):
            return a + c * torch.tanh(a + bias) - t

        with torch.no_grad():
            low, high = t - c.abs(), t + c.abs()
            for _ in range(60):
                mid = 0.5 * (low + high)
                above = g(mid) > 0
                low, high = torch.where(above, low, mid), torch.where(above, mid, high)
            a = 0.5 * (low + high)
        a = a - g(a) / (1 + c * (1 - torch.tanh(a + bias).pow(2)))
        x = y - u * torch.tanh(a + bias)
        self._call(x)  # the log-determinant at x, which log_abs_det_jacobian reads
        return x


class _ConditionalPlanar(nn.Module):
    """One planar map whose (u, w, b) are a linear function of the context; the
    rows giving u start at zero, so the map starts as the identity."""

    def __init__(self, z_dim: int, context_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Linear(context_dim, 2 * z_dim + 1)
        with torch.no_grad():
            self.net.weight[:z_dim].zero_()
            self.net.bias[:z_dim].zero_()

    def condition(self, context):
        out = self.net(context)
        u, w, b = out[..., : self.z_dim], out[..., self.z_dim : -1], out[..., -1:]
        return _PlanarMap((b, u, w))


class Planar(_Flow):
    r"""A planar flow (Rezende & Mohamed 2015): ``num_transforms`` maps

    .. math:: f(z) = z + \hat u\, \tanh(w^\top z + b), \qquad
              \log\Big|\det\frac{\partial f}{\partial z}\Big|
              = \log\big|1 + (1 - \tanh^2(w^\top z + b))\, w^\top \hat u\big|,

    whose :math:`u, w, b` are amortized: a linear function of the encoder's context
    (``context`` numbers per point, default ``z_dim``). The invertibility constraint
    :math:`w^\top \hat u > -1` is imposed as in the paper's appendix (with
    :math:`m(a) = -1 + \log(1 + e^{a + c})`, :math:`c = \log(e - 1)`, so that
    :math:`u = 0`, where the maps start, is the identity). The inverse, needed for
    ``log_prob`` away from the distribution's own draws, solves the one-dimensional
    equation in :math:`w^\top z` by bisection.

    :param int num_transforms: the number of planar maps K.
    :param int context: size of the encoder's context (default ``z_dim``).

    **References**

    [1] `Variational Inference with Normalizing Flows`, Danilo Jimenez Rezende,
    Shakir Mohamed (ICML 2015)
    """

    def __init__(self, num_transforms: int = 4, context: int | None = None):
        super().__init__(num_transforms, context)

    def _build(self, z_dim):
        h = self.context_dim(z_dim)
        self.layers = nn.ModuleList(
            [_ConditionalPlanar(z_dim, h) for _ in range(self.num_transforms)]
        )


def _autoregressive_nn(z_dim, context_dim, hidden, index, param_dims=None):
    order = torch.arange(z_dim)
    if index % 2:
        order = order.flip(0)  # alternate the order from one step to the next
    kwargs = {} if param_dims is None else {"param_dims": param_dims}
    return ConditionalAutoRegressiveNN(
        z_dim, context_dim, list(hidden), permutation=order, **kwargs
    )


def _hidden(hidden, z_dim):
    hidden = (4 * z_dim + 2,) if hidden is None else _validate.widths("hidden", hidden)
    if not hidden or any(h < z_dim for h in hidden):
        raise ValueError(
            f"hidden widths of an autoregressive network must be at least z_dim={z_dim}, "
            f"got {hidden}"
        )
    return hidden


class IAF(_Flow):
    r"""An inverse autoregressive flow (Kingma et al. 2016): ``num_transforms`` maps

    .. math:: z_i' = \mu_i(z_{<i}, h) + \sigma_i(z_{<i}, h)\, z_i, \qquad
              \log\Big|\det\frac{\partial z'}{\partial z}\Big| = \sum_i \log\sigma_i,

    each a masked autoregressive network (MADE, Germain et al. 2015) of z and the
    encoder's context h (Pyro's
    :class:`~pyro.distributions.transforms.ConditionalAffineAutoregressive`), the
    order of the variables reversed from one map to the next. Sampling takes one
    network pass per map; ``log_prob`` at a draw of the distribution is free (the
    draw's base value is cached) and elsewhere inverts the maps, ``z_dim`` passes
    each. The last layer of every network starts at zero: :math:`\mu = 0`,
    :math:`\sigma = 1`, the identity.

    :param int num_transforms: the number of maps.
    :param tuple hidden: hidden widths of each autoregressive network (default
        ``(4 * z_dim + 2,)``; each at least ``z_dim``).
    :param int context: size of the encoder's context h (default ``z_dim``).

    **References**

    [1] `Improving Variational Inference with Inverse Autoregressive Flow`,
    Diederik P. Kingma, Tim Salimans, Rafal Jozefowicz, Xi Chen, Ilya Sutskever,
    Max Welling (NeurIPS 2016)
    """

    def __init__(self, num_transforms: int = 4, hidden=None, context: int | None = None):
        super().__init__(num_transforms, context)
        self.hidden = None if hidden is None else _validate.widths("hidden", hidden)

    def _build(self, z_dim):
        hidden = _hidden(self.hidden, z_dim)
        h = self.context_dim(z_dim)
        layers = []
        for index in range(self.num_transforms):
            arn = _autoregressive_nn(z_dim, h, hidden, index)
            with torch.no_grad():
                arn.layers[-1].weight.zero_()
                arn.layers[-1].bias.zero_()
            layers.append(ConditionalAffineAutoregressive(arn))
        self.layers = nn.ModuleList(layers)


class Spline(_Flow):
    r"""A neural spline autoregressive flow (Durkan et al. 2019): each map is an
    elementwise monotonic rational-quadratic spline on :math:`[-B, B]` (the identity
    outside) whose knots are an autoregressive function of z and the encoder's
    context (Pyro's
    :class:`~pyro.distributions.transforms.ConditionalSplineAutoregressive`), the
    order reversed from one map to the next.

    :param int num_transforms: the number of maps.
    :param tuple hidden: hidden widths of each autoregressive network (default
        ``(4 * z_dim + 2,)``).
    :param int count_bins: spline segments per dimension.
    :param float bound: the half-width B of the interval the splines act on.
    :param int context: size of the encoder's context (default ``z_dim``).

    **References**

    [1] `Neural Spline Flows`, Conor Durkan, Artur Bekasov, Iain Murray, George
    Papamakarios (NeurIPS 2019)
    """

    def __init__(
        self,
        num_transforms: int = 2,
        hidden=None,
        count_bins: int = 8,
        bound: float = 3.0,
        context: int | None = None,
    ):
        super().__init__(num_transforms, context)
        self.hidden = None if hidden is None else _validate.widths("hidden", hidden)
        self.count_bins = _validate.integer("count_bins", count_bins, minimum=2)
        self.bound = _validate.positive("bound", bound)

    def _build(self, z_dim):
        hidden = _hidden(self.hidden, z_dim)
        h = self.context_dim(z_dim)
        k = self.count_bins
        # widths, heights and derivatives at the inner knots of each spline
        param_dims = [k, k, k - 1]
        self.layers = nn.ModuleList(
            [
                ConditionalSplineAutoregressive(
                    z_dim,
                    _autoregressive_nn(z_dim, h, hidden, index, param_dims),
                    count_bins=k,
                    bound=self.bound,
                    order="quadratic",
                )
                for index in range(self.num_transforms)
            ]
        )


_REGISTRY = {
    "diagonal": DiagonalNormal,
    "diagonal-normal": DiagonalNormal,
    "full": FullCovariance,
    "full-covariance": FullCovariance,
    "planar": Planar,
    "iaf": IAF,
    "spline": Spline,
}


def get(spec) -> Posterior:
    """Builds a posterior from its command-line name: ``diagonal``, ``full``,
    ``planar:K``, ``iaf:K``, ``spline:K`` (K the number of maps; a posterior object
    is returned as it is).

    :param spec: a name, ``name:K``, or a :class:`Posterior`.
    """
    if isinstance(spec, Posterior):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"posterior must be a name or a probae posterior, got {spec!r}")
    name, _, count = spec.partition(":")
    key = name.strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown posterior {spec!r}; expected one of {sorted(_REGISTRY)} "
            "(flows take the number of maps after a colon: iaf:4)"
        )
    cls = _REGISTRY[key]
    if not count:
        return cls()
    if not issubclass(cls, _Flow):
        raise ValueError(f"posterior {name!r} takes no number of maps, got {spec!r}")
    try:
        num = int(count)
    except ValueError:
        raise ValueError(
            f"posterior {spec!r}: the number of maps after the colon must be an integer"
        ) from None
    return cls(num_transforms=num)
