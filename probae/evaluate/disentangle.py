r"""Disentanglement: how the codes of a model line up with known factors of variation.

Every metric reads two tables: the codes :math:`c \in \mathbb R^{N\times D}` of N
data points (the posterior mean, :meth:`encode`) and their ground-truth factors
:math:`v \in \mathbb R^{N\times K}` (``Dataset.factors``: integer classes, or real
values). :func:`disentanglement` encodes a seeded sample of the data once, in
batches, and computes every metric from those two tables; each metric is also a
function of ``(codes, factors)`` alone, so a user's own codes work too.

Metrics that need "points that share the value of factor k" (the BetaVAE and
FactorVAE scores) draw them **from the data set itself**: a point, then partners
with the same class of factor k. For a data set that is the full factor grid or a
uniform sample of it (dSprites) this is the sampling process of the papers; no
simulator is needed, nothing is encoded twice, and memory is N x D.

**Mutual information estimator.** Each code is discretized into ``num_bins``
(default 20) equal-mass bins: the bin edges are the code's empirical quantiles at
:math:`1/B, \dots, (B-1)/B` (lower interpolation, so every edge is a value of the
code), a value goes to the bin counting the edges at or below it, and equal values
share a bin. Real-valued factors are discretized the same way; integer factors are
used as classes. The MI is the plug-in (histogram) estimate in nats,

.. math:: \hat I(c_d; v_k) = \sum_{a,b} \hat p(a, b)\log\frac{\hat p(a,b)}{\hat p(a)\hat p(b)}.

Equal-mass bins make the estimate invariant to any strictly increasing transform
of a code (the true MI is invariant to any invertible one; a decreasing transform
moves each edge by at most one tied group), and a factor class holding
at least 1/B of the points never shares a bin with another class, so a code that
is a monotone function of such a factor attains :math:`\hat I = H(v_k)` exactly.
The plug-in estimate is biased upward by about
:math:`(B-1)(|v_k|-1)/2N` for independent variables (Miller-Madow). No third-party
estimator is used: the numbers depend on this module only.

**The metrics** (each function's docstring gives its definition):

- :func:`beta_vae_score` (Higgins et al. 2017), :func:`factor_vae_score` (Kim & Mnih
  2018): accuracies of a classifier predicting which factor was held fixed;
- :func:`mig` (Chen et al. 2018): the mutual information gap;
- :func:`sap` (Kumar et al. 2018): the separated attribute predictability;
- :func:`dci` (Eastwood & Williams 2018): disentanglement, completeness and
  informativeness from the weights of a lasso regression;
- :func:`modularity_explicitness` (Ridgeway & Mozer 2018).

The classifiers and regressions are written here (multinomial logistic regression
by Newton's method, lasso by coordinate descent, in float64): deterministic given the seed,
and independent of scikit-learn's version.

Diagnostics of a model's aggregate posterior :math:`q(z) = \frac1N\sum_n q(z|x_n)`:
:func:`total_correlation` and :func:`kl_decomposition` (index-code mutual
information, total correlation and dimension-wise KL; Chen et al. 2018).

**References**

[1] `beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
Framework`, Irina Higgins et al. (ICLR 2017)

[2] `Disentangling by Factorising`, Hyunjik Kim, Andriy Mnih (ICML 2018)

[3] `Isolating Sources of Disentanglement in Variational Autoencoders`, Ricky T. Q.
Chen, Xuechen Li, Roger Grosse, David Duvenaud (NeurIPS 2018)

[4] `Variational Inference of Disentangled Latent Concepts from Unlabeled
Observations`, Abhishek Kumar, Prasanna Sattigeri, Avinash Balakrishnan (ICLR 2018)

[5] `A Framework for the Quantitative Evaluation of Disentangled Representations`,
Cian Eastwood, Christopher K. I. Williams (ICLR 2018)

[6] `Learning Deep Disentangled Embeddings with the F-Statistic Loss`, Karl
Ridgeway, Michael C. Mozer (NeurIPS 2018)

[7] `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations`, Francesco Locatello et al. (ICML 2019)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from .. import _progress, importance
from .._common import as_pair, device_of, positive_int
from ._util import _eval_mode, _latent_site, _per_batch, _prior_of, _setup

__all__ = [
    "Disentanglement",
    "KLDecomposition",
    "beta_vae_score",
    "dci",
    "discretize",
    "disentanglement",
    "encode_factors",
    "factor_vae_score",
    "kl_decomposition",
    "mig",
    "modularity_explicitness",
    "mutual_information_matrix",
    "sap",
    "total_correlation",
]


# -- inputs ----------------------------------------------------------------------------


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
    """Equal-mass bins of every column of ``values`` ``(N, D)`` (see the module's
    docstring): a ``torch.long`` tensor of bin numbers in ``[0, num_bins)``."""
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
    code and every factor, a ``(D, K)`` float64 tensor (estimator: the module's
    docstring)."""
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


