r"""Deterministic autoencoders as Pyro model/guide pairs whose guide is a Delta.

A classic autoencoder is the same kind of object as a VAE. Its model is the shared
:math:`p(z)\,p(x|z)` of :class:`~probae.models.base.Autoencoder`; its guide is a point
mass at the code, :math:`q(z|x) = \delta(z - f(x))`. A Delta has
:math:`\log q(z|x) = 0` at its own value, so the single-sample ELBO is exact and the
training loss is

.. math::

    -\mathcal L(x) = -\log p(x\,|\,z{=}f(x)) - \log p(f(x)) + \Omega(x),

a reconstruction error, a prior term and an extra guide term :math:`\Omega`:

- :class:`AE`: :math:`\delta(f(x))`, flat prior; the loss is :math:`-\log p(x|z)`.
- :class:`DenoisingAE`: :math:`\delta(f(\tilde x))` with :math:`\tilde x \sim C(\cdot|x)`
  drawn in the guide, flat prior; the model scores the clean :math:`x`.
- :class:`SparseAE`: :math:`\delta(f(x))`; ``"l1"``: a Laplace prior,
  :math:`-\log p(z) = \lambda\|z\|_1 + D\log(2/\lambda)`; ``"kl"``: flat prior and
  :math:`\Omega = \beta\sum_j \mathrm{KL}(\rho\,\|\,\hat\rho_j)`.
- :class:`KSparseAE`: :math:`\delta(\mathrm{top}_k(Wx + b))`, flat prior.
- :class:`ContractiveAE`: :math:`\delta(f(x))`, flat prior,
  :math:`\Omega = \lambda\|\partial f(x)/\partial x\|_F^2`.

The plain and denoising autoencoders are defined here; the sparse ones in
:mod:`probae.models.sparse`, the contractive one in :mod:`probae.models.contractive`,
their base class, code encoder and code density in :mod:`probae.models.deterministic`;
this module gathers them all.

With a Gaussian likelihood of fixed scale :math:`s` the reconstruction term is
:math:`\|x - g(f(x))\|^2 / 2s^2 + \tfrac D2 \log 2\pi s^2`: the mean-squared-error
autoencoder. The flat prior (:class:`~probae.priors.Flat`) has
:math:`\log p(z) = 0`.

Extra terms :math:`\Omega` live in the guide as ``pyro.factor`` sites inside the
``"data"`` plate. The guide's log-density enters the ELBO with a minus sign, so a
guide factor of value :math:`+\Omega` adds :math:`\Omega` to the loss; since every
site is inside the plate, per-point estimators (:func:`probae.evaluate.elbo`) see
it point by point. The same pair is trained by :func:`probae.fit` and measured by
:mod:`probae.evaluate`; :func:`probae.evaluate.log_likelihood` refuses these models,
because a point mass has no density to importance-weight by.

A deterministic autoencoder has no generative prior to sample from.
:func:`fit_latent_density` fits a Gaussian mixture to the codes of the training
data (ex-post density estimation, Ghosh et al. 2020), after which
:meth:`DeterministicAutoencoder.sample` decodes draws from that mixture. The
mixture is fitted after training: it is not the model's own prior.

**References**

[1] `Reducing the Dimensionality of Data with Neural Networks`, Geoffrey E. Hinton,
Ruslan R. Salakhutdinov (Science 2006)

[2] `Extracting and Composing Robust Features with Denoising Autoencoders`, Pascal
Vincent, Hugo Larochelle, Yoshua Bengio, Pierre-Antoine Manzagol (ICML 2008)

[3] `Sparse autoencoder`, Andrew Ng, CS294A lecture notes (Stanford 2011);
`Deep Learning`, Ian Goodfellow, Yoshua Bengio, Aaron Courville, ch. 14 (MIT Press 2016)

[4] `k-Sparse Autoencoders`, Alireza Makhzani, Brendan Frey (ICLR 2014, arXiv 2013)

[5] `Contractive Auto-Encoders: Explicit Invariance During Feature Extraction`,
Salah Rifai, Pascal Vincent, Xavier Muller, Xavier Glorot, Yoshua Bengio (ICML 2011)

[6] `From Variational to Deterministic Autoencoders`, Partha Ghosh, Mehdi S. M.
Sajjadi, Antonio Vergari, Michael Black, Bernhard Schölkopf (ICLR 2020)
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist

from .. import corruption as _corruption
from .contractive import ContractiveAE, jacobian_squared_norm  # noqa: F401 (importable here too)
from .deterministic import CodeDensity, CodeEncoder, DeterministicAutoencoder, fit_latent_density
from .sparse import KSparseAE, SparseAE, TiedDecoder, top_k

__all__ = [
    "CodeEncoder",
    "CodeDensity",
    "TiedDecoder",
    "DeterministicAutoencoder",
    "AE",
    "DenoisingAE",
    "SparseAE",
    "KSparseAE",
    "ContractiveAE",
    "fit_latent_density",
    "top_k",
]


class AE(DeterministicAutoencoder):
    r"""The plain autoencoder: :math:`q(z|x) = \delta(z - f(x))`, a flat prior, and the
    loss :math:`-\log p(x|g(f(x)))`; with a Gaussian likelihood of scale :math:`s`,

    .. math:: \frac{\|x - g(f(x))\|^2}{2s^2} + \frac D2 \log(2\pi s^2)

    per point (Hinton & Salakhutdinov 2006).

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths of the encoder; the decoder mirrors them.
    :param str activation: code activation (None for a linear code).
    :param encoder: a module mapping x to its code; built if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        likelihood=None,
        hidden=(128,),
        activation=None,
        encoder=None,
        decoder=None,
    ):
        super().__init__(x_shape, z_dim, None, likelihood, hidden, activation, encoder, decoder)


