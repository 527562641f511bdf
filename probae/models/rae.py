r"""The regularized deterministic autoencoder (RAE, Ghosh et al. 2020).

Ghosh et al. read the VAE's noise as a regularizer of the decoder and replace it
with an explicit one: a deterministic encoder, :math:`q(z|x) = \delta(z - f(x))`, a
penalty on the size of the codes, and a smoothness penalty on the decoder :math:`g`;
per point,

.. math:: -\log p(x\,|\,g(f(x))) + \frac\beta2\,\|f(x)\|^2 + \lambda\,\mathcal R(g),

with :math:`\mathcal R` one of

- ``"l2"`` (RAE-L2): :math:`\|\theta_g\|^2`, the squared norm of the decoder's weights;
- ``"gp"`` (RAE-GP): :math:`\|\partial g(z)/\partial z\|_F^2` at :math:`z = f(x)`, a
  gradient penalty computed exactly per point;
- ``"spectral"`` (RAE-SN): no term; every linear and convolutional layer of the decoder
  is spectrally normalized (Miyato et al. 2018), which bounds its Lipschitz constant.

The penalties are ``pyro.factor`` sites of the guide inside the ``"data"`` plate
(``"code_penalty"`` and ``"decoder_penalty"``), so the loss of a batch of n points,
divided by n, is the paper's objective. The code penalty is the negative log-density of
a Gaussian prior :math:`\mathcal N(0, \beta^{-1} I)` less its constant; the model's prior
stays flat, and samples come from a density fitted to the codes after training, as the
paper prescribes (:func:`probae.fit_latent_density`, or ``model.sample(n, sampler=s)``
with :mod:`probae.samplers`).

**References**

[1] `From Variational to Deterministic Autoencoders`, Partha Ghosh, Mehdi S. M.
Sajjadi, Antonio Vergari, Michael Black, Bernhard Schölkopf (ICLR 2020)

[2] `Spectral Normalization for Generative Adversarial Networks`, Takeru Miyato,
Toshiki Kataoka, Masanori Koyama, Yuichi Yoshida (ICLR 2018)
"""

from __future__ import annotations

import pyro
import torch
from torch import nn

from .. import _validate
from .contractive import jacobian_squared_norm
from .deterministic import DeterministicAutoencoder

__all__ = ["RAE"]


class RAE(DeterministicAutoencoder):
    r"""The regularized autoencoder (see the module's docstring): a point-mass guide, the
    code penalty :math:`\frac\beta2\|z\|^2` and a decoder regularization.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param str regularization: ``"l2"``, ``"gp"`` or ``"spectral"``.
    :param float code_weight: :math:`\beta` (>= 0).
    :param float decoder_weight: :math:`\lambda` (>= 0; unused with ``"spectral"``).
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths of the encoder; the decoder mirrors them.
    :param encoder: a module mapping x to its code; built if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    REGULARIZATIONS = ("l2", "gp", "spectral")

    def __init__(
        self,
        x_shape,
        z_dim: int,
        regularization: str = "l2",
        code_weight: float = 1.0,
        decoder_weight: float = 1e-3,
        likelihood=None,
        hidden=(128,),
        encoder=None,
        decoder=None,
    ):
        if regularization not in self.REGULARIZATIONS:
            raise ValueError(
                f"regularization must be one of {list(self.REGULARIZATIONS)}, got "
                f"{regularization!r}"
            )
        super().__init__(x_shape, z_dim, None, likelihood, hidden, None, encoder, decoder)
        self.regularization = regularization
        self.code_weight = _validate.number("code_weight", code_weight, low=0.0)
        self.decoder_weight = _validate.number("decoder_weight", decoder_weight, low=0.0)
        if regularization == "spectral":
            normalized = 0
            for module in self.decoder.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                    nn.utils.parametrizations.spectral_norm(module)
                    normalized += 1
            if not normalized:
                raise ValueError(
                    "regularization='spectral' found no linear or convolutional layer in the "
                    "decoder to normalize"
                )

    def code_penalty(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\frac\beta2\|z_n\|^2` of every code, shape ``(N,)``."""
        return 0.5 * self.code_weight * z.pow(2).sum(-1)

    def decoder_penalty(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\lambda\,\mathcal R(g)` for every code of the batch, shape ``(N,)``:
        :math:`\lambda\|\theta_g\|^2` (the same for all) for ``"l2"``,
        :math:`\lambda\|\partial g(z_n)/\partial z_n\|_F^2` for ``"gp"``."""
        if self.regularization == "gp":
            return self.decoder_weight * jacobian_squared_norm(self.decoder, z, 1)
        squared = sum(p.pow(2).sum() for p in self.decoder.parameters())
        return (self.decoder_weight * squared).expand(z.shape[0])

    def guide_code(self, x):
        z = self.encoder(x)
        # Guide factors enter the ELBO as -log q: a factor of +penalty adds it to the loss.
        if self.code_weight > 0:
            pyro.factor("code_penalty", self.code_penalty(z), has_rsample=True)
        if self.regularization != "spectral" and self.decoder_weight > 0:
            pyro.factor("decoder_penalty", self.decoder_penalty(z), has_rsample=True)
        return z

    def extra_repr(self):
        return (
            f"regularization={self.regularization!r}, code_weight={self.code_weight}, "
            f"decoder_weight={self.decoder_weight}"
        )