# -- MIG, SAP, modularity ------------------------------------------------------------------


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


# -- linear models (deterministic, float64) ------------------------------------------------


def _standardize(train, test):
    loc, scale = train.mean(0), train.std(0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (train - loc) / scale, (test - loc) / scale


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


def _augment(x):
    return torch.cat([x, x.new_ones(x.shape[0], 1)], 1)


def _newton(loss_grad_hessian, theta, iterations=50):
    """Damped Newton's method with backtracking: ``loss_grad_hessian(theta)`` returns
    the loss, its gradient (theta's shape) and a solver ``g -> H^{-1} g``."""
    loss, grad, solve = loss_grad_hessian(theta)
    for _ in range(iterations):
        step = solve(grad)
        t = 1.0
        while t > 1e-8:
            candidate = theta - t * step
            new = loss_grad_hessian(candidate)
            if new[0] <= loss:
                break
            t /= 2
        else:
            break
        improvement = loss - new[0]
        theta, (loss, grad, solve) = candidate, new
        if improvement < 1e-12:
            break
    return theta


def _logistic_regression(x, labels, num_classes, l2=1e-4):
    """Multinomial logistic regression (softmax, L2 penalty ``l2`` on every weight)
    fitted by Newton's method from zero: returns ``(weight (D, C), bias (C,))``."""
    x = _augment(x)
    n, d = x.shape
    targets = torch.nn.functional.one_hot(labels, num_classes).double()
    eye = torch.eye(d * num_classes, dtype=torch.float64)

    def evaluate(theta):
        logits = x @ theta
        log_p = logits.log_softmax(1)
        loss = -(targets * log_p).sum() / n + l2 * theta.pow(2).sum()
        p = log_p.exp()
        grad = x.T @ (p - targets) / n + 2 * l2 * theta  # (d, C)
        # Hessian over theta.T flattened (class-major): diag(p) kron xx' - (p x)(p x)'
        weighted = (p[:, :, None] * x[:, None, :]).reshape(n, -1)  # (n, C*d)
        hessian = -(weighted.T @ weighted) / n
        diag = torch.einsum("ncd,ne->cde", weighted.reshape(n, num_classes, d), x) / n
        idx = torch.arange(num_classes)
        blocks = hessian.view(num_classes, d, num_classes, d)
        blocks[idx, :, idx, :] += diag
        hessian = hessian + 2 * l2 * eye
        factor = torch.linalg.cholesky(hessian)

        def solve(g):
            return torch.cholesky_solve(g.T.reshape(-1, 1), factor).reshape(g.T.shape).T

        return float(loss), grad, solve

    theta = _newton(evaluate, torch.zeros(d, num_classes, dtype=torch.float64))
    return theta[:-1], theta[-1]


def _binary_logistic(x, targets, l2=1e-3):
    """Independent one-vs-rest logistic regressions, one per column of ``targets``
    (0/1, ``(N, C)``), fitted by Newton's method: ``(weight (D, C), bias (C,))``."""
    x = _augment(x)
    n, d = x.shape
    eye = torch.eye(d, dtype=torch.float64)

    def evaluate(theta):
        logits = x @ theta  # (n, C)
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
            / n
            + l2 * theta.pow(2).sum()
        )
        p = logits.sigmoid()
        grad = x.T @ (p - targets) / n + 2 * l2 * theta
        hessian = torch.einsum("nc,nd,ne->cde", p * (1 - p), x, x) / n + 2 * l2 * eye
        factor = torch.linalg.cholesky(hessian)

        def solve(g):
            return torch.cholesky_solve(g.T.unsqueeze(-1), factor).squeeze(-1).T

        return float(loss), grad, solve

    theta = _newton(evaluate, torch.zeros(d, targets.shape[1], dtype=torch.float64))
    return theta[:-1], theta[-1]


