r"""Pareto-smoothed importance sampling, vectorized over data points, in torch on the
weights' own device (no host round trip, no loop over points).

For each point's S log-weights, the :math:`M = \lceil \min(S/5,\ 3\sqrt S) \rceil`
largest weights above the cutoff :math:`u` (the next largest) are fitted by a
generalized Pareto distribution of shape k and scale :math:`\sigma`,

.. math:: F(y) = 1 - (1 + k y / \sigma)^{-1/k}, \qquad y = w - u > 0,

by the empirical Bayes estimate of Zhang & Stephens (2009) with the weak prior of
Vehtari et al.: a grid of :math:`m = 30 + \lfloor\sqrt M\rfloor` values of
:math:`b = -k/\sigma`, each scored by its profile likelihood,

.. math:: \hat k(b) = \frac1M \sum_i \log(1 - b\,y_i), \qquad
          \ell(b) = M\,\big(\log(-b/\hat k(b)) - \hat k(b) - 1\big),

the posterior mean :math:`\bar b` of b under those likelihoods, then
:math:`k = \hat k(\bar b)`, :math:`\sigma = -k/\bar b`, and k shrunk as
:math:`(M k + 5) / (M + 10)`. Where k is finite the tail weights are replaced by
the fitted quantiles :math:`u + F^{-1}((i - 1/2)/M)`, truncated at the largest raw
weight. This is the computation of :func:`arviz.psislw` (which loops over points in
NumPy), step for step, so k-hat and the smoothed weights agree with it to rounding.

**References**

[1] `A New and Efficient Estimation Method for the Generalized Pareto Distribution`,
Jin Zhang, Michael A. Stephens (Technometrics 2009)

[2] `Pareto Smoothed Importance Sampling`, Aki Vehtari, Daniel Simpson, Andrew Gelman,
Yuling Yao, Jonah Gabry (JMLR 2024)
"""

from __future__ import annotations

import math

import torch

_PRIOR_BS = 3.0  # Zhang & Stephens' grid spread
_PRIOR_K = 10.0  # weight of Vehtari et al.'s prior on k, centred at 1/2


def tail_size(num_samples: int) -> int:
    """M, the number of largest weights the tail fit uses (relative efficiency 1)."""
    return int(math.ceil(min(num_samples / 5.0, 3 * math.sqrt(num_samples))))


def gpd_fit(tails: torch.Tensor, lengths: torch.Tensor):
    r"""Zhang & Stephens' estimate of a generalized Pareto distribution, for many
    samples at once.

    :param torch.Tensor tails: shape ``(N, M)``, each row sorted ascending and
        positive; a row of length :math:`L_n < M` holds its values in its last
        :math:`L_n` places (the first :math:`M - L_n` are ignored).
    :param torch.Tensor lengths: :math:`L_n`, shape ``(N,)``, integer, at least 1.
    :returns: ``(k, sigma)``, each of shape ``(N,)``; NaN where the fit fails.
    """
    n, width = tails.shape
    dtype = tails.dtype
    length = lengths.to(dtype)
    position = torch.arange(width, device=tails.device)
    valid = position >= (width - lengths).unsqueeze(-1)  # (N, M)
    safe = torch.where(valid, tails, tails.new_zeros(()))
    # the grid size m = 30 + floor(sqrt(L)) differs between rows of different lengths
    grid_size = 30 + torch.floor(length.sqrt() + 1e-9)  # (N,)
    widest = 30 + int(math.sqrt(width) + 1e-9)
    j = torch.arange(1, widest + 1, device=tails.device, dtype=dtype)
    on_grid = j <= grid_size.unsqueeze(-1)  # (N, G)
    quarter = (width - lengths + torch.floor(length / 4 + 0.5).long() - 1).clamp(min=0)
    first_quartile = tails.gather(1, quarter.unsqueeze(-1))  # (N, 1)
    largest = tails[:, -1:]  # (N, 1)
    ratio = torch.where(on_grid, grid_size.unsqueeze(-1) / (j - 0.5), j.new_ones(()))
    b = (1 - ratio.sqrt()) / (_PRIOR_BS * first_quartile) + 1 / largest  # (N, G)

    def profile(b):  # mean of log(1 - b y) over each row's valid values, b: (N, G)
        terms = torch.log1p(-b.unsqueeze(-1) * safe.unsqueeze(-2))
        return (terms * valid.unsqueeze(-2)).sum(-1) / length.unsqueeze(-1)

    k = profile(b)
    scaled_log_lik = length.unsqueeze(-1) * (torch.log(-(b / k)) - k - 1)  # (N, G)
    # weight_i = 1 / sum_j exp(l_j - l_i), over the row's own grid
    diffs = scaled_log_lik.unsqueeze(-2) - scaled_log_lik.unsqueeze(-1)  # [i, j] = l_j - l_i
    terms = torch.where(on_grid.unsqueeze(-2), diffs.exp(), diffs.new_zeros(()))
    weights = 1 / terms.sum(-1)
    # negligible weights are dropped before renormalizing, as in the reference code
    weights = torch.where(
        on_grid & (weights >= 10 * torch.finfo(torch.float64).eps), weights, weights.new_zeros(())
    )
    weights = weights / weights.sum(-1, keepdim=True)
    b_post = (b * weights).sum(-1, keepdim=True)  # (N, 1)
    k_post = profile(b_post).squeeze(-1)
    sigma = -k_post / b_post.squeeze(-1)
    k_post = (length * k_post + _PRIOR_K * 0.5) / (length + _PRIOR_K)
    return k_post, sigma


