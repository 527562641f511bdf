r"""Scores of models with discrete codes (:class:`~probae.models.vqvae.VQVAE`).

A VQ-VAE's guide is a point mass on the code grid :math:`k(x)`, so there are no
importance weights to average; its evidence lower bound

.. math:: \log p(x) = \log \sum_k p(k)\, p(x \mid k) \ge \log p(k(x)) + \log p(x \mid z_q(x))

is the code prior's log-probability of the codes plus the decoder's term, as in
van den Oord et al. (2017). :func:`code_log_likelihood` returns it per point, and
:func:`probae.evaluate.bits_per_dim` reports it in bits for such models.

**References**

[1] `Neural Discrete Representation Learning`, Aaron van den Oord, Oriol Vinyals,
Koray Kavukcuoglu (NeurIPS 2017)
"""

from __future__ import annotations

from .estimators import elbo
from .results import LogLikelihood

__all__ = ["code_log_likelihood"]


def code_log_likelihood(model, data, batch_size: int = 1000) -> LogLikelihood:
    r"""The lower bound :math:`\log p(k(x)) + \log p(x \mid z_q(x))` of each point, for a
    model whose codes are discrete (``model.discrete_codes``), under its code prior
    (uniform over the codes before :func:`probae.fit_code_prior`).

    :param model: a :class:`~probae.models.vqvae.VQVAE`.
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int batch_size: points evaluated at once.
    :rtype: LogLikelihood
    """
    if not getattr(model, "discrete_codes", False):
        raise TypeError(
            f"code_log_likelihood needs a model with discrete codes (a VQVAE), got "
            f"{type(model).__name__}; use evaluate.log_likelihood"
        )
    return LogLikelihood(elbo(model, data, batch_size=batch_size), num_samples=1)
