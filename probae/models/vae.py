r"""The variational autoencoder and the beta-VAE.

.. math::

    \mathcal L(x) = \mathbb E_{q(z|x)}[\log p(x|z)] - \beta\,\mathrm{KL}(q(z|x)\,\|\,p(z))

With :math:`\beta = 1` this is the evidence lower bound of Kingma & Welling; other
values give the beta-VAE of Higgins et al. Beta enters as ``poutine.scale(scale=beta)``
around the ``z`` site in **both** the model and the guide: Trace_ELBO scales
:math:`\log p(z)` and :math:`\log q(z|x)` by the site scales, while
TraceMeanField_ELBO reads only the guide's scale for its analytic KL.

**References**

[1] `Auto-Encoding Variational Bayes`, Diederik P. Kingma, Max Welling (ICLR 2014)

[2] `beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
Framework`, Irina Higgins et al. (ICLR 2017)
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist

from .. import _densities, nets
from .base import Autoencoder


class VAE(Autoencoder):
    r"""A VAE with a Gaussian recognition network
    :math:`q(z|x) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))`.

    :param tuple x_shape: shape of one data point, e.g. ``(64,)`` or ``(1, 28, 28)``.
    :param int z_dim: latent dimension.
    :param prior: a module from :mod:`probae.priors` (default standard normal).
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param float beta: weight of the KL term (1 for the VAE).
    :param tuple hidden: hidden widths of the MLP networks.
    :param encoder: a network returning ``(loc, scale)``; built from ``x_shape`` if None.
    :param decoder: a network returning the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        prior=None,
        likelihood=None,
        beta: float = 1.0,
        hidden=(256, 256),
        encoder=None,
        decoder=None,
    ):
        super().__init__(x_shape, z_dim, prior, likelihood, beta)
        self.encoder = (
            nets.make_encoder(self.x_shape, z_dim, hidden) if encoder is None else encoder
        )
        self.decoder = (
            nets.make_decoder(z_dim, self.x_shape, hidden) if decoder is None else decoder
        )

    def posterior(self, x, c=None) -> dist.TorchDistribution:
        """q(z|x) as a distribution with ``event_dim=1``."""
        loc, scale = self.encoder(x)
        return _densities.Normal(loc, scale).to_event(1)

    def guide(self, x, c=None):
        """The recognition model q(z|x)."""
        x = self.check_x(x)
        with pyro.plate("data", x.shape[0]):
            with self._beta_scale():
                return pyro.sample("z", self.posterior(x))

    def encode(self, x, c=None):
        """The posterior mean of z given x."""
        return self.encoder(self.to_device(x))[0]