class DenoisingAE(DeterministicAutoencoder):
    r"""The denoising autoencoder (Vincent et al. 2008): the guide draws a corrupted
    copy :math:`\tilde x \sim C(\tilde x|x)` and puts its point mass at
    :math:`f(\tilde x)`, while the model scores the clean :math:`x`:

    .. math:: -\mathcal L(x) = -\log p(x\,|\,z{=}f(\tilde x)), \qquad \tilde x \sim C(\cdot|x).

    Its expectation over the corruption is the denoising criterion. The corrupted
    input is recorded in the guide's trace as the site ``"x_tilde"`` (a masked
    auxiliary Delta: it carries no density). The guide corrupts in every mode, so
    :func:`probae.evaluate.elbo` is a one-draw estimate of the denoising objective;
    :meth:`encode` and :meth:`reconstruct` use the clean input.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param corruption: a :class:`probae.corruption.Corruption` (default
        ``MaskingNoise(0.25)``).
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths of the encoder; the decoder mirrors them.
    :param str activation: code activation.
    :param encoder: a module mapping x to its code; built if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        corruption=None,
        likelihood=None,
        hidden=(128,),
        activation=None,
        encoder=None,
        decoder=None,
    ):
        super().__init__(x_shape, z_dim, None, likelihood, hidden, activation, encoder, decoder)
        if corruption is None:
            corruption = _corruption.MaskingNoise(0.25)
        if not callable(corruption):
            raise TypeError(
                f"corruption must be a probae.corruption.Corruption (or a callable x -> x~), "
                f"got {type(corruption).__name__}"
            )
        self.corruption = corruption

    def guide_code(self, x):
        x_tilde = self.corruption(x)
        # Recorded for inspection only: an auxiliary, masked Delta carries no density, so
        # every ELBO (mean-field included) and the per-point estimators ignore it.
        pyro.sample(
            "x_tilde",
            dist.Delta(x_tilde, event_dim=len(self.x_shape)).mask(False),
            obs=x_tilde,
            infer={"is_auxiliary": True},
        )
        return self.encoder(x_tilde)
