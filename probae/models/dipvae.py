r"""DIP-VAE: a VAE whose aggregate posterior's covariance is pushed to the identity.

Kumar et al. (2018) add to the negative ELBO a penalty on the covariance of the
aggregate posterior :math:`q(z) = \frac1N\sum_n q(z|x_n)`:

.. math:: \lambda_{od}\sum_{i\ne j} C_{ij}^2 + \lambda_d \sum_i (C_{ii} - 1)^2,

with, for a Gaussian posterior :math:`\mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))`,

- DIP-VAE-I: :math:`C = \mathrm{Cov}_{p(x)}[\mu(x)]`;
- DIP-VAE-II: :math:`C = \mathrm{Cov}_{q(z)}[z] = \mathbb E_{p(x)}[\mathrm{diag}\,\sigma^2(x)]
  + \mathrm{Cov}_{p(x)}[\mu(x)]`,

both estimated on the minibatch. As a Pyro program the guide adds the penalty to
every point's loss through a ``pyro.factor`` named ``"covariance"`` (so the mean
loss over a batch is the negative ELBO plus the penalty), in training mode only.

**References**

[1] `Variational Inference of Disentangled Latent Concepts from Unlabeled
Observations`, Abhishek Kumar, Prasanna Sattigeri, Avinash Balakrishnan (ICLR 2018)
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from .vae import VAE

__all__ = ["DIPVAE"]


class DIPVAE(VAE):
    r"""DIP-VAE-I or -II (see the module's docstring).

    :param tuple x_shape: shape of one data point.
    :param int z_dim: latent dimension.
    :param prior: a module from :mod:`probae.priors` (default standard normal).
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param str kind: ``"i"`` or ``"ii"``.
    :param float lambda_od: weight of the off-diagonal terms.
    :param float lambda_d: weight of the diagonal terms (default: 10 lambda_od for
        DIP-VAE-I, lambda_od for DIP-VAE-II, as in the paper).
    :param float beta: weight of the KL term.
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
        kind: str = "ii",
        lambda_od: float = 10.0,
        lambda_d: float | None = None,
        beta: float = 1.0,
        hidden=(256, 256),
        encoder=None,
        decoder=None,
    ):
        super().__init__(x_shape, z_dim, prior, likelihood, beta, hidden, encoder, decoder)
        kind = str(kind).lower()
        if kind not in ("i", "ii"):
            raise ValueError(f"kind must be 'i' or 'ii', got {kind!r}")
        self.kind = kind
        self.lambda_od = _weight("lambda_od", lambda_od)
        if lambda_d is None:
            lambda_d = 10 * self.lambda_od if kind == "i" else self.lambda_od
        self.lambda_d = _weight("lambda_d", lambda_d)

    def covariance(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The batch estimate of C, ``(D, D)``, from posterior means and scales ``(M, D)``."""
        centered = loc - loc.mean(0)
        cov = centered.T @ centered / loc.shape[0]
        if self.kind == "ii":
            cov = cov + torch.diag_embed(scale.pow(2).mean(0))
        return cov

    def penalty(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        r""":math:`\lambda_{od}\sum_{i\ne j} C_{ij}^2 + \lambda_d\sum_i (C_{ii}-1)^2`."""
        cov = self.covariance(loc, scale)
        diag = cov.diagonal()
        off = cov.pow(2).sum() - diag.pow(2).sum()
        return self.lambda_od * off + self.lambda_d * (diag - 1).pow(2).sum()

    def guide(self, x, c=None):
        """q(z|x), and in training mode the covariance penalty."""
        x = self.check_x(x)
        loc, scale = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            with self._beta_scale():
                z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            if self.training:
                share = self.penalty(loc, scale).expand(x.shape[0])
                # A guide factor enters the ELBO as -log q: a factor of +share adds it to the loss.
                pyro.factor("covariance", share, has_rsample=True)
            return z


def _weight(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)
