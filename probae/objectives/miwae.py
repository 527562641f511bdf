r"""The bounds between the ELBO and IWAE (Rainforth et al., 2018).

From :math:`M K` importance weights :math:`w` of the same data point:
:class:`MIWAE` averages the IWAE bounds of M groups of K, :class:`PIWAE` trains the
model on the IWAE bound of all of them and the guide on MIWAE's, and :class:`CIWAE`
mixes the ELBO and the IWAE bound of K particles. Each is a
``_WeightedIWAE`` of :mod:`probae.objectives.iwae`: its gradient is written per particle.

**References**

[1] `Tighter Variational Bounds are Not Necessarily Better`, Tom Rainforth, Adam
R. Kosiorek, Tuan Anh Le, Chris J. Maddison, Maximilian Igl, Frank Wood, Yee
Whye Teh (ICML 2018)
"""

from __future__ import annotations

import math

from .._common import positive_int
from .iwae import _normalized, _WeightedIWAE

__all__ = ["CIWAE", "MIWAE", "PIWAE"]


class _Grouped(_WeightedIWAE):
    def __init__(self, num_particles=64, groups=8, max_plate_nesting=float("inf"), enumerate=False):
        num_particles = positive_int("num_particles", num_particles)
        groups = positive_int("groups", groups)
        if num_particles % groups:
            raise ValueError(
                f"num_particles={num_particles} must be a multiple of groups={groups} "
                "(M groups of K particles)"
            )
        super().__init__(num_particles, max_plate_nesting=max_plate_nesting, enumerate=enumerate)
        self.groups = groups

    def _miwae(self, log_w):
        """The MIWAE bound per point and its log-weights (each particle's share)."""
        m = self.groups
        grouped = log_w.reshape(m, -1, log_w.shape[-1])
        bound = (grouped.logsumexp(1) - math.log(grouped.shape[1])).mean(0)
        log_weights = _normalized(grouped, 1).reshape(log_w.shape) - math.log(m)
        return bound, log_weights


class MIWAE(_Grouped):
    r"""The multiply importance-weighted bound (Rainforth et al., 2018): the
    ``num_particles`` particles form M groups of K = ``num_particles / groups``,

    .. math:: \mathcal L_{M,K} = \frac1M \sum_{m=1}^M \log \frac1K \sum_{k=1}^K w_{m,k},

    between the ELBO (K = 1) and IWAE (M = 1).

    :param int num_particles: M K particles in all.
    :param int groups: M.

    **References**

    [1] `Tighter Variational Bounds are Not Necessarily Better`, Tom Rainforth, Adam
    R. Kosiorek, Tuan Anh Le, Chris J. Maddison, Maximilian Igl, Frank Wood, Yee
    Whye Teh (ICML 2018)
    """

    loss_name = "miwae"

    def _weights(self, log_w):
        bound, log_a = self._miwae(log_w)
        return bound, log_a, log_a, log_a.exp()


class PIWAE(_Grouped):
    r"""The partially importance-weighted objective (Rainforth et al., 2018): the
    model is trained on the IWAE bound of all M K particles and the guide on the
    MIWAE bound :math:`\mathcal L_{M,K}` of the same particles (see :class:`MIWAE`).
    The loss's value is the negative IWAE bound. Needs a reparameterized guide
    with one latent sample site.
    """

    loss_name = "piwae"
    rescales_path = True

    def _weights(self, log_w):
        k = log_w.shape[0]
        log_a = _normalized(log_w)
        _, log_b = self._miwae(log_w)
        return log_w.logsumexp(0) - math.log(k), log_a, log_b, log_b.exp()


class CIWAE(_WeightedIWAE):
    r"""The combination importance-weighted bound (Rainforth et al., 2018),

    .. math:: \mathcal L = \beta\, \frac1K \sum_k \log w_k
              + (1 - \beta) \log \frac1K \sum_k w_k,

    the ELBO and the IWAE bound of the same K particles mixed by :math:`\beta`.

    :param int num_particles: K.
    :param float beta: the ELBO's share, in [0, 1].
    """

    loss_name = "ciwae"

    def __init__(self, num_particles=64, beta=0.5, max_plate_nesting=float("inf"), enumerate=False):
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
            raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")
        super().__init__(num_particles, max_plate_nesting=max_plate_nesting, enumerate=enumerate)
        self.beta = float(beta)

    def _weights(self, log_w):
        k = log_w.shape[0]
        bound = self.beta * log_w.mean(0) + (1 - self.beta) * (log_w.logsumexp(0) - math.log(k))
        weights = self.beta / k + (1 - self.beta) * _normalized(log_w).exp()
        log_a = weights.log()
        return bound, log_a, log_a, weights
