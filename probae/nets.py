"""Encoder and decoder networks sized from ``x_shape`` and ``z_dim``.

Encoders map x (and optionally a condition c) to the parameters of q(z|x);
decoders map z (and optionally c) to the raw output a likelihood reads
(logits for Bernoulli pixels, means for Gaussian ones).

All networks accept any number of leading batch dimensions, so that Pyro's
vectorized particles (an extra plate to the left of the data plate) and
importance samples pass through them unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.functional import softplus

from . import _validate
from ._config import Configurable

__all__ = [
    "MLP",
    "MLPEncoder",
    "MLPDecoder",
    "ConvEncoder",
    "ConvDecoder",
    "make_encoder",
    "make_decoder",
]

#: smallest posterior standard deviation an encoder returns, for numerical safety
MIN_SCALE = 1e-4


def _check_sizes(x_shape, z_dim, c_dim, hidden) -> tuple:
    if isinstance(x_shape, (str, bytes)) or not hasattr(x_shape, "__iter__"):
        raise TypeError(f"x_shape must be a tuple of positive integers, got {x_shape!r}")
    x_shape = _validate.widths("x_shape", x_shape)
    if not x_shape:
        raise ValueError("x_shape must be a non-empty tuple of positive integers, got ()")
    return (
        x_shape,
        _validate.integer("z_dim", z_dim, minimum=1),
        _validate.integer("c_dim", c_dim, minimum=0),
        _validate.widths("hidden", hidden),
    )


def _flat_size(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


class MLP(nn.Sequential, Configurable):
    """A multilayer perceptron ``in_dim -> hidden... -> out_dim`` with the given activation
    between layers (none after the last)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation=nn.ReLU):
        in_dim = _validate.integer("in_dim", in_dim, minimum=1)
        hidden = _validate.widths("hidden", hidden)
        out_dim = _validate.integer("out_dim", out_dim, minimum=1)
        layers = []
        sizes = [in_dim, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), activation()]
        layers.append(nn.Linear(sizes[-1], out_dim))
        super().__init__(*layers)


def _with_condition(h: torch.Tensor, c: torch.Tensor | None, c_dim: int) -> torch.Tensor:
    if c_dim == 0:
        if c is not None:
            raise ValueError("this network was built without a condition (c_dim=0) but got c=")
        return h
    if c is None:
        raise ValueError(f"this network was built with c_dim={c_dim} and needs c=")
    c = c.reshape(*c.shape[: c.dim() - 1], -1) if c.dim() > 1 else c.unsqueeze(-1)
    c = c.expand(*h.shape[:-1], c.shape[-1])
    return torch.cat([h, c.to(h.dtype)], dim=-1)


class MLPEncoder(nn.Module, Configurable):
    r"""Gaussian recognition network :math:`q(z|x[, c]) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))`.

    :param tuple x_shape: shape of one data point (flattened inside).
    :param int z_dim: latent dimension.
    :param tuple hidden: hidden layer widths.
    :param int c_dim: size of a flattened condition concatenated to x (0 for none).
    :param int context_dim: size of a context h returned after ``(loc, scale)``, read
        by the flow and full-covariance posteriors (:mod:`probae.posteriors`); a linear
        head on the last hidden layer. 0 for none.
    :returns: ``(loc, scale)`` from :meth:`forward`, or ``(loc, scale, h)``.
    """

    def __init__(
        self, x_shape, z_dim: int, hidden=(256, 256), c_dim: int = 0, context_dim: int = 0
    ):
        super().__init__()
        self.x_shape, self.z_dim, self.c_dim, hidden = _check_sizes(x_shape, z_dim, c_dim, hidden)
        self.net = MLP(_flat_size(self.x_shape) + c_dim, hidden, 2 * z_dim)
        self.context_dim = _validate.integer("context_dim", context_dim, minimum=0)
        if self.context_dim:
            self.context = nn.Linear(self.net[-1].in_features, self.context_dim)

    def features(self, x, c=None):
        h = x.reshape(*x.shape[: x.dim() - len(self.x_shape)], -1)
        return self.net(_with_condition(h, c, self.c_dim))

    def forward(self, x, c=None):
        if not self.context_dim:
            loc, raw_scale = self.features(x, c).chunk(2, dim=-1)
            return loc, softplus(raw_scale) + MIN_SCALE
        h = x.reshape(*x.shape[: x.dim() - len(self.x_shape)], -1)
        return _with_context(self.net, self.context, _with_condition(h, c, self.c_dim))