def _gpd_quantiles(probs, k, sigma):
    """Quantiles of the generalized Pareto distribution; probs ``(N, M)`` in (0, 1)."""
    k, sigma = k.unsqueeze(-1), sigma.unsqueeze(-1)
    log_survival = torch.log1p(-probs)
    tiny = k.abs() < torch.finfo(torch.float64).eps
    general = torch.expm1(-k * log_survival) / torch.where(tiny, k.new_ones(()), k)
    x = torch.where(tiny, -log_survival, general) * sigma
    return torch.where(sigma > 0, x, x.new_full((), math.nan))


def psis(log_weights: torch.Tensor):
    r"""Pareto-smoothed importance sampling of the columns of ``log_weights``.

    :param torch.Tensor log_weights: shape ``(S, N)``: S draws for each of N points.
    :returns: ``(khat, smoothed)``: k-hat of shape ``(N,)`` (``inf`` where the tail has
        4 values or fewer, NaN where the fit fails) and the smoothed log-weights,
        shape ``(S, N)``, in sorted order within each column (enough for any sum
        over draws). Computed in float64 on the weights' device.
    """
    num_samples = log_weights.shape[0]
    width = tail_size(num_samples)
    x = log_weights.detach().to(torch.float64).T  # (N, S)
    largest = x.amax(-1, keepdim=True)
    x = (x - largest).sort(-1).values
    cutoff = x[:, -width - 1 : -width].clamp(min=math.log(torch.finfo(torch.float64).tiny))
    tail = x[:, -width:]
    in_tail = tail > cutoff
    lengths = in_tail.sum(-1)
    exp_cutoff = cutoff.exp()
    y = torch.where(in_tail, tail.exp() - exp_cutoff, tail.new_ones(()))
    k, sigma = gpd_fit(y, lengths.clamp(min=1))
    k = torch.where(lengths <= 4, k.new_full((), math.inf), k)
    # the fitted quantiles at (r + 1/2) / L for the row's r-th tail value
    rank = torch.arange(width, device=x.device, dtype=x.dtype) - (width - lengths).unsqueeze(-1)
    probs = ((rank + 0.5) / lengths.clamp(min=1).unsqueeze(-1)).clamp(1e-300, 1 - 1e-16)
    quantiles = torch.log(_gpd_quantiles(probs, k, sigma) + exp_cutoff).clamp(max=0.0)
    smooth = in_tail & torch.isfinite(k).unsqueeze(-1)
    tail = torch.where(smooth, quantiles, tail)
    smoothed = torch.cat([x[:, :-width], tail], -1) + largest
    return k, smoothed.T
