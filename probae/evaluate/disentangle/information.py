r"""The information-based metrics: the plug-in mutual information estimator they
share (:func:`mutual_information_matrix`, over the equal-mass bins of
:func:`~probae.evaluate.disentangle.discretize`), the mutual information gap
(:func:`mig`, Chen et al. 2018) and modularity with explicitness
(:func:`modularity_explicitness`, Ridgeway & Mozer 2018).

The estimator and its properties are stated in :mod:`probae.evaluate.disentangle`."""

from __future__ import annotations

import math

import torch

from ._linear import _auc, _binary_logistic, _split, _standardize
from ._tables import _check_tables, _classes, discretize


def _entropy(labels: torch.Tensor) -> float:
    p = torch.bincount(labels).double()
    p = p[p > 0] / labels.numel()
    return float(-(p * p.log()).sum())


def _mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    joint = torch.bincount(a * nb + b, minlength=na * nb).double().reshape(na, nb)
    joint = joint / a.numel()
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    mask = joint > 0
    return float((joint[mask] * (joint[mask] / outer[mask]).log()).sum())


def mutual_information_matrix(codes, factors, num_bins: int = 20) -> torch.Tensor:
    r"""The plug-in mutual information :math:`\hat I(c_d; v_k)` in nats between every
    code and every factor, a ``(D, K)`` float64 tensor (estimator:
    :mod:`probae.evaluate.disentangle`)."""
    codes, factors = _check_tables(codes, factors)
    bins, classes = discretize(codes, num_bins), _classes(factors, num_bins)
    return torch.tensor(
        [
            [_mutual_information(bins[:, d], classes[:, k]) for k in range(classes.shape[1])]
            for d in range(bins.shape[1])
        ],
        dtype=torch.float64,
    )


def _factor_entropies(factors, num_bins) -> torch.Tensor:
    classes = _classes(factors, num_bins)
    entropy = torch.tensor([_entropy(classes[:, k]) for k in range(classes.shape[1])])
    if (entropy <= 0).any():
        raise ValueError("a factor takes a single value on these points: it has nothing to find")
    return entropy.double()


def _gap(matrix: torch.Tensor) -> torch.Tensor:
    """Per column: the largest entry less the second largest."""
    if matrix.shape[0] < 2:
        return matrix[0]
    top = matrix.topk(2, dim=0).values
    return top[0] - top[1]


def mig(codes, factors, num_bins: int = 20) -> float:
    r"""The mutual information gap (Chen et al. 2018),

    .. math:: \mathrm{MIG} = \frac1K \sum_k \frac{1}{H(v_k)}
              \Big(\hat I(c_{d^{(1)}_k}; v_k) - \hat I(c_{d^{(2)}_k}; v_k)\Big),

    :math:`d^{(1)}_k, d^{(2)}_k` the codes with the largest and second largest MI
    with factor k. 1 when every factor is captured by one code alone, 0 when two
    codes hold it equally; near 0 for codes independent of the factors.

    :param torch.Tensor codes: ``(N, D)``.
    :param torch.Tensor factors: ``(N, K)`` classes or values.
    :param int num_bins: bins of the MI estimator.
    """
    info = mutual_information_matrix(codes, factors, num_bins)
    entropy = _factor_entropies(_check_tables(codes, factors)[1], num_bins)
    return float((_gap(info) / entropy).mean())


def _modularity(info: torch.Tensor) -> float:
    theta = info.max(1).values
    keep = theta > 0
    info, theta = info[keep], theta[keep]
    if info.shape[0] == 0 or info.shape[1] < 2:
        return float("nan")
    template = torch.zeros_like(info)
    template[torch.arange(info.shape[0]), info.argmax(1)] = theta
    delta = (info - template).pow(2).sum(1) / (theta.pow(2) * (info.shape[1] - 1))
    return float((1 - delta).mean())


def modularity_explicitness(
    codes, factors, num_bins: int = 20, train_fraction: float = 0.8, seed: int = 0
) -> dict:
    r"""Modularity and explicitness (Ridgeway & Mozer 2018).

    Modularity: with :math:`m_{dk} = \hat I(c_d; v_k)`, :math:`\theta_d = \max_k m_{dk}`
    and :math:`t_{dk} = \theta_d` at the largest entry of row d, 0 elsewhere,

    .. math:: \text{modularity} = \frac1{D'}\sum_d \Big(1 - \frac{\sum_k (m_{dk} -
              t_{dk})^2}{\theta_d^2 (K-1)}\Big)

    over the D' codes with :math:`\theta_d > 0`: 1 when each code informs one factor.
    Explicitness: for each factor class, a one-vs-rest logistic regression on the
    standardized codes; the held-out ROC AUC, averaged over classes, then factors.
    0.5 for codes independent of the factors.

    :returns: ``{"modularity", "explicitness"}``.
    """
    codes, factors = _check_tables(codes, factors)
    info = mutual_information_matrix(codes, factors, num_bins)
    classes = _classes(factors, num_bins)
    generator = torch.Generator().manual_seed(seed)
    train, test = _split(codes.shape[0], train_fraction, generator)
    x_train, x_test = _standardize(codes[train], codes[test])
    aucs = []
    for k in range(classes.shape[1]):
        labels = classes[:, k]
        targets = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).double()
        weight, bias = _binary_logistic(x_train, targets[train])
        scores = x_test @ weight + bias
        per_class = [_auc(scores[:, j], targets[test, j] > 0) for j in range(targets.shape[1])]
        per_class = [a for a in per_class if not math.isnan(a)]
        if per_class:
            aucs.append(sum(per_class) / len(per_class))
    return {
        "modularity": _modularity(info),
        "explicitness": float(sum(aucs) / len(aucs)) if aucs else float("nan"),
    }
