"""Bits per dimension: a log-likelihood estimate in the units image models report."""

from __future__ import annotations

import math

from ._util import _data_tensor
from .discrete import code_log_likelihood
from .estimators import log_likelihood
from .results import LogLikelihood

__all__ = ["bits_per_dim"]


def bits_per_dim(
    model, data, num_samples: int = 5000, levels: int | None = None, estimate=None, **kwargs
) -> float:
    r"""The negative log-likelihood in bits per data dimension,

    .. math:: \mathrm{bpd} = \frac{-\log \hat p(x) + D \log L}{D \log 2},

    averaged over points, with :math:`\log \hat p(x)` the IWAE estimate of
    :func:`log_likelihood` and D the number of dimensions (pixels) of x. For a model
    with discrete codes (a VQ-VAE) :math:`\log \hat p(x)` is the bound through its
    code prior, :func:`probae.evaluate.discrete.code_log_likelihood`. For a
    likelihood of discrete values (Bernoulli pixels) :math:`\hat p` is a
    probability and ``levels=None`` (no :math:`D \log L` term). For a density over
    values in [0, 1] that were quantized to L levels (L = 256 for 8-bit images),
    pass ``levels=L``: the density times the bin width :math:`1/L` per dimension is
    the probability of the pixel values, the usual convention for image models.

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_samples: importance samples per point.
    :param int levels: quantization levels L of a continuous density, or None.
    :param LogLikelihood estimate: a result of :func:`log_likelihood` on the same
        data, to reuse instead of sampling again.
    :param kwargs: passed to :func:`log_likelihood` (``batch_size``, ``c``, ...).
    """
    x = _data_tensor(data)
    if levels is not None and (
        isinstance(levels, bool) or not isinstance(levels, int) or levels < 2
    ):
        raise ValueError(f"levels must be an integer >= 2 or None, got {levels!r}")
    if estimate is None and getattr(model, "discrete_codes", False):
        # A point-mass guide on discrete codes: the bound through the code prior.
        estimate = code_log_likelihood(model, data, batch_size=kwargs.get("batch_size", 1000))
    elif estimate is None:
        estimate = log_likelihood(model, data, num_samples=num_samples, **kwargs)
    elif not isinstance(estimate, LogLikelihood):
        raise TypeError(f"estimate must be a LogLikelihood, got {type(estimate).__name__}")
    elif estimate.values.numel() != x.shape[0]:
        raise ValueError(f"estimate has {estimate.values.numel()} points but data has {x.shape[0]}")
    dims = x[0].numel()
    nats = -estimate.mean + (dims * math.log(levels) if levels is not None else 0.0)
    return nats / (dims * math.log(2.0))
