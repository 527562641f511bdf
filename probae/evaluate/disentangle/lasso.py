r"""DCI (Eastwood & Williams 2018): disentanglement, completeness and
informativeness from the weights of a lasso regression of the factors on the codes
(:func:`dci`), and the lasso itself, fitted by coordinate descent in float64."""

from __future__ import annotations

import math

import torch

from ._linear import _split, _standardize
from ._tables import _check_tables


def dci(codes, factors, alpha: float = 0.01, train_fraction: float = 0.8, seed: int = 0) -> dict:
    r"""Disentanglement, completeness and informativeness (Eastwood & Williams 2018)
    from a lasso regression of each standardized factor on the standardized codes.

    The importance of code d for factor k is :math:`R_{dk} = |W_{dk}|`, the lasso
    weight. With :math:`P_{dk} = R_{dk}/\sum_{k'} R_{dk'}` and
    :math:`\tilde P_{dk} = R_{dk}/\sum_{d'} R_{d'k}`,

    .. math:: D = \sum_d \rho_d\,\big(1 - H_K(P_{d\cdot})\big), \quad
              \rho_d = \frac{\sum_k R_{dk}}{\sum_{d'k} R_{d'k}}, \qquad
              C = \frac1K\sum_k \big(1 - H_D(\tilde P_{\cdot k})\big),

    :math:`H_K` the entropy in base K. Informativeness is the regressions' mean
    :math:`R^2 = 1 - \mathrm{NMSE}` on the held-out points (clipped at 0); the paper
    reports the NMSE itself, one minus this. A lasso captures linear (and, through
    its sign pattern, monotone) relations: nonlinear ones lower I, not D or C.

    :param float alpha: the lasso's L1 weight (standardized units).
    :param float train_fraction: share of the points the regressions are fitted on.
    :param int seed: seeds the train/test split.
    :returns: ``{"disentanglement", "completeness", "informativeness"}``.
    """
    codes, factors = _check_tables(codes, factors)
    generator = torch.Generator().manual_seed(seed)
    train, test = _split(codes.shape[0], train_fraction, generator)
    x_train, x_test = _standardize(codes[train], codes[test])
    y_train, y_test = _standardize(factors[train].double(), factors[test].double())
    weight = _lasso(x_train, y_train, alpha)
    residual = (y_test - x_test @ weight).pow(2).mean(0)
    spread = y_test.var(0, unbiased=False).clamp_min(1e-300)
    informativeness = float((1 - residual / spread).clamp_min(0).mean())
    importance = weight.abs()
    total = importance.sum()
    if total <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": informativeness}
    num_codes, num_factors = importance.shape
    per_code = importance.sum(1)
    p = importance / per_code.clamp_min(1e-300)[:, None]
    d_code = 1 - _entropy_rows(p, num_factors)
    disentanglement = float((per_code / total * d_code).sum())
    per_factor = importance.sum(0)
    q = importance / per_factor.clamp_min(1e-300)[None, :]
    c_factor = 1 - _entropy_rows(q.T, num_codes)
    c_factor = torch.where(per_factor > 0, c_factor, torch.zeros_like(c_factor))
    return {
        "disentanglement": disentanglement,
        "completeness": float(c_factor.mean()),
        "informativeness": informativeness,
    }


def _entropy_rows(p: torch.Tensor, base: int) -> torch.Tensor:
    if base < 2:
        return torch.zeros(p.shape[0], dtype=p.dtype)
    terms = torch.where(p > 0, -p * p.clamp_min(1e-300).log(), torch.zeros_like(p))
    return terms.sum(1) / math.log(base)


def _lasso(x: torch.Tensor, y: torch.Tensor, alpha: float, iterations: int = 500):
    r"""Minimizes :math:`\frac1{2N}\|y - Xw\|^2 + \alpha\|w\|_1` for standardized X and
    centered y (every column of y separately) by cyclic coordinate descent on the
    Gram matrix."""
    n = x.shape[0]
    gram = x.T @ x / n
    corr = x.T @ y / n  # (D, K)
    w = torch.zeros_like(corr)
    diag = gram.diagonal().clamp_min(1e-12)
    for _ in range(iterations):
        previous = w.clone()
        for d in range(x.shape[1]):
            rho = corr[d] - gram[d] @ w + gram[d, d] * w[d]
            w[d] = torch.sign(rho) * (rho.abs() - alpha).clamp_min(0) / diag[d]
        if (w - previous).abs().max() < 1e-10:
            break
    return w
