r"""The classifier-based metrics: the BetaVAE score (:func:`beta_vae_score`, Higgins
et al. 2017) and the FactorVAE score (:func:`factor_vae_score`, Kim & Mnih 2018), the
accuracies of a classifier that names the factor held fixed over a batch of points,
and the separated attribute predictability (:func:`sap`, Kumar et al. 2018), the gap
between the best two single-code predictors of each factor."""

from __future__ import annotations

import torch

from ._linear import _logistic_regression, _standardize
from ._tables import _check_tables, _classes
from ._votes import _CHUNK, _SPREAD_POINTS, _fixed_factor_draws, _grid_codes, _Groups, _is_grid
from .information import _gap


def beta_vae_score(
    codes,
    factors,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_bins: int = 20,
    seed: int = 0,
) -> float:
    r"""The BetaVAE score (Higgins et al. 2017): the held-out accuracy of a linear
    (multinomial logistic) classifier that predicts which factor k was held fixed
    from

    .. math:: \bar d = \frac1L \sum_{l=1}^L |c(x_{1,l}) - c(x_{2,l})|,

    the mean absolute code difference of L = ``batch_size`` pairs of points that
    share factor k's class (pairs drawn from the data: a point, then a partner with
    the same class of k), standardized over the training examples. 1 when a code is
    constant exactly when its factor is;
    chance, 1/K, for codes independent of the factors.

    With a factor grid as ``factors`` (:class:`probae.dsprites.Grid`) and a function
    from its items to their codes as ``codes``, the pairs are drawn from the grid
    (every factor but k drawn anew, k fixed by index) and only the drawn points are
    encoded: the sampling of the paper, 2 x ``batch_size`` x (``num_train`` +
    ``num_eval``) points.

    :param codes: ``(N, D)``, or a function from grid items (a 1-D long tensor) to codes.
    :param factors: ``(N, K)`` classes or values, or a factor grid.
    :param int num_train: training examples of the classifier.
    :param int num_eval: held-out examples.
    """
    if _is_grid(factors):
        points = factors
    else:
        codes, factors = _check_tables(codes, factors)
        points = _Groups(_classes(factors, num_bins))
    num_factors = len(points.factor_sizes)
    generator = torch.Generator().manual_seed(seed)
    num = num_train + num_eval
    ks = torch.randint(num_factors, (num,), generator=generator)
    # each pair: a point drawn at random and a partner sharing its class of factor k
    first = points.draw((num, batch_size), generator)
    second = torch.empty_like(first)
    for k in range(num_factors):
        rows = (ks == k).nonzero().squeeze(1)
        flat = first[rows].reshape(-1)
        second[rows] = points.draw_sharing(k, flat, (), generator).reshape(-1, batch_size)
    if _is_grid(factors):
        codes, pair = _grid_codes(codes, torch.stack([first, second]))
        first, second = pair[0], pair[1]
    features = torch.cat(
        [
            (codes[a] - codes[b]).abs().mean(1)  # (chunk, D)
            for a, b in zip(first.split(_CHUNK), second.split(_CHUNK), strict=True)
        ]
    )
    x_train, x_eval = _standardize(features[:num_train], features[num_train:])
    weight, bias = _logistic_regression(x_train, ks[:num_train], num_factors)
    predicted = (x_eval @ weight + bias).argmax(1)
    return float((predicted == ks[num_train:]).double().mean())


def factor_vae_score(
    codes,
    factors,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_bins: int = 20,
    seed: int = 0,
) -> float:
    r"""The FactorVAE score (Kim & Mnih 2018). Codes are divided by their standard
    deviation over the data; codes with zero variance (collapsed) are left out. Each
    vote holds a factor k fixed (L = ``batch_size`` points sharing one class of k) and
    names the code of least variance over them, :math:`d^* = \arg\min_d
    \mathrm{Var}_l[c_d(x_l)/s_d]`. A majority-vote classifier maps each code to the
    factor it was most often voted for; the score is its accuracy on held-out votes.
    1 when holding a factor fixed always stills one code of its own; near chance
    (1/K, somewhat above from the fitted majority) for codes independent of the
    factors.

    With a factor grid as ``factors`` (:class:`probae.dsprites.Grid`) and a function
    from its items to their codes as ``codes``, each vote's points are drawn from the
    grid (factor k fixed by index, every other factor drawn anew) and the standard
    deviations come from 10,000 points drawn uniformly (all of a smaller grid);
    only the drawn points are encoded.

    :param codes: ``(N, D)``, or a function from grid items (a 1-D long tensor) to codes.
    :param factors: ``(N, K)`` classes or values, or a factor grid.
    """
    generator = torch.Generator().manual_seed(seed)
    num = num_train + num_eval
    if _is_grid(factors):
        spread = factors.draw((min(_SPREAD_POINTS, len(factors)),), generator)
        ks, _, points = _fixed_factor_draws(factors, num, batch_size, generator)
        codes, rows = _grid_codes(codes, torch.cat([spread, points.reshape(-1)]))
        scale = codes[rows[: spread.numel()]].std(0)
        points = rows[spread.numel() :].view(points.shape)
        num_factors = len(factors.factor_sizes)
    else:
        codes, factors = _check_tables(codes, factors)
        groups = _Groups(_classes(factors, num_bins))
        num_factors = len(groups.factor_sizes)
        scale = codes.std(0)
        if scale.gt(0).any():
            ks, _, points = _fixed_factor_draws(groups, num, batch_size, generator)
    active = scale > 0
    if not active.any():
        return 0.0
    normalized = codes[:, active] / scale[active]
    votes = torch.cat([normalized[rows].var(1).argmin(1) for rows in points.split(_CHUNK)])
    table = torch.zeros(normalized.shape[1], num_factors, dtype=torch.long)
    table.index_put_(
        (votes[:num_train], ks[:num_train]),
        torch.ones(num_train, dtype=torch.long),
        accumulate=True,
    )
    predicted = table.argmax(1)[votes[num_train:]]
    return float((predicted == ks[num_train:]).double().mean())


def sap(codes, factors) -> float:
    r"""The separated attribute predictability (Kumar et al. 2018): with
    :math:`S_{dk}` the :math:`R^2` of a linear regression of factor k on code d alone
    (the squared correlation),

    .. math:: \mathrm{SAP} = \frac1K \sum_k \big(S_{d^{(1)}_k k} - S_{d^{(2)}_k k}\big),

    the gap between the best and second best single code. Factor classes are
    treated as ordered values (the paper's regression form for every factor).
    """
    codes, factors = _check_tables(codes, factors)
    c = codes - codes.mean(0)
    v = factors.double() - factors.double().mean(0)
    cov = c.T @ v
    denominator = (c.pow(2).sum(0)[:, None] * v.pow(2).sum(0)[None, :]).clamp_min(1e-300)
    score = cov.pow(2) / denominator
    score = torch.where((c.pow(2).sum(0) > 0)[:, None], score, torch.zeros_like(score))
    return float(_gap(score).mean())
