r"""Corruption processes :math:`C(\tilde x|x)` for denoising autoencoders.

A corruption is a small module: ``corruption(x)`` returns a corrupted copy
:math:`\tilde x` of ``x`` (a fresh draw on every call, on ``x``'s device, from
PyTorch's random state). ``x`` has shape ``(N, ...)``: each row is one data point,
and the fixed-fraction corruptions act on the ``D`` values of each row. They are
usable on their own and by :class:`probae.DenoisingAE`, whose guide encodes
:math:`\tilde x` while its model scores the clean :math:`x`.

- :class:`GaussianNoise`: :math:`\tilde x = x + \sigma\varepsilon`,
  :math:`\varepsilon \sim \mathcal N(0, I)`.
- :class:`MaskingNoise`: a fraction ``p`` of the values of each point set to 0
  (exactly :math:`\mathrm{round}(pD)` of them, as in Vincent et al. 2008, or each
  independently with probability ``p``).
- :class:`SaltAndPepper`: a fraction ``p`` of the values set to their minimum or
  maximum (0 or 1 for images), each with probability 1/2.

**References**

[1] `Extracting and Composing Robust Features with Denoising Autoencoders`, Pascal
Vincent, Hugo Larochelle, Yoshua Bengio, Pierre-Antoine Manzagol (ICML 2008)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _validate
from ._config import Configurable

__all__ = ["Corruption", "GaussianNoise", "MaskingNoise", "SaltAndPepper"]


def _check_probability(name: str, value) -> float:
    try:
        return _validate.number(name, value, low=0.0, high=1.0)
    except ValueError:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}") from None


def _check_input(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension, got a scalar")
    return x


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``(N, D)``: one row per data point (a 1-D ``x`` is one point)."""
    return x.reshape(1, -1) if x.dim() == 1 else x.reshape(x.shape[0], -1)


def _chosen(x: torch.Tensor, p: float, fixed: bool) -> torch.Tensor:
    """A boolean mask of the values to corrupt, shaped like ``x``."""
    if not fixed:
        return torch.rand_like(x) < p
    rows = _rows(x)
    count = round(p * rows.shape[1])
    mask = torch.zeros_like(rows, dtype=torch.bool)
    if count:
        # The ``count`` smallest of D uniform draws are a uniformly random subset of size count.
        index = torch.rand_like(rows).topk(count, dim=1, largest=False).indices
        mask.scatter_(1, index, True)
    return mask.reshape(x.shape)


class Corruption(nn.Module, Configurable):
    r"""Base class of corruption processes :math:`C(\tilde x|x)`: ``forward(x)``
    returns one draw :math:`\tilde x`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.corrupt(_check_input(x))

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """Draws x~ ~ C(x~|x); every corruption process defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define corrupt(x)")


class GaussianNoise(Corruption):
    r"""Additive isotropic Gaussian noise, :math:`\tilde x = x + \sigma\varepsilon` with
    :math:`\varepsilon \sim \mathcal N(0, I)`: each value's variance is :math:`\sigma^2`.

    With small :math:`\sigma`, the denoising autoencoder trained on it estimates the
    score of the data density: :math:`(r(x) - x)/\sigma^2 \to \nabla_x \log p(x)`
    (Alain & Bengio 2014).

    :param float sigma: the noise standard deviation.
    """

    def __init__(self, sigma: float = 0.1):
        super().__init__()
        self.sigma = _validate.positive("sigma", sigma)

    def corrupt(self, x):
        return x + self.sigma * torch.randn_like(x)

    def extra_repr(self):
        return f"sigma={self.sigma}"


class MaskingNoise(Corruption):
    r"""Masking noise: values of each point forced to 0.

    With ``fixed=True`` (the original denoising autoencoder) exactly
    :math:`\mathrm{round}(pD)` of the :math:`D` values of each point are chosen
    uniformly at random and set to 0; with ``fixed=False`` each value is set to 0
    independently with probability :math:`p`. Either way a fraction :math:`p` of
    the values is zeroed in expectation.

    :param float p: the fraction of values destroyed, in [0, 1].
    :param bool fixed: a fixed number per point (True) or independent draws (False).
    """

    def __init__(self, p: float = 0.25, fixed: bool = True):
        super().__init__()
        self.p = _check_probability("p", p)
        self.fixed = _validate.boolean("fixed", fixed)

    def corrupt(self, x):
        return x.masked_fill(_chosen(x, self.p, self.fixed), 0.0)

    def extra_repr(self):
        return f"p={self.p}, fixed={self.fixed}"


class SaltAndPepper(Corruption):
    r"""Salt-and-pepper noise: a fraction :math:`p` of the values of each point set to
    ``low`` or ``high`` (each with probability 1/2), the others left unchanged.

    :param float p: the fraction of values corrupted, in [0, 1].
    :param float low: the "pepper" value (the data's minimum; 0 for images).
    :param float high: the "salt" value (the data's maximum; 1 for images).
    :param bool fixed: exactly :math:`\mathrm{round}(pD)` values per point (True) or each
        independently with probability :math:`p` (False).
    """

    def __init__(self, p: float = 0.25, low: float = 0.0, high: float = 1.0, fixed: bool = True):
        super().__init__()
        self.p = _check_probability("p", p)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"low and high must be finite with low < high, got {low!r}, {high!r}")
        self.low, self.high = float(low), float(high)
        self.fixed = _validate.boolean("fixed", fixed)

    def corrupt(self, x):
        chosen = _chosen(x, self.p, self.fixed)
        salt = torch.rand_like(x) < 0.5
        noise = torch.where(salt, x.new_tensor(self.high), x.new_tensor(self.low))
        return torch.where(chosen, noise, x)

    def extra_repr(self):
        return f"p={self.p}, low={self.low}, high={self.high}, fixed={self.fixed}"