def _auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) statistic, ties halved."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores.argsort()
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=scores.dtype)
    # average ranks over ties
    unique, inverse = torch.unique(sorted_scores, return_inverse=True)
    sums = torch.zeros_like(unique).index_add_(0, inverse, ranks[order])
    counts = torch.zeros_like(unique).index_add_(0, inverse, torch.ones_like(ranks))
    ranks[order] = (sums / counts)[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _split(n: int, train_fraction: float, generator):
    order = torch.randperm(n, generator=generator)
    cut = max(1, min(n - 1, int(round(train_fraction * n))))
    return order[:cut], order[cut:]


# -- DCI, explicitness ------------------------------------------------------------------------


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


# -- scores from fixed factors -------------------------------------------------------------


#: votes computed at once: bounds memory at _CHUNK x batch_size x D codes
_CHUNK = 1024
#: points of a factor grid whose codes give the FactorVAE score's standard deviations
_SPREAD_POINTS = 10_000


class _Groups:
    """For each factor, the points sorted by its class: draws a partner sharing the
    class of a given point in O(1)."""

    def __init__(self, classes: torch.Tensor):
        self.size = classes.shape[0]
        self.factor_sizes = tuple(int(classes[:, k].max()) + 1 for k in range(classes.shape[1]))
        self.order, self.start, self.count = [], [], []
        for k in range(classes.shape[1]):
            labels = classes[:, k]
            order = labels.argsort(stable=True)
            counts = torch.bincount(labels)
            starts = torch.cumsum(counts, 0) - counts
            self.order.append(order)
            self.start.append(starts[labels])
            self.count.append(counts[labels])

    def partners(self, k: int, anchors: torch.Tensor, shape, generator) -> torch.Tensor:
        """Points drawn uniformly among those sharing factor k's class with each anchor,
        shape ``(len(anchors), *shape)``."""
        u = torch.rand(anchors.shape[0], *shape, generator=generator, dtype=torch.float64)
        start = self.start[k][anchors].view(-1, *([1] * len(shape)))
        count = self.count[k][anchors].view(-1, *([1] * len(shape)))
        offset = (u * count).long().clamp_max(count - 1)
        return self.order[k][start + offset]

    def draw(self, shape, generator) -> torch.Tensor:
        """Points drawn uniformly, a tensor of ``shape``."""
        return torch.randint(self.size, tuple(shape), generator=generator)

    draw_sharing = partners


def _is_grid(factors) -> bool:
    """A factor grid (:class:`probae.dsprites.Grid`) rather than a table of factors."""
    return all(
        callable(getattr(factors, name, None)) for name in ("draw", "draw_sharing", "factors_of")
    )


def _grid_codes(codes, points: torch.Tensor):
    """The codes of grid items ``points``: ``(table, rows)``, the codes (float64, CPU)
    of each distinct item, computed once by ``codes`` in chunks of ``_CHUNK`` items,
    and the row of the table of each point (``points``' shape)."""
    if not callable(codes):
        raise TypeError(
            "with a factor grid as factors, codes must be a function from grid items "
            "(a 1-D long tensor) to their codes (N, D)"
        )
    unique, rows = torch.unique(points.reshape(-1), return_inverse=True)
    parts = []
    for chunk in unique.split(_CHUNK):
        part = codes(chunk)
        if not isinstance(part, torch.Tensor) or part.dim() != 2 or part.shape[0] != len(chunk):
            raise ValueError(f"codes(items) must return a tensor (len(items), D) for {len(chunk)}")
        parts.append(part.detach().double().cpu())
    table = torch.cat(parts)
    if not torch.isfinite(table).all():
        raise ValueError("codes contain NaN or infinite values")
    return table, rows.view(points.shape)


def _fixed_factor_draws(points, num, batch_size, generator):
    """``num`` draws of (factor k uniform, an anchor point, batch_size partners sharing
    its class of k) from ``points`` (a :class:`_Groups` or a factor grid): returns
    ``(k (num,), anchors (num,), partners (num, batch_size))``."""
    num_factors = len(points.factor_sizes)
    ks = torch.randint(num_factors, (num,), generator=generator)
    anchors = points.draw((num,), generator)
    partners = torch.empty(num, batch_size, dtype=torch.long)
    for k in range(num_factors):
        rows = (ks == k).nonzero().squeeze(1)
        partners[rows] = points.draw_sharing(k, anchors[rows], (batch_size,), generator)
    return ks, anchors, partners


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


# -- all at once ---------------------------------------------------------------------------


@dataclass
class Disentanglement:
    """Every metric of :mod:`probae.evaluate.disentangle` on one set of codes.

    :ivar float beta_vae: BetaVAE score.
    :ivar float factor_vae: FactorVAE score.
    :ivar float mig: mutual information gap.
    :ivar float sap: separated attribute predictability.
    :ivar float dci_disentanglement: DCI D.
    :ivar float dci_completeness: DCI C.
    :ivar float dci_informativeness: DCI I (held-out :math:`R^2`).
    :ivar float modularity: Ridgeway & Mozer's modularity.
    :ivar float explicitness: Ridgeway & Mozer's explicitness (ROC AUC).
    :ivar torch.Tensor mutual_information: the ``(D, K)`` MI matrix in nats.
    :ivar int num_points: points the codes come from.
    """

    beta_vae: float
    factor_vae: float
    mig: float
    sap: float
    dci_disentanglement: float
    dci_completeness: float
    dci_informativeness: float
    modularity: float
    explicitness: float
    mutual_information: torch.Tensor
    num_points: int

    def as_dict(self) -> dict:
        """The scalar metrics by name."""
        out = asdict(self)
        out.pop("mutual_information")
        return out

    def __str__(self) -> str:
        rows = [
            f"{key:>20s}  {value:.4f}"
            for key, value in self.as_dict().items()
            if key != "num_points"
        ]
        return "\n".join([f"disentanglement on {self.num_points} points", *rows])


def _scores(codes, factors, num_bins, seed, votes=None, vote_sizes=(), bar=None):
    """Every metric; the BetaVAE and FactorVAE scores read ``votes``, a pair
    ``(codes, factors)`` of their own (a grid's), where given. ``bar`` counts the
    metrics done."""
    vote_codes, vote_factors = (codes, factors) if votes is None else votes
    sizes = dict(zip(("batch_size", "num_train", "num_eval"), vote_sizes, strict=False))
    metrics = {  # in the order the seeded draws were always made
        "dci": lambda: dci(codes, factors, seed=seed),
        "modularity": lambda: modularity_explicitness(codes, factors, num_bins, seed=seed),
        "beta_vae": lambda: beta_vae_score(
            vote_codes, vote_factors, num_bins=num_bins, seed=seed, **sizes
        ),
        "factor_vae": lambda: factor_vae_score(
            vote_codes, vote_factors, num_bins=num_bins, seed=seed, **sizes
        ),
        "mig": lambda: mig(codes, factors, num_bins),
        "sap": lambda: sap(codes, factors),
        "mutual_information": lambda: mutual_information_matrix(codes, factors, num_bins),
    }
    values = {}
    for name, compute in metrics.items():
        values[name] = compute()
        if bar is not None:
            bar.update(1)
    d, me = values.pop("dci"), values.pop("modularity")
    return Disentanglement(
        **values,
        dci_disentanglement=d["disentanglement"],
        dci_completeness=d["completeness"],
        dci_informativeness=d["informativeness"],
        modularity=me["modularity"],
        explicitness=me["explicitness"],
        num_points=codes.shape[0],
    )


def _representation(model):
    """A function x -> codes: the model's ``encode``, the mean of a pair's guide at
    site "z", or a callable itself."""
    encode = getattr(model, "encode", None)
    if callable(encode):
        return encode
    if isinstance(model, (tuple, list)):
        pair = as_pair(model)

        def guide_mean(x):
            with poutine.block():
                site = _latent_site(poutine.trace(pair.guide).get_trace(x), "disentanglement")
            return site["fn"].mean

        return guide_mean
    if callable(model):
        return model
    raise TypeError(
        "model must have .encode(x), be a (model, guide) pair, or be a callable x -> codes"
    )


def encode_factors(
    model, data, factors=None, num_points: int = 10_000, batch_size: int = 256, seed: int = 0
):
    """Codes and factors of a seeded sample of ``num_points`` points (all of them if
    fewer), encoded in batches under :func:`torch.no_grad`: ``(codes, factors)`` on
    the CPU.

    :param model: a model with ``encode(x)`` (the posterior mean), a ``(model, guide)``
        pair (the mean of its guide at site "z") or a callable ``x -> codes``.
    :param data: a :class:`~probae.data.Dataset` with ``factors``, a tensor of x, or a
        factor grid (:class:`probae.dsprites.Grid`), whose sampled images are rendered
        batch by batch.
    :param factors: the factors ``(N, K)`` when ``data`` carries none.
    """
    from ..data import Dataset, as_tensor

    if _is_grid(data):
        if factors is not None:
            raise ValueError("a factor grid carries its own factors: leave factors= out")
        num_points = positive_int("num_points", num_points)
        batch_size = positive_int("batch_size", batch_size)
        generator = torch.Generator().manual_seed(seed)
        rows = torch.randperm(len(data), generator=generator)[:num_points].sort().values
        return _encode_items(model, data, rows, batch_size), data.factors_of(rows)
    x = as_tensor(data)
    if factors is None:
        factors = data.factors if isinstance(data, Dataset) else None
    if factors is None:
        raise ValueError(
            "disentanglement needs ground-truth factors: data with .factors "
            "(data.load('dsprites'), Dataset(x=..., factors=...)) or factors="
        )
    if not isinstance(factors, torch.Tensor) or factors.dim() != 2:
        raise TypeError("factors must be a 2-D tensor (N, K)")
    if factors.shape[0] != x.shape[0]:
        raise ValueError(
            f"factors must have one row per point: data has {x.shape[0]}, factors "
            f"{factors.shape[0]}"
        )
    num_points = positive_int("num_points", num_points)
    batch_size = positive_int("batch_size", batch_size)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(x.shape[0], generator=generator)[:num_points]
    rows = rows.sort().values
    encode = _representation(model)
    module = model if isinstance(model, torch.nn.Module) else None
    device = device_of(module, x.device)
    codes = []
    with torch.no_grad(), _eval_mode(module):
        for start in range(0, rows.numel(), batch_size):
            xb = x[rows[start : start + batch_size].to(x.device)].to(device)
            codes.append(encode(xb).detach().reshape(xb.shape[0], -1).cpu())
    return torch.cat(codes), factors[rows.to(factors.device)].cpu()


def _encode_items(model, grid, items, batch_size: int) -> torch.Tensor:
    """Codes (CPU) of a grid's items, rendered and encoded ``batch_size`` at a time."""
    encode = _representation(model)
    module = model if isinstance(model, torch.nn.Module) else None
    device = device_of(module, torch.device("cpu"))
    x_shape = getattr(module, "x_shape", None)
    codes = []
    with torch.no_grad(), _eval_mode(module):
        for chunk in items.split(batch_size):
            xb = grid.images(chunk).to(device)
            if x_shape is not None and xb[0].numel() == torch.Size(x_shape).numel():
                xb = xb.reshape(xb.shape[0], *x_shape)
            codes.append(encode(xb).detach().reshape(xb.shape[0], -1).cpu())
    return torch.cat(codes)


def disentanglement(
    model,
    data,
    factors=None,
    num_points: int = 10_000,
    num_bins: int = 20,
    batch_size: int = 256,
    seed: int = 0,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    group_size: int = 64,
    progress: bool | None = None,
) -> Disentanglement:
    """Every disentanglement metric of a model on data with known factors.

    A seeded sample of ``num_points`` points is encoded once (posterior means, in
    batches of ``batch_size``); all metrics are computed from those codes and the
    points' factors (see the module's docstring and each metric's). Same seed, same
    numbers.

    On a factor grid (:class:`probae.dsprites.Grid`, e.g.
    ``data.load("dsprites", size=None)``) nothing is held but the codes: the sample's
    images are rendered batch by batch, and the BetaVAE and FactorVAE scores draw their
    points from the grid itself, fixing a factor by index and drawing the others anew
    (the sampling of their papers), rendering and encoding each distinct drawn point
    once: up to ``(3 * group_size) * (num_train + num_eval)`` points, 2.9 million at
    the defaults (the papers' numbers); lower ``num_train``, ``num_eval`` or
    ``group_size`` for a quicker estimate.

    :param model: a probae model, a ``(model, guide)`` pair or a callable ``x -> codes``.
    :param data: a :class:`~probae.data.Dataset` with ``factors`` (or a tensor with
        ``factors=``), or a factor grid.
    :param factors: ``(N, K)`` factor classes or values, if ``data`` has none.
    :param int num_points: points to encode.
    :param int num_bins: bins of the mutual information estimator.
    :param int batch_size: points encoded at once.
    :param int seed: seeds the sample and every metric's draws.
    :param int num_train: votes the BetaVAE and FactorVAE classifiers are fitted on.
    :param int num_eval: votes they are scored on.
    :param int group_size: points of one vote (pairs for BetaVAE, the points sharing
        the fixed factor for FactorVAE).
    :param bool progress: show progress over the encoding and the seven metrics (True
        or None): a bar in a terminal or a notebook, elsewhere a plain line every 10 s
        once it runs that long; False shows nothing.
    :rtype: Disentanglement
    """
    _progress.check(progress)
    vote_sizes = tuple(
        positive_int(name, value)
        for name, value in (
            ("group_size", group_size),
            ("num_train", num_train),
            ("num_eval", num_eval),
        )
    )
    with _progress.counter(8, "probae disentanglement", "stage", progress) as bar:
        codes, factors = encode_factors(model, data, factors, num_points, batch_size, seed)
        bar.update(1)
        votes = None
        if _is_grid(data):
            votes = (lambda items: _encode_items(model, data, items, batch_size), data)
        return _scores(codes, factors, num_bins, seed, votes, vote_sizes, bar)


# -- total correlation and the KL decomposition --------------------------------------------


@dataclass
class KLDecomposition:
    r"""The average KL of the ELBO split three ways (Chen et al. 2018),

    .. math:: \frac1N\sum_n \mathrm{KL}(q(z|x_n)\|p(z))
              = \underbrace{I_q(n; z)}_{\text{index-code MI}}
              + \underbrace{\mathrm{KL}\big(q(z)\,\|\,\textstyle\prod_j q(z_j)\big)}_{\text{total correlation}}
              + \underbrace{\textstyle\sum_j \mathrm{KL}(q(z_j)\|p(z_j))}_{\text{dimension-wise KL}}.

    :ivar float average_kl: left-hand side.
    :ivar float mutual_information: :math:`I_q(n; z)`.
    :ivar float total_correlation: TC of the aggregate posterior.
    :ivar float dimension_wise_kl: the sum of the marginal KLs.
    :ivar float total_correlation_stderr: its Monte Carlo standard error (likewise).
    :ivar int num_points: N.
    :ivar int num_samples: draws of z per point.
    """

    average_kl: float
    mutual_information: float
    total_correlation: float
    dimension_wise_kl: float
    average_kl_stderr: float
    mutual_information_stderr: float
    total_correlation_stderr: float
    dimension_wise_kl_stderr: float
    num_points: int
    num_samples: int


def _factorized(fn, what, which):
    base = fn
    while isinstance(base, dist.MaskedDistribution):
        base = base.base_dist
    if (
        isinstance(base, torch.distributions.Independent)
        and base.reinterpreted_batch_ndims == 1
        and base.base_dist.event_shape == ()
    ):
        return base.base_dist
    raise ValueError(
        f"{what} needs a factorized {which} (independent coordinates, e.g. "
        f"Normal(loc, scale).to_event(1)), got {type(fn).__name__}"
    )


def kl_decomposition(
    model, data, num_samples: int = 1, c=None, batch_size: int = 100
) -> KLDecomposition:
    r"""The three-way split of the average KL (:class:`KLDecomposition`), extending
    :func:`~probae.evaluate.elbo_surgery`: the aggregate posterior
    :math:`q(z) = \frac1N\sum_m q(z|x_m)` and its marginals
    :math:`q(z_j) = \frac1N\sum_m q(z_j|x_m)` are evaluated exactly over the data at
    draws :math:`z \sim q(z|x_n)`, so

    .. math:: \log\frac{q(z|x_n)}{p(z)} = \log\frac{q(z|x_n)}{q(z)}
              + \log\frac{q(z)}{\prod_j q(z_j)} + \log\frac{\prod_j q(z_j)}{p(z)}

    holds draw by draw and the three averages sum to the average KL exactly; the only
    error is Monte Carlo over the draws (and finite N). The cost is :math:`N^2`
    posterior densities per draw. Needs a factorized guide and prior at site "z".

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: a :class:`~probae.data.Dataset` or a tensor ``(N, ...)``.
    :param int num_samples: draws of z per point.
    :param c: conditions, for conditional models.
    :param int batch_size: points evaluated at once.
    """
    num_samples = positive_int("num_samples", num_samples)
    what = "kl_decomposition"
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, what, True)
    n = x.shape[0]
    terms = {"kl": [], "mi": [], "tc": [], "dim": []}
    with torch.no_grad(), _eval_mode(pair.module):
        batches = list(_per_batch(x, c, batch_size))
        posteriors = []
        for args in batches:
            with poutine.block():
                site = _latent_site(
                    poutine.trace(pair.guide).get_trace(*args, **getattr(args, "kwargs", {})), what
                )
            posteriors.append(_factorized(site["fn"], what, "posterior"))
        for args in batches:
            with (
                poutine.block(),
                pyro.plate(importance.SAMPLE_PLATE, num_samples, dim=-(nesting + 1)),
            ):
                site = _latent_site(
                    poutine.trace(pair.guide).get_trace(*args, **getattr(args, "kwargs", {})), what
                )
            z = site["value"]  # (S, B, D)
            log_q = site["fn"].log_prob(z)
            prior = _prior_of(pair, args, what)
            _factorized(prior, what, "prior")
            log_p = prior.log_prob(z)
            flat = z.reshape(-1, 1, z.shape[-1])  # every draw against every point
            log_joint, log_marginals = None, None
            for q in posteriors:
                per_coordinate = q.log_prob(flat)  # (S*B, N_b, D)
                joint = per_coordinate.sum(-1).logsumexp(-1)
                marginal = per_coordinate.logsumexp(-2)
                log_joint = joint if log_joint is None else torch.logaddexp(log_joint, joint)
                log_marginals = (
                    marginal if log_marginals is None else torch.logaddexp(log_marginals, marginal)
                )
            log_agg = log_joint.reshape(log_q.shape) - math.log(n)
            log_product = (log_marginals - math.log(n)).sum(-1).reshape(log_q.shape)
            terms["kl"].append(log_q - log_p)
            terms["mi"].append(log_q - log_agg)
            terms["tc"].append(log_agg - log_product)
            terms["dim"].append(log_product - log_p)
    from ._util import _mean_and_stderr

    stats = {
        key: _mean_and_stderr(torch.cat(v, -1).reshape(num_samples, -1)) for key, v in terms.items()
    }
    return KLDecomposition(
        average_kl=stats["kl"][0],
        mutual_information=stats["mi"][0],
        total_correlation=stats["tc"][0],
        dimension_wise_kl=stats["dim"][0],
        average_kl_stderr=stats["kl"][1],
        mutual_information_stderr=stats["mi"][1],
        total_correlation_stderr=stats["tc"][1],
        dimension_wise_kl_stderr=stats["dim"][1],
        num_points=n,
        num_samples=num_samples,
    )


def total_correlation(model, data, num_samples: int = 1, c=None, batch_size: int = 100) -> float:
    r"""The total correlation of the aggregate posterior,
    :math:`\mathrm{KL}(q(z)\,\|\,\prod_j q(z_j)) = \mathbb E_{q(z)}[\log q(z) -
    \sum_j \log q(z_j)]`, estimated as in :func:`kl_decomposition`. For a Gaussian
    q(z) with correlation matrix :math:`\rho` it is :math:`-\frac12\log\det\rho`.
    """
    return kl_decomposition(model, data, num_samples, c, batch_size).total_correlation
