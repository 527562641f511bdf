r"""The two tables every disentanglement metric reads: the codes
:math:`c \in \mathbb R^{N\times D}` and the factors :math:`v \in \mathbb R^{N\times K}`
(their checks), the equal-mass bins a code or a real-valued factor is discretized
into, and the classes of each factor."""

from __future__ import annotations

import torch

from ..._common import positive_int


def _check_tables(codes, factors):
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
        raise TypeError("codes must be a 2-D tensor (N, D)")
    if not isinstance(factors, torch.Tensor) or factors.dim() != 2:
        raise TypeError("factors must be a 2-D tensor (N, K)")
    if codes.shape[0] != factors.shape[0]:
        raise ValueError(
            f"codes and factors must have one row per point: {codes.shape[0]} and "
            f"{factors.shape[0]}"
        )
    if codes.shape[0] < 2:
        raise ValueError("the metrics need at least 2 points")
    if not torch.isfinite(codes).all():
        raise ValueError("codes contain NaN or infinite values")
    return codes.detach().double().cpu(), factors.detach().cpu()


def discretize(values: torch.Tensor, num_bins: int = 20) -> torch.Tensor:
    """Equal-mass bins of every column of ``values`` ``(N, D)`` (see
    :mod:`probae.evaluate.disentangle`): a ``torch.long`` tensor of bin numbers in ``[0, num_bins)``."""
    num_bins = positive_int("num_bins", num_bins)
    values = values.double()
    levels = torch.arange(1, num_bins, dtype=torch.float64) / num_bins
    out = torch.empty(values.shape, dtype=torch.long)
    for d in range(values.shape[1]):
        column = values[:, d].contiguous()
        edges = torch.quantile(column, levels, interpolation="lower")
        out[:, d] = torch.searchsorted(edges, column, right=True)
    return out


def _classes(factors: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Factor columns as classes 0..n_k-1: integer factors as they are (relabelled),
    real-valued ones in equal-mass bins."""
    if factors.is_floating_point():
        factors = discretize(factors, num_bins)
    out = torch.empty(factors.shape, dtype=torch.long)
    for k in range(factors.shape[1]):
        out[:, k] = torch.unique(factors[:, k], return_inverse=True)[1]
    return out