class MLPDecoder(nn.Module, Configurable):
    """Generation network from z (and optionally c) to an output of shape ``x_shape``.

    :param int z_dim: latent dimension.
    :param tuple x_shape: shape of one data point.
    :param tuple hidden: hidden layer widths.
    :param int c_dim: size of a flattened condition concatenated to z (0 for none).
    """

    def __init__(self, z_dim: int, x_shape, hidden=(256, 256), c_dim: int = 0):
        super().__init__()
        self.x_shape, self.z_dim, self.c_dim, hidden = _check_sizes(x_shape, z_dim, c_dim, hidden)
        self.net = MLP(z_dim + c_dim, hidden, _flat_size(self.x_shape))

    def forward(self, z, c=None):
        out = self.net(_with_condition(z, c, self.c_dim))
        return out.reshape(*out.shape[:-1], *self.x_shape)


class ConvEncoder(nn.Module, Configurable):
    """A small convolutional recognition network for images ``(C, H, W)`` with H and W
    divisible by 4 (1x28x28, 3x32x32): two stride-2 convolutions and a linear head.

    :param int context_dim: size of a context h returned after ``(loc, scale)`` (see
        :class:`MLPEncoder`); 0 for none.
    :returns: ``(loc, scale)`` from :meth:`forward`, or ``(loc, scale, h)``.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        channels=(32, 64),
        hidden: int = 256,
        c_dim: int = 0,
        context_dim: int = 0,
    ):
        super().__init__()
        C, H, W = _check_image_shape(x_shape)
        self.x_shape = (C, H, W)
        self.z_dim = z_dim
        self.c_dim = c_dim
        c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(C, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = MLP(c2 * (H // 4) * (W // 4) + c_dim, (hidden,), 2 * z_dim)
        self.context_dim = _validate.integer("context_dim", context_dim, minimum=0)
        if self.context_dim:
            self.context = nn.Linear(hidden, self.context_dim)

    def _input(self, x, c):
        batch = x.shape[:-3]
        h = self.conv(x.reshape(-1, *self.x_shape))
        return _with_condition(h.reshape(*batch, -1), c, self.c_dim)

    def features(self, x, c=None):
        return self.head(self._input(x, c))

    def forward(self, x, c=None):
        if not self.context_dim:
            loc, raw_scale = self.features(x, c).chunk(2, dim=-1)
            return loc, softplus(raw_scale) + MIN_SCALE
        return _with_context(self.head, self.context, self._input(x, c))


class ConvDecoder(nn.Module, Configurable):
    """The mirror of :class:`ConvEncoder`: a linear layer and two stride-2 transposed
    convolutions to an output of shape ``(C, H, W)``."""

    def __init__(self, z_dim: int, x_shape, channels=(64, 32), hidden: int = 256, c_dim: int = 0):
        super().__init__()
        C, H, W = _check_image_shape(x_shape)
        self.x_shape = (C, H, W)
        self.z_dim = z_dim
        self.c_dim = c_dim
        c1, c2 = channels
        self._grid = (c1, H // 4, W // 4)
        self.head = nn.Sequential(
            MLP(z_dim + c_dim, (hidden,), c1 * (H // 4) * (W // 4)), nn.ReLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c1, c2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c2, C, 4, stride=2, padding=1),
        )

    def forward(self, z, c=None):
        batch = z.shape[:-1]
        h = self.head(_with_condition(z, c, self.c_dim)).reshape(-1, *self._grid)
        return self.deconv(h).reshape(*batch, *self.x_shape)


def _with_context(net: nn.Sequential, context: nn.Module, h: torch.Tensor):
    """``(loc, scale, context)``: the last hidden layer of ``net`` feeds both its last
    layer (loc and scale) and the context head."""
    layers = list(net)
    for layer in layers[:-1]:
        h = layer(h)
    loc, raw_scale = layers[-1](h).chunk(2, dim=-1)
    return loc, softplus(raw_scale) + MIN_SCALE, context(h)


def _check_image_shape(x_shape):
    shape = tuple(x_shape)
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(
            f"convolutional networks need x_shape (C, H, W) with H and W divisible by 4, "
            f"got {shape}"
        )
    return shape


def make_encoder(
    x_shape, z_dim: int, hidden=(256, 256), c_dim: int = 0, context_dim: int = 0
) -> nn.Module:
    """A convolutional encoder for image shapes ``(C, H, W)``, an MLP otherwise; with
    ``context_dim`` > 0 it also returns a context of that size (see :class:`MLPEncoder`)."""
    extra = {"context_dim": context_dim} if context_dim else {}
    if len(tuple(x_shape)) == 3:
        return ConvEncoder(x_shape, z_dim, c_dim=c_dim, **extra)
    return MLPEncoder(x_shape, z_dim, hidden, c_dim=c_dim, **extra)


def make_decoder(z_dim: int, x_shape, hidden=(256, 256), c_dim: int = 0) -> nn.Module:
    """A convolutional decoder for image shapes ``(C, H, W)``, an MLP otherwise."""
    if len(tuple(x_shape)) == 3:
        return ConvDecoder(z_dim, x_shape, c_dim=c_dim)
    return MLPDecoder(z_dim, x_shape, tuple(reversed(tuple(hidden))), c_dim=c_dim)
