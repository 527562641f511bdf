"""Gaussian log-densities with their gradients written out.

:class:`torch.distributions.Normal` computes :math:`\\log \\mathcal N(x; \\mu, \\sigma)`
in nine elementwise operations, each a node of the autograd graph; on the small
networks probae's users often train, those nodes cost as much as a matrix product.
The classes here are the same distributions (sampling, moments, support, the KL
registry and Pyro's handling are inherited) whose ``log_prob`` is one node, with the
gradient of the closed form. Values agree with torch's to rounding; gradients are
checked against autograd's to second order in the tests.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class _NormalLogDensity(torch.autograd.Function):
    r""":math:`\log \mathcal N(x; \mu, \sigma) = -\tfrac12 t^2 - \log\sigma -
    \tfrac12\log 2\pi` with :math:`t = (x - \mu)/\sigma`, and its gradients
    :math:`\partial_x = -t/\sigma`, :math:`\partial_\mu = t/\sigma`,
    :math:`\partial_\sigma = (t^2 - 1)/\sigma`. The backward pass recomputes
    :math:`t` from the inputs, so it is itself differentiable."""

    @staticmethod
    def forward(ctx, value, loc, scale):
        ctx.save_for_backward(value, loc, scale)
        t = (value - loc).div_(scale)
        return t.mul_(t).mul_(-0.5).sub_(scale.log()).sub_(_HALF_LOG_2PI)

    @staticmethod
    def backward(ctx, grad):
        value, loc, scale = ctx.saved_tensors
        t_over_scale = (value - loc) / scale.pow(2)
        g_value = -grad * t_over_scale if ctx.needs_input_grad[0] else None
        g_loc = grad * t_over_scale if ctx.needs_input_grad[1] else None
        g_scale = None
        if ctx.needs_input_grad[2]:
            g_scale = grad * ((value - loc) * t_over_scale - 1) / scale
        return g_value, g_loc, g_scale


class Normal(dist.Normal):
    """:class:`pyro.distributions.Normal` whose ``log_prob`` is one autograd node."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        loc, scale = self.loc, self.scale
        if not (value.shape == loc.shape == scale.shape):
            value, loc, scale = torch.broadcast_tensors(value, loc, scale)
        if value.dtype != loc.dtype:
            value = value.to(loc.dtype)
        return _NormalLogDensity.apply(value, loc, scale)


class StandardNormal(dist.Normal):
    r""":math:`\mathcal N(0, 1)` elementwise, given its (zero) ``loc`` and (unit)
    ``scale`` tensors for their shape, device and dtype: ``log_prob`` is
    :math:`-\tfrac12 x^2 - \tfrac12\log 2\pi`, three operations."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_density = value.pow(2).mul(-0.5).sub(_HALF_LOG_2PI)
        if log_density.shape != self.batch_shape:
            log_density = log_density.expand(torch.broadcast_shapes(value.shape, self.batch_shape))
        return log_density


class _KLToStandardNormal(torch.autograd.Function):
    r""":math:`\mathrm{KL}(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, 1)) =
    \tfrac12(\sigma^2 + \mu^2 - 1) - \log\sigma` elementwise (Kingma & Welling, 2014,
    appendix B), with the gradients :math:`\partial_\mu = \mu` and
    :math:`\partial_\sigma = \sigma - 1/\sigma`; the backward pass is differentiable."""

    @staticmethod
    def forward(ctx, loc, scale):
        ctx.save_for_backward(loc, scale)
        return (scale * scale).add_(loc * loc).sub_(1).mul_(0.5).sub_(scale.log())

    @staticmethod
    def backward(ctx, grad):
        loc, scale = ctx.saved_tensors
        g_loc = grad * loc if ctx.needs_input_grad[0] else None
        g_scale = grad * (scale - 1 / scale) if ctx.needs_input_grad[1] else None
        return g_loc, g_scale


@torch.distributions.kl.register_kl(Normal, StandardNormal)
def _kl_normal_standard_normal(q, p):
    loc, scale = q.loc, q.scale
    if loc.shape != scale.shape:
        loc, scale = torch.broadcast_tensors(loc, scale)
    kl = _KLToStandardNormal.apply(loc, scale)
    shape = torch.broadcast_shapes(q.batch_shape, p.batch_shape)
    return kl if kl.shape == shape else kl.expand(shape)
