"""Likelihoods p(x|z): maps from a decoder's output to a distribution over x.

Every likelihood is a :class:`torch.nn.Module` (so a learned scale moves with
``.to(device)``) with one small contract:

- ``likelihood(output, event_dim)`` returns a Pyro distribution whose
  ``event_shape`` is the last ``event_dim`` dimensions of ``output``;
- ``likelihood.mean(output)`` is E[x|z], the picture a person wants to see;
- ``likelihood.validate(x)`` raises a :class:`ValueError` naming the likelihood
  and the offending range when ``x`` lies outside the support.

Validation runs once per data set (in :func:`probae.fit` and
:mod:`probae.evaluate`), never inside the training step.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from . import _densities, _validate
from ._config import Configurable

__all__ = [
    "Likelihood",
    "Bernoulli",
    "BernoulliLogits",
    "ContinuousBernoulli",
    "Gaussian",
    "Laplace",
    "get",
]


def _describe(x: torch.Tensor) -> str:
    return f"[{x.min().item():.4g}, {x.max().item():.4g}]"


class _BernoulliLogPmf(torch.autograd.Function):
    r""":math:`\log \mathrm{Bern}(x; \sigma(\ell)) = x\ell - \mathrm{softplus}(\ell)`
    elementwise, with :math:`\mathrm{softplus}(\ell) = \max(\ell, 0) +
    \log(1 + e^{-|\ell|})` and the gradient :math:`x - \sigma(\ell)` (and
    :math:`\ell` for ``x``) written out.

    The same density as :func:`torch.nn.functional.binary_cross_entropy_with_logits`
    at a third of its cost on the CPU: ``exp`` and ``log`` are vectorized there where
    ``log_sigmoid`` and ``log1p`` are not. Using ``log(1 + t)`` for ``log1p(t)`` with
    :math:`t = e^{-|\ell|} \le 1` costs at most :math:`t \cdot` machine epsilon in
    absolute terms, the rounding of the sum the density enters. Twice differentiable:
    the backward pass is made of differentiable operations.
    """

    @staticmethod
    def forward(ctx, logits, value):
        ctx.save_for_backward(logits, value)
        softplus = logits.abs().neg_().exp_().add_(1).log_().add_(logits.clamp_min(0))
        return torch.mul(value, logits).sub_(softplus)

    @staticmethod
    def backward(ctx, grad):
        logits, value = ctx.saved_tensors
        grad_logits = grad * (value - torch.sigmoid(logits)) if ctx.needs_input_grad[0] else None
        grad_value = grad * logits if ctx.needs_input_grad[1] else None
        return grad_logits, grad_value


class BernoulliLogits(dist.Bernoulli):
    """:class:`pyro.distributions.Bernoulli` given by its logits, whose ``log_prob`` is
    computed by one fused function, at a third of the cost of
    :func:`~torch.nn.functional.binary_cross_entropy_with_logits` on the CPU and equal
    to it up to rounding: the likelihood of :class:`Bernoulli`. Sampling, moments and support are Pyro's."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if logits.shape != value.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        if value.dtype != logits.dtype:
            value = value.to(logits.dtype)
        return _BernoulliLogPmf.apply(logits, value)


class Likelihood(nn.Module, Configurable):
    """Base class: a family of distributions over x indexed by the decoder output."""

    #: a human name used in error messages
    name = "likelihood"

    def distribution(self, output: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z) per element for the decoder output; every likelihood defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define distribution(output)")

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        return self.distribution(output).to_event(event_dim)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return self.distribution(output).mean

    def validate(self, x: torch.Tensor) -> None:
        """Checks that ``x`` is finite; subclasses add their support."""
        if not torch.is_floating_point(x):
            raise TypeError(
                f"{self.name} likelihood: x must be a floating-point tensor, got dtype {x.dtype}"
            )
        if not _validate.all_finite(x):
            raise ValueError(f"{self.name} likelihood: x contains NaN or infinite values")


