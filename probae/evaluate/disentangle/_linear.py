r"""The linear models the metrics fit, written here in float64 so that they are
deterministic given the seed and independent of any other library's version: the
standardization and train/test split of the codes, multinomial and one-vs-rest
logistic regressions fitted by Newton's method, and the ROC AUC of a score."""

from __future__ import annotations

import torch


def _standardize(train, test):
    loc, scale = train.mean(0), train.std(0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (train - loc) / scale, (test - loc) / scale


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
