"""The result types the estimators share: here, so that every estimator imports them
without importing another estimator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["LogLikelihood"]


@dataclass
class LogLikelihood:
    r"""An importance-weighted log-likelihood estimate, with its PSIS diagnostic.

    :ivar torch.Tensor values: the IWAE estimate for each data point, in nats.
    :ivar int num_samples: importance samples per point.
    :ivar khat: the Pareto k-hat of each point's importance weights (None when
        PSIS was not run). Below :attr:`khat_threshold` the estimate is reliable;
        above it the weights are so heavy-tailed that a few samples dominate.
    :ivar psis_values: for each point, the log of the mean of its PSIS-smoothed
        weights (None when PSIS was not run). Smoothing the largest weights trades
        variance for bias: it is a diagnostic companion of :attr:`khat`, not a better
        estimate, and with heavy-tailed weights it can lie further from
        :math:`\log p(x)` than :attr:`values`, which remain the estimate to report.
    :ivar float khat_threshold: :math:`\min(1 - 1/\log_{10} S,\ 0.7)` for S samples.
    :ivar log_weights: the ``(num_samples, N)`` log-weights, when asked to keep them.
    """

    values: torch.Tensor
    num_samples: int
    khat: torch.Tensor | None = None
    psis_values: torch.Tensor | None = None
    khat_threshold: float | None = None
    log_weights: torch.Tensor | None = None

    @property
    def fraction_unreliable(self) -> float:
        """The fraction of points whose k-hat exceeds :attr:`khat_threshold`."""
        if self.khat is None:
            raise ValueError("this estimate has no PSIS diagnostic (log_likelihood(psis=True))")
        return (self.khat > self.khat_threshold).double().mean().item()

    @property
    def psis_mean(self) -> float:
        """The average of :attr:`psis_values` over data points (a diagnostic, see there)."""
        if self.psis_values is None:
            raise ValueError("this estimate has no PSIS diagnostic (log_likelihood(psis=True))")
        return self.psis_values.mean().item()

    @property
    def per_point(self) -> torch.Tensor:
        """The estimate of each data point (:attr:`values`)."""
        return self.values

    @property
    def mean(self) -> float:
        """The average over data points (nats per point)."""
        return self.values.mean().item()

    @property
    def stderr(self) -> float:
        """Standard error of :attr:`mean` over data points."""
        n = self.values.numel()
        return (self.values.std() / math.sqrt(n)).item() if n > 1 else float("nan")

    def __repr__(self) -> str:
        psis = ""
        if self.khat is not None:
            psis = (
                f", psis_mean={self.psis_mean:.4f}, "
                f"khat>{self.khat_threshold:.2f}: {self.fraction_unreliable:.1%}"
            )
        return (
            f"LogLikelihood(mean={self.mean:.4f}, stderr={self.stderr:.4f}, "
            f"points={self.values.numel()}, num_samples={self.num_samples}{psis})"
        )
