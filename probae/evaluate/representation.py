r"""What the codes hold: the mixture component each point belongs to
(:func:`~probae.evaluate.cluster`), how well those clusters match labels
(:func:`~probae.evaluate.clustering_accuracy`), and the accuracy of a linear
classifier on the codes (:func:`~probae.evaluate.linear_probe`).

All of them are importable from :mod:`probae.evaluate`.
"""

from __future__ import annotations

import torch

from .. import importance
from .._common import positive_int, prepare
from .._factorized import unmasked
from ._util import _eval_mode, _per_batch, _setup

__all__ = ["cluster", "clustering_accuracy", "linear_probe"]


# -- clustering ------------------------------------------------------------------------


def cluster(model, data, num_samples: int = 100, c=None, batch_size: int = 100) -> torch.Tensor:
    r"""The most probable mixture component of each data point,
    :math:`\arg\max_k p(k|x)`, for a model with a mixture prior.

    The posterior over components is estimated by importance sampling with the guide,

    .. math:: p(x, k) = \int p(k)\, p(z|k)\, p(x|z)\, dz
              \approx \frac1S \sum_s \frac{p(k)\,p(z^{(s)}|k)\,p(x|z^{(s)})}{q(z^{(s)}|x)},

    from the enumerated site of a :class:`~probae.priors.GaussianMixture` with
    ``enumerate=True`` (any model with one enumerated site), or from the
    components of a :class:`~pyro.distributions.MixtureSameFamily` at site "z" (the
    marginal mixture), where :math:`p(k)\,p(z|k) = p(z)\,p(k|z)`. Both read the same
    numbers from the same draws.

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_samples: importance samples per point.
    :param c: conditions, one row per point, for conditional models.
    :param int batch_size: points evaluated at once.
    :returns: a ``torch.long`` tensor of shape ``(N,)``.
    """
    num_samples = positive_int("num_samples", num_samples)
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "cluster", True)
    out = []
    with torch.no_grad(), _eval_mode(pair.module):
        for args in _per_batch(x, c, batch_size):
            guide_trace, model_trace = importance.traces(
                pair.model, pair.guide, args, num_samples, nesting
            )
            free, coupled, _ = importance.joint_terms(guide_trace, model_trace, nesting)
            if coupled is not None:
                if coupled.dim() != 3:
                    raise ValueError("cluster needs exactly one enumerated site in the model")
                joint = free + coupled  # (K, S, B)
            else:
                joint = free + _log_responsibilities(model_trace).movedim(-1, 0)
            out.append(joint.logsumexp(1).argmax(0))
    return torch.cat(out)


def _log_responsibilities(model_trace) -> torch.Tensor:
    """log p(k|z) at the model's site "z", shape ``(S, B, K)``."""
    site = model_trace.nodes.get("z")
    fn = unmasked(site["fn"]) if site is not None else None
    if not isinstance(fn, torch.distributions.MixtureSameFamily):
        raise TypeError(
            "cluster needs a mixture prior: a priors.GaussianMixture (either form), or a model "
            "whose site 'z' is a MixtureSameFamily or which enumerates a discrete site, got "
            f"{type(fn).__name__} at site 'z'"
        )
    z = site["value"]
    log_mix = fn.mixture_distribution.logits.log_softmax(-1)
    log_comp = fn.component_distribution.log_prob(z.unsqueeze(-1 - fn.event_dim))
    joint = log_mix + log_comp
    return joint - joint.logsumexp(-1, keepdim=True)


def clustering_accuracy(assignments, labels) -> float:
    """Unsupervised clustering accuracy: the fraction of points whose cluster, under
    the one-to-one matching of clusters to labels that maximizes it (the Hungarian
    algorithm), is their label. Points in clusters left unmatched count as errors.

    :param assignments: cluster of each point (integers), shape ``(N,)``.
    :param labels: true label of each point (integers), shape ``(N,)``.
    """
    from scipy.optimize import linear_sum_assignment

    assignments = torch.as_tensor(assignments).reshape(-1).long().cpu()
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    if assignments.shape != labels.shape or assignments.numel() == 0:
        raise ValueError(
            "assignments and labels must be non-empty with one entry per point, got "
            f"{tuple(assignments.shape)} and {tuple(labels.shape)}"
        )
    if assignments.min() < 0 or labels.min() < 0:
        raise ValueError("assignments and labels must be non-negative integers")
    _, a = assignments.unique(return_inverse=True)
    _, b = labels.unique(return_inverse=True)
    counts = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.long)
    counts.index_put_((a, b), torch.ones_like(a), accumulate=True)
    rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)
    return counts[rows, cols].sum().item() / labels.numel()


# -- linear probe ----------------------------------------------------------------------


def linear_probe(
    model,
    train,
    test,
    train_y=None,
    test_y=None,
    batch_size: int = 1000,
    max_iter: int = 2000,
) -> float:
    r"""Feature quality: the test accuracy of a linear classifier on the codes.

    A multinomial logistic regression (scikit-learn, L2-regularized, on standardized
    features) is fitted to the codes of ``train`` and their labels, and scored on the
    codes of ``test``. The same call measures baselines: pass a callable such as
    ``lambda x: x`` (raw pixels) or a fitted projection instead of a model.

    :param model: a probae model (its :meth:`encode` gives the features) or a callable
        mapping a tensor ``(N, ...)`` to features ``(N, F)``.
    :param train: a :class:`~probae.data.Dataset` with labels, or a tensor with ``train_y``.
    :param test: the same, for scoring.
    :param train_y: labels of ``train`` when it is a tensor (or to override ``train.y``).
    :param test_y: labels of ``test`` likewise.
    :param int batch_size: points encoded at once.
    :param int max_iter: iterations of the logistic-regression solver.
    :returns: the fraction of ``test`` classified correctly.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    batch_size = positive_int("batch_size", batch_size)
    max_iter = positive_int("max_iter", max_iter)
    if hasattr(model, "encode"):
        module = model if isinstance(model, torch.nn.Module) else None
        features = model.encode
    elif callable(model):
        module, features = None, model
    else:
        raise TypeError(
            "model must be a probae model (with .encode) or a callable x -> features, "
            f"got {type(model).__name__}"
        )

    def codes_and_labels(data, labels, name):
        if labels is None:
            labels = getattr(data, "y", None)
        if labels is None:
            raise ValueError(f"{name} has no labels: pass a labelled Dataset or {name}_y=")
        x = prepare(data, module, name=name, check_support=False)[0]
        labels = torch.as_tensor(labels).reshape(-1)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(
                f"{name}_y must have one label per point: {name} has {x.shape[0]} points, "
                f"{name}_y has {labels.shape[0]}"
            )
        with torch.no_grad(), _eval_mode(module):
            z = torch.cat([features(xb).reshape(xb.shape[0], -1) for xb in x.split(batch_size)])
        return z.double().cpu().numpy(), labels.cpu().numpy()

    z_train, y_train = codes_and_labels(train, train_y, "train")
    z_test, y_test = codes_and_labels(test, test_y, "test")
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    # A small problem: threaded BLAS spends more time synchronizing than computing.
    with threadpool_limits(limits=1):
        classifier.fit(z_train, y_train)
        return float(classifier.score(z_test, y_test))
