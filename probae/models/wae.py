r"""Autoencoders whose codes are matched to the prior in aggregate, by the maximum mean
discrepancy: the Wasserstein autoencoder and InfoVAE.

A VAE pulls each posterior :math:`q(z|x)` towards the prior; these pull the
*aggregate* posterior :math:`q(z) = \mathbb E_{p_D(x)} q(z|x)` towards it, which leaves
each code free to be informative. The distance is the squared maximum mean
discrepancy of a kernel :math:`k`, estimated on a batch of codes
:math:`z_1..z_n \sim q(z)` and as many prior draws :math:`\tilde z_1..\tilde z_n \sim p(z)`
without bias (Gretton et al. 2012):

.. math:: \widehat{\mathrm{MMD}}^2 = \frac{1}{n(n-1)}\sum_{i\ne j} \big(k(z_i, z_j)
          + k(\tilde z_i, \tilde z_j)\big) - \frac{2}{n^2}\sum_{i,j} k(z_i, \tilde z_j),

with the inverse multiquadric kernel :math:`k(a, b) = C / (C + \|a - b\|^2)`,
:math:`C = 2\,d_z\,\sigma^2` (Tolstikhin et al. 2018 use :math:`\sigma^2 = 1`, the
prior's variance), whose heavy tails keep gradients alive for codes far from the prior.

The term belongs to the batch, not to a point. It enters the guide as a ``pyro.factor``
named ``"mmd"`` inside the ``"data"`` plate with every point carrying the whole weighted
term, so that the loss of a batch of n points, divided by n, is the papers' objective,
the mean reconstruction term plus :math:`\lambda\,\widehat{\mathrm{MMD}}^2`. A batch of one
point has no estimate, and the term is zero there.

- :class:`WAE` (WAE-MMD): a deterministic encoder, :math:`q(z|x) = \delta(z - f(x))`, and
  the loss :math:`-\log p(x|f(x)) + \lambda\,\widehat{\mathrm{MMD}}^2`; the prior enters
  only through the MMD (its log-density at the code is masked out of the loss), and
  ``model.sample(n)`` decodes draws from it.
- :class:`InfoVAE`: a Gaussian encoder and the ELBO with the KL scaled and the MMD added,

  .. math:: \mathcal L = \mathbb E_q \log p(x|z) - (1 - \alpha)\,\mathrm{KL}(q(z|x)\|p(z))
            - (\alpha + \lambda - 1)\,\widehat{\mathrm{MMD}}^2(q(z), p(z)),

  parameterized here by the KL weight :math:`\beta = 1 - \alpha` and the MMD weight
  :math:`\alpha + \lambda - 1` (Zhao et al. 2019).

**References**

[1] `Wasserstein Auto-Encoders`, Ilya Tolstikhin, Olivier Bousquet, Sylvain Gelly,
Bernhard Schölkopf (ICLR 2018)

[2] `InfoVAE: Balancing Learning and Inference in Variational Autoencoders`, Shengjia
Zhao, Jiaming Song, Stefano Ermon (AAAI 2019)

[3] `A Kernel Two-Sample Test`, Arthur Gretton, Karsten M. Borgwardt, Malte J. Rasch,
Bernhard Schölkopf, Alexander Smola (JMLR 2012)
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from .. import _validate
from .. import likelihoods as _likelihoods
from .base import Autoencoder
from .deterministic import CodeEncoder
from .vae import VAE

__all__ = ["InfoVAE", "WAE", "imq_kernel", "mmd"]


def imq_kernel(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    r"""The inverse multiquadric kernel matrix :math:`C / (C + \|a_i - b_j\|^2)`.

    :param torch.Tensor a: ``(n, d)``.
    :param torch.Tensor b: ``(m, d)``.
    :param float scale: C.
    """
    squared = (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1)
    return scale / (scale + squared)


def mmd(z: torch.Tensor, z_prior: torch.Tensor, scale: float) -> torch.Tensor:
    r"""The unbiased estimate of the squared MMD between the rows of ``z`` and of
    ``z_prior`` with :func:`imq_kernel` (see the module's docstring); zero with fewer
    than two rows.

    :param torch.Tensor z: ``(..., n, d)`` codes (leading dimensions: particles).
    :param torch.Tensor z_prior: ``(n, d)`` prior draws.
    :param float scale: the kernel's C.
    """
    n = z.shape[-2]
    if n < 2:
        return z.new_zeros(z.shape[:-2])
    off_diagonal = 1 - torch.eye(n, dtype=z.dtype, device=z.device)
    within = (imq_kernel(z, z, scale) + imq_kernel(z_prior, z_prior, scale)) * off_diagonal
    between = imq_kernel(z, z_prior, scale).mean((-2, -1))
    return within.sum((-2, -1)) / (n * (n - 1)) - 2 * between


class _MMDTerm:
    """The MMD factor shared by the two families (``self.weight``, ``self.kernel_scale``)."""

    def _set_mmd_options(self, weight, kernel_scale) -> None:
        """Checks the prior can be sampled, and sets the term's weight and kernel scale C
        (default :math:`2 d_z`, for a unit-variance prior)."""
        if getattr(self.prior, "improper", False):
            raise ValueError(
                f"{type(self).__name__} needs a prior it can sample from; a flat prior has no draws"
            )
        self.weight = _validate.number("weight", weight, low=0.0)
        if kernel_scale is None:
            self.kernel_scale = 2.0 * self.z_dim
        else:
            self.kernel_scale = _validate.positive("kernel_scale", kernel_scale)

    def _prior_draws(self, n: int, like: torch.Tensor) -> torch.Tensor:
        # Hidden from the trace: these draws are a Monte Carlo device of the penalty,
        # not latent variables of the model.
        with poutine.block():
            prior = self.prior((n,))
            draws = prior.rsample() if prior.has_rsample else prior.sample()
        return draws.to(dtype=like.dtype)

    def mmd_penalty(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\lambda\,\widehat{\mathrm{MMD}}^2` between a batch of codes ``z`` of
        shape ``(n, z_dim)`` and n fresh draws from the prior."""
        return self.weight * mmd(z, self._prior_draws(z.shape[-2], z), self.kernel_scale)

    def _mmd_factor(self, z: torch.Tensor) -> None:
        penalty = self.mmd_penalty(z)
        # A guide factor enters the ELBO as -log q: +penalty adds it to each point's loss.
        pyro.factor(
            "mmd", penalty.unsqueeze(-1).expand(*penalty.shape, z.shape[-2]), has_rsample=True
        )


class WAE(_MMDTerm, Autoencoder):
    r"""The Wasserstein autoencoder with the MMD penalty (WAE-MMD, Tolstikhin et al. 2018):
    the deterministic encoder :math:`q(z|x) = \delta(z - f(x))` and, per point of a batch,

    .. math:: -\log p(x\,|\,z{=}f(x)) + \lambda\,\widehat{\mathrm{MMD}}^2\big(\{f(x_i)\},
              \{\tilde z_i\}\big), \qquad \tilde z_i \sim p(z).

    With the default Gaussian likelihood of scale 1 the first term is half the squared
    error (plus a constant), the paper's cost. With :math:`\lambda = 0` it is the plain
    autoencoder :class:`~probae.AE`. The prior's log-density at the code is masked out of
    the loss: the prior enters only through the MMD, and ``sample(n)`` decodes its draws.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param prior: a module from :mod:`probae.priors` that can be sampled (default
        standard normal).
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param float weight: :math:`\lambda` (0 allowed).
    :param float kernel_scale: the kernel's C (default :math:`2 d_z`, for a unit-variance
        prior).
    :param tuple hidden: hidden widths of the encoder; the decoder mirrors them.
    :param encoder: a module mapping x to its code; built if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        prior=None,
        likelihood=None,
        weight: float = 10.0,
        kernel_scale: float | None = None,
        hidden=(256, 256),
        encoder=None,
        decoder=None,
    ):
        from .. import nets

        likelihood = _likelihoods.Gaussian() if likelihood is None else likelihood
        super().__init__(x_shape, z_dim, prior, likelihood, beta=1.0)
        self._set_mmd_options(weight, kernel_scale)
        hidden = _validate.widths("hidden", hidden)
        self.encoder = CodeEncoder(self.x_shape, z_dim, hidden) if encoder is None else encoder
        self.decoder = (
            nets.make_decoder(z_dim, self.x_shape, hidden) if decoder is None else decoder
        )

    def model(self, x=None, c=None):
        r""":math:`p(z)\,p(x|z)` with :math:`\log p(z)` masked out of the loss."""
        self._no_condition(c)
        n = self._batch_size(x, None)
        with pyro.plate("data", n):
            with poutine.mask(mask=False):
                z = pyro.sample("z", self._prior_of_z(n, None))
            return pyro.sample("x", self.likelihood(self.decoder(z), len(self.x_shape)), obs=x)

    def guide(self, x, c=None):
        r""":math:`\delta(z - f(x))`, and the MMD of the batch's codes to the prior."""
        x = self.check_x(x)
        self._no_condition(c)
        with pyro.plate("data", x.shape[0]):
            code = self.encoder(x)
            if self.weight > 0:
                self._mmd_factor(code)
            return pyro.sample("z", dist.Delta(code, event_dim=1))

    def encode(self, x, c=None) -> torch.Tensor:
        """The code f(x)."""
        self._no_condition(c)
        return self.encoder(self.check_x(self.to_device(x)))

    def decode(self, z, c=None) -> torch.Tensor:
        self._no_condition(c)
        return super().decode(z)

    def extra_repr(self):
        return f"weight={self.weight}, kernel_scale={self.kernel_scale}"


class InfoVAE(_MMDTerm, VAE):
    r"""InfoVAE with the MMD divergence (Zhao et al. 2019): the VAE's Gaussian encoder,
    the KL scaled by :math:`\beta = 1 - \alpha` and the MMD of the batch's sampled codes
    to the prior added with weight :math:`\lambda' = \alpha + \lambda - 1`; per point,

    .. math:: -\mathbb E_q\log p(x|z) + \beta\,\mathrm{KL}(q(z|x)\|p(z))
              + \lambda'\,\widehat{\mathrm{MMD}}^2(q(z), p(z)).

    ``beta=1, weight=0`` is the VAE. The MMD is taken between the reparameterized draws
    :math:`z_i \sim q(z|x_i)` of the batch, samples of the aggregate posterior. The factor
    is added in training mode only, as for the other VAE variants: in eval mode (what
    :mod:`probae.evaluate` uses) the pair is the VAE's, so :func:`probae.evaluate.log_likelihood`
    estimates :math:`\log p(x)` of the trained model.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: latent dimension.
    :param prior: a module from :mod:`probae.priors` that can be sampled (default
        standard normal).
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param float beta: the KL weight :math:`1 - \alpha` (> 0).
    :param float weight: the MMD weight :math:`\alpha + \lambda - 1` (>= 0).
    :param float kernel_scale: the kernel's C (default :math:`2 d_z`).
    :param tuple hidden: hidden widths of the MLP networks.
    :param encoder: a network returning ``(loc, scale)``; built if None.
    :param decoder: a network returning the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        prior=None,
        likelihood=None,
        beta: float = 1.0,
        weight: float = 100.0,
        kernel_scale: float | None = None,
        hidden=(256, 256),
        encoder=None,
        decoder=None,
    ):
        super().__init__(x_shape, z_dim, prior, likelihood, beta, hidden, encoder, decoder)
        self._set_mmd_options(weight, kernel_scale)

    def guide(self, x, c=None):
        """q(z|x), and in training mode the MMD of the batch's draws to the prior."""
        x = self.check_x(x)
        with pyro.plate("data", x.shape[0]):
            with self._beta_scale():
                z = pyro.sample("z", self.posterior(x))
            if self.training and self.weight > 0:
                self._mmd_factor(z)
            return z

    def extra_repr(self):
        return f"beta={self.beta}, weight={self.weight}, kernel_scale={self.kernel_scale}"
