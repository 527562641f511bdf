r"""FactorVAE: a VAE with a total-correlation penalty estimated by a discriminator.

Kim & Mnih (2018) minimize

.. math:: -\mathbb E_q[\log p(x|z)] + \mathrm{KL}(q(z|x)\|p(z))
          + \gamma\,\mathrm{KL}\big(q(z)\,\|\,\bar q(z)\big), \qquad
          \bar q(z) = \textstyle\prod_j q(z_j),

the last term the total correlation of the aggregate posterior. It is estimated by
the density-ratio trick: a discriminator :math:`D(z)` is trained to tell draws of
:math:`q(z)` (codes of a batch) from draws of :math:`\bar q(z)` (the same codes with
every coordinate permuted across the batch independently), and then

.. math:: \mathrm{TC} \approx \mathbb E_{q(z)}\Big[\log\frac{D(z)}{1 - D(z)}\Big].

As a Pyro program the guide adds, per point and in training mode, a ``pyro.factor``
named ``"total_correlation"`` holding :math:`\gamma` times the discriminator's logit
(computed with the discriminator's weights detached, so this term trains the
encoder only) plus the discriminator's cross-entropy on detached codes (which trains
the discriminator only). One optimizer step of :func:`probae.fit` thus takes the
VAE's step and the discriminator's step together, the two trained alongside. In
eval mode the factor is absent and the pair is the VAE's.

**References**

[1] `Disentangling by Factorising`, Hyunjik Kim, Andriy Mnih (ICML 2018)
"""

from __future__ import annotations

import math

import pyro
import torch
from torch import nn
from torch.func import functional_call

from ..nets import MLP
from .vae import VAE

__all__ = ["FactorVAE", "permute_dims"]


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    r"""Draws of :math:`\prod_j q(z_j)` from draws of :math:`q(z)`: every coordinate of
    ``z`` ``(..., M, D)`` permuted across the M points independently."""
    keys = z.new_empty(z.shape).uniform_()
    return torch.gather(z, -2, keys.argsort(dim=-2))


class _LeakyReLU(nn.LeakyReLU):
    def __init__(self):
        super().__init__(0.2)


class FactorVAE(VAE):
    r"""FactorVAE (see the module's docstring).

    :param tuple x_shape: shape of one data point.
    :param int z_dim: latent dimension.
    :param prior: a module from :mod:`probae.priors` (default standard normal).
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param float gamma: weight of the total-correlation penalty (the paper: 10-100 on
        dSprites).
    :param tuple discriminator_hidden: hidden widths of the discriminator, an MLP with
        leaky ReLUs (the paper: six layers of 1000).
    :param float beta: weight of the KL term (1 in the paper).
    :param tuple hidden: hidden widths of MLP networks.
    :param encoder: a network returning ``(loc, scale)``; built if None.
    :param decoder: a network returning the likelihood's input; built if None.
    :param posterior: a family from :mod:`probae.posteriors` (default diagonal Gaussian);
        the penalty reads only draws of z, so any family serves.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        prior=None,
        likelihood=None,
        gamma: float = 10.0,
        discriminator_hidden=(1000,) * 6,
        beta: float = 1.0,
        hidden=(256, 256),
        encoder=None,
        decoder=None,
        posterior=None,
    ):
        super().__init__(
            x_shape, z_dim, prior, likelihood, beta, hidden, encoder, decoder, posterior
        )
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
            raise TypeError(f"gamma must be a number, got {gamma!r}")
        if not (gamma >= 0 and math.isfinite(gamma)):
            raise ValueError(f"gamma must be a non-negative finite number, got {gamma!r}")
        self.gamma = float(gamma)
        self.discriminator_hidden = tuple(int(h) for h in discriminator_hidden)
        # two logits: "drawn from q(z)" and "drawn from the product of its marginals"
        self.discriminator = MLP(z_dim, self.discriminator_hidden, 2, activation=_LeakyReLU)

    def total_correlation_logits(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log D(z) - \log(1 - D(z))` per draw, the discriminator's weights
        detached (gradients reach z only)."""
        weights = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, weights, (z,))
        return logits[..., 0] - logits[..., 1]

    def discriminator_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Per point, the discriminator's cross-entropy on detached codes ``z`` (label 0)
        and their dimension-permuted copy (label 1), averaged over the two."""
        z = z.detach()
        real = self.discriminator(z)
        fake = self.discriminator(permute_dims(z))
        return 0.5 * (-real.log_softmax(-1)[..., 0] - fake.log_softmax(-1)[..., 1])

    def guide(self, x, c=None):
        """q(z|x), and in training mode the total-correlation terms."""
        x = self.check_x(x)
        with pyro.plate("data", x.shape[0]):
            with self._beta_scale():
                z = pyro.sample("z", self.posterior(x))
            if self.training:
                penalty = self.gamma * self.total_correlation_logits(z)
                penalty = penalty + self.discriminator_loss(z)
                # A guide factor enters the ELBO as -log q: a factor of +penalty adds it to the loss.
                pyro.factor("total_correlation", penalty, has_rsample=True)
            return z