class Bernoulli(Likelihood):
    r"""Bernoulli pixels, :math:`p(x|z) = \prod_d \mathrm{Bern}(x_d; \sigma(f_d(z)))`.

    The decoder output is read as logits. The support is {0, 1}: grey-level
    data must be binarized first (``binarize="dynamic"`` or ``"static"`` in
    :func:`probae.fit`, or :func:`probae.data.binarize`), or modelled with
    :class:`ContinuousBernoulli`.
    """

    name = "Bernoulli"

    def distribution(self, output):
        return BernoulliLogits(logits=output)

    def mean(self, output):
        return torch.sigmoid(output)

    def validate(self, x):
        super().validate(x)
        outside = (x != 0) & (x != 1)
        if outside.any():
            raise ValueError(
                f"Bernoulli likelihood needs x in {{0, 1}}, but x has values in {_describe(x)} "
                f"such as {x[outside][0].item():.4g}; binarize the data (fit(..., binarize='dynamic') or "
                "data.binarize) or use likelihoods.ContinuousBernoulli()"
            )


class ContinuousBernoulli(Likelihood):
    r"""The continuous Bernoulli for data in [0, 1] (Loaiza-Ganem & Cunningham, 2019).

    It is the Bernoulli density renormalized over the unit interval, so grey
    levels have a proper likelihood.

    **References**

    [1] `The continuous Bernoulli: fixing a pervasive error in variational
    autoencoders`, Gabriel Loaiza-Ganem, John P. Cunningham (NeurIPS 2019)
    """

    name = "ContinuousBernoulli"

    def distribution(self, output):
        # torch's continuous Bernoulli is numerically delicate at logits == 0;
        # its own Taylor expansion handles the neighbourhood of 0.5.
        return dist.ContinuousBernoulli(logits=output)

    def validate(self, x):
        super().validate(x)
        outside = (x < 0) | (x > 1)
        if outside.any():
            raise ValueError(
                f"ContinuousBernoulli likelihood needs x in [0, 1], but x has values in "
                f"{_describe(x)} such as {x[outside][0].item():.4g}"
            )


class _LocationScale(Likelihood):
    def __init__(self, scale: float = 1.0, learn_scale: bool = False):
        super().__init__()
        try:
            scale = _validate.positive("scale", scale)
        except (TypeError, ValueError):
            raise ValueError(
                f"{self.name} likelihood: scale must be a positive number, got {scale!r}"
            ) from None
        learn_scale = _validate.boolean("learn_scale", learn_scale)
        log_scale = torch.tensor(float(scale)).log()
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.learn_scale = learn_scale

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def mean(self, output):
        return output


class Gaussian(_LocationScale):
    r"""Gaussian pixels, :math:`p(x|z) = \mathcal N(x; f(z), s^2 I)`.

    With a fixed scale ``s`` the negative log-likelihood is the squared error
    divided by :math:`2 s^2` plus :math:`\tfrac D2 \log(2\pi s^2)`: the mean-squared-error
    autoencoder is this likelihood with a Delta guide.

    :param float scale: the standard deviation s (its initial value if learned).
    :param bool learn_scale: learn one shared scale with the networks.
    """

    name = "Gaussian"

    def distribution(self, output):
        return _densities.Normal(output, self.scale.to(output.dtype).expand_as(output))


class Laplace(_LocationScale):
    r"""Laplace pixels, :math:`p(x|z) = \prod_d \mathrm{Laplace}(x_d; f_d(z), b)`: an L1
    reconstruction error.

    :param float scale: the scale b (its initial value if learned).
    :param bool learn_scale: learn one shared scale with the networks.
    """

    name = "Laplace"

    def distribution(self, output):
        return dist.Laplace(output, self.scale.to(output.dtype).expand_as(output))


_REGISTRY = {
    "bernoulli": Bernoulli,
    "continuous-bernoulli": ContinuousBernoulli,
    "gaussian": Gaussian,
    "laplace": Laplace,
}


def get(name: str, **kwargs) -> Likelihood:
    """Builds a likelihood from its command-line name (``bernoulli``, ``continuous-bernoulli``,
    ``gaussian``, ``laplace``)."""
    if not isinstance(name, str):
        raise TypeError(f"likelihood name must be a string, got {name!r}")
    try:
        cls = _REGISTRY[name.lower().replace("_", "-")]
    except KeyError:
        raise ValueError(
            f"unknown likelihood {name!r}; expected one of {sorted(_REGISTRY)}"
        ) from None
    return cls(**kwargs)
