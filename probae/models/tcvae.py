r"""The beta-TCVAE: the KL term split three ways, each part weighted on its own.

With :math:`q(z) = \frac1N\sum_n q(z|x_n)` the aggregate posterior, the average KL
of the ELBO is (Chen et al. 2018)

.. math::

    \mathbb E_{p(n)}\mathrm{KL}(q(z|x_n)\|p(z)) =
    \underbrace{I_q(n; z)}_{\text{index-code MI}} +
    \underbrace{\mathrm{KL}\big(q(z)\,\|\,\textstyle\prod_j q(z_j)\big)}_{\text{total correlation}} +
    \underbrace{\textstyle\sum_j \mathrm{KL}(q(z_j)\|p(z_j))}_{\text{dimension-wise KL}},

and the beta-TCVAE minimizes

.. math:: -\mathbb E_q[\log p(x|z)] + \alpha\, I_q(n; z) + \beta\,\mathrm{TC}
          + \gamma \sum_j \mathrm{KL}(q(z_j)\|p(z_j)),

penalizing the total correlation (the dependence between latent coordinates) alone
with :math:`\beta > 1`. :math:`\log q(z)` and :math:`\log q(z_j)` are estimated on
the minibatch by **minibatch-weighted sampling**: for M points of a data set of
size N,

.. math:: \log q(z_i) \approx \log\sum_{m=1}^M q(z_i|x_m) - \log(NM), \qquad
          \log q(z_{ij}) \approx \log\sum_{m=1}^M q(z_{ij}|x_m) - \log(NM).

This is the estimator as the paper states it; its :math:`-\log(NM)` makes
:math:`\widehat{\mathrm{MI}}` larger by :math:`\log(NM)` and
:math:`\widehat{\mathrm{dimKL}}` smaller by :math:`D\log(NM)` than their
sample-free values would suggest. These constants leave every gradient unchanged,
but the training loss that :func:`probae.fit` reports is offset by
:math:`[(\alpha-\beta) - (\gamma-\beta)D]\log(NM)` (hundreds of nats on dSprites
with :math:`\beta = 6`); :mod:`probae.evaluate` reports the plain ELBO.

As a Pyro program: the ``z`` site carries ``poutine.scale(beta)`` in model and guide
(the beta-VAE's KL, :math:`\beta(\mathrm{MI} + \mathrm{TC} + \mathrm{dimKL})`, draw by
draw), and the guide adds a ``pyro.factor`` named ``"kl_reweighting"`` of value
:math:`(\alpha - \beta)\,\widehat{\mathrm{MI}} + (\gamma - \beta)\,\widehat{\mathrm{dimKL}}`
per point, so the total weights are :math:`\alpha, \beta, \gamma`. The factor is
added in training mode only: in eval mode (what :mod:`probae.evaluate` uses) the
pair is the VAE's and its ELBO is the plain one.

**References**

[1] `Isolating Sources of Disentanglement in Variational Autoencoders`, Ricky T. Q.
Chen, Xuechen Li, Roger Grosse, David Duvenaud (NeurIPS 2018)
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from .vae import VAE

__all__ = ["BetaTCVAE", "minibatch_weighted_sampling"]


def _number(name, value, positive=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(
            f"{name} must be {'positive' if positive else 'non-negative'}, got {value!r}"
        )
    return float(value)


def minibatch_weighted_sampling(z, loc, scale, dataset_size: int):
    r"""Per draw, the minibatch-weighted-sampling estimates of
    :math:`\log q(z_i)` and :math:`\sum_j \log q(z_{ij})` for a Gaussian posterior.

    :param torch.Tensor z: draws ``(..., M, D)``, one per point of the batch.
    :param torch.Tensor loc: posterior means ``(M, D)``.
    :param torch.Tensor scale: posterior standard deviations ``(M, D)``.
    :param int dataset_size: N, the size of the data set the batch is drawn from.
    :returns: ``(log_q_z, log_prod_q_zj)``, each of shape ``(..., M)``.
    """
    m = loc.shape[-2]
    # log q(z_i,j | x_m) for every draw i, point m, coordinate j: (..., M_i, M_m, D)
    log_density = torch.distributions.Normal(loc, scale).log_prob(z.unsqueeze(-2))
    log_norm = math.log(dataset_size * m)
    log_q_z = log_density.sum(-1).logsumexp(-1) - log_norm
    log_prod = (log_density.logsumexp(-2) - log_norm).sum(-1)
    return log_q_z, log_prod


class BetaTCVAE(VAE):
    r"""The beta-TCVAE of Chen et al. (2018) (see the module's docstring).

    :param tuple x_shape: shape of one data point.
    :param int z_dim: latent dimension.
    :param prior: a module from :mod:`probae.priors` (default standard normal).
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param float beta: weight of the total correlation (6 in the paper's dSprites runs).
    :param int dataset_size: N, the number of training points, which
        minibatch-weighted sampling reads (training refuses to start without it; the
        command line sets it from the data).
    :param float alpha: weight of the index-code mutual information.
    :param float gamma: weight of the dimension-wise KL.
    :param tuple hidden: hidden widths of MLP networks.
    :param encoder: a network returning ``(loc, scale)``; built if None.
    :param decoder: a network returning the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        prior=None,
        likelihood=None,
        beta: float = 6.0,
        dataset_size: int | None = None,
        alpha: float = 1.0,
        gamma: float = 1.0,
        hidden=(256, 256),
        encoder=None,
        decoder=None,
    ):
        super().__init__(x_shape, z_dim, prior, likelihood, beta, hidden, encoder, decoder)
        if dataset_size is not None and (
            isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1
        ):
            raise ValueError(
                f"dataset_size must be a positive integer or None, got {dataset_size!r}"
            )
        self.dataset_size = dataset_size
        self.alpha = _number("alpha", alpha)
        self.gamma = _number("gamma", gamma)

    def kl_terms(self, x, z, loc, scale):
        r"""Per draw, the estimates :math:`(\widehat{\mathrm{MI}}, \widehat{\mathrm{TC}},
        \widehat{\mathrm{dimKL}})`, each ``(..., M)``; they sum to
        :math:`\log q(z|x) - \log p(z)` exactly."""
        n = loc.shape[0]
        if self.dataset_size is None:
            raise ValueError(
                "BetaTCVAE needs dataset_size=, the number of training points, to estimate "
                "the total correlation by minibatch-weighted sampling"
            )
        if n > self.dataset_size:
            raise ValueError(
                f"a batch of {n} points exceeds dataset_size={self.dataset_size}: build "
                "the model with dataset_size= the number of training points"
            )
        log_q_zx = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        log_q_z, log_prod = minibatch_weighted_sampling(z, loc, scale, self.dataset_size)
        log_p = self.prior((n,)).log_prob(z)
        return log_q_zx - log_q_z, log_q_z - log_prod, log_prod - log_p

    def guide(self, x, c=None):
        """q(z|x), and in training mode the reweighting of the KL's three parts."""
        x = self.check_x(x)
        loc, scale = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            with self._beta_scale():
                z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            if self.training and (self.alpha != self.beta or self.gamma != self.beta):
                mi, _, dim_kl = self.kl_terms(x, z, loc, scale)
                extra = (self.alpha - self.beta) * mi + (self.gamma - self.beta) * dim_kl
                # A guide factor enters the ELBO as -log q: a factor of +extra adds it to the loss.
                pyro.factor("kl_reweighting", extra, has_rsample=True)
            return z
