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

from .. import nets, posteriors
from .base import Autoencoder


class VAE(Autoencoder):
    r"""A VAE with a recognition network: by default the diagonal Gaussian
    :math:`q(z|x) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))`, or any family of
    :mod:`probae.posteriors` (a full covariance, a planar, inverse autoregressive or
    spline flow) fed by the encoder.

    :param tuple x_shape: shape of one data point, e.g. ``(64,)`` or ``(1, 28, 28)``.
    :param int z_dim: latent dimension.
    :param prior: a module from :mod:`probae.priors` (default standard normal).
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param float beta: weight of the KL term (1 for the VAE).
    :param tuple hidden: hidden widths of the MLP networks.
    :param encoder: a network returning ``(loc, scale)`` (and the context the posterior
        reads, if any); built from ``x_shape`` if None.
    :param decoder: a network returning the likelihood's input; built if None.
    :param posterior: a family from :mod:`probae.posteriors` (default
        :class:`~probae.posteriors.DiagonalNormal`) or its name (``"iaf:4"``).
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
        posterior=None,
    ):
        super().__init__(x_shape, z_dim, prior, likelihood, beta)
        family = posteriors.DiagonalNormal() if posterior is None else posteriors.get(posterior)
        context_dim = family.context_dim(self.z_dim)
        self.encoder = (
            nets.make_encoder(self.x_shape, z_dim, hidden, context_dim=context_dim)
            if encoder is None
            else encoder
        )
        self.decoder = (
            nets.make_decoder(z_dim, self.x_shape, hidden) if decoder is None else decoder
        )
        self.posterior_family = family.setup(self.z_dim)

    def posterior(self, x, c=None) -> dist.TorchDistribution:
        """q(z|x) as a distribution with ``event_dim=1``."""
        return self.posterior_family(self.encoder(x))

    def guide(self, x, c=None):
        """The recognition model q(z|x)."""
        x = self.check_x(x)
        with pyro.plate("data", x.shape[0]):
            with self._beta_scale():
                return pyro.sample("z", self.posterior(x))

    def encode(self, x, c=None):
        """The posterior mean of z given x."""
        return self.posterior_family.code(self.encoder(self.to_device(x)))
