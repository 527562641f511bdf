r"""The contractive autoencoder (:class:`ContractiveAE`): a penalty on the Frobenius
norm of the encoder's Jacobian, in closed form for the one-layer sigmoid encoder and
by ``torch.func`` for any other (:func:`jacobian_squared_norm`). See
:mod:`probae.models.autoencoders` for the whole family of point-mass guides.

**References**

[1] `Contractive Auto-Encoders: Explicit Invariance During Feature Extraction`,
Salah Rifai, Pascal Vincent, Xavier Muller, Xavier Glorot, Yoshua Bengio (ICML 2011)
"""

from __future__ import annotations

import pyro
import torch

from .. import _validate
from .deterministic import CodeEncoder, DeterministicAutoencoder

__all__ = ["ContractiveAE", "jacobian_squared_norm"]


class ContractiveAE(DeterministicAutoencoder):
    r"""The contractive autoencoder (Rifai et al. 2011): a flat prior and the penalty

    .. math:: \lambda\,\Big\|\frac{\partial f(x)}{\partial x}\Big\|_F^2

    on the encoder's Jacobian, added in the guide as a ``pyro.factor`` named
    ``"contraction"`` inside the ``"data"`` plate.

    The Frobenius norm is exact for any encoder: computed with ``torch.func``
    (a reverse-mode Jacobian per point, vectorized over the batch). For the
    one-layer sigmoid encoder :math:`f(x) = \sigma(Wx + b)` (the default,
    ``hidden=()``), it has the closed form

    .. math:: \|J_f(x)\|_F^2 = \sum_j \big(h_j(1 - h_j)\big)^2 \sum_i W_{ji}^2,
              \quad h = f(x),

    which costs one forward pass and is used whenever it applies.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param float weight: :math:`\lambda`.
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths of the encoder (default none: one layer).
    :param str activation: code activation (default sigmoid).
    :param encoder: a module mapping x to its code; built if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    :param str method: ``"auto"`` (closed form where it applies), ``"closed-form"``
        or ``"autograd"``.
    """

    METHODS = ("auto", "closed-form", "autograd")

    def __init__(
        self,
        x_shape,
        z_dim: int,
        weight: float = 0.1,
        likelihood=None,
        hidden=(),
        activation="sigmoid",
        encoder=None,
        decoder=None,
        method: str = "auto",
    ):
        super().__init__(x_shape, z_dim, None, likelihood, hidden, activation, encoder, decoder)
        self.weight = _validate.positive("weight", weight)
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {list(self.METHODS)}, got {method!r}")
        if method == "closed-form" and not self.has_closed_form:
            raise ValueError(
                "method='closed-form' needs the built-in one-layer sigmoid encoder "
                "(hidden=(), activation='sigmoid', encoder=None)"
            )
        self.method = method

    @property
    def has_closed_form(self) -> bool:
        """Whether the encoder is the one-layer sigmoid :math:`\\sigma(Wx + b)`."""
        enc = self.encoder
        return isinstance(enc, CodeEncoder) and not enc.hidden and enc.activation == "sigmoid"

    def _use_closed_form(self, method) -> bool:
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {list(self.METHODS)}, got {method!r}")
        if method == "closed-form" and not self.has_closed_form:
            raise ValueError("method='closed-form' needs the one-layer sigmoid encoder")
        return method == "closed-form" or (method == "auto" and self.has_closed_form)

    def code_and_contraction(self, x: torch.Tensor, method: str | None = None):
        r"""The code :math:`f(x)` and :math:`\|\partial f(x)/\partial x\|_F^2` of each point.

        :param torch.Tensor x: inputs of shape ``(N, *x_shape)``.
        :param str method: overrides the model's ``method`` for this call.
        :returns: ``(z, squared_norm)`` of shapes ``(N, z_dim)`` and ``(N,)``.
        """
        method = self.method if method is None else method
        if self._use_closed_form(method):
            h = self.encoder(x)
            weight = self.encoder.first_layer.weight
            slope = (h * (1 - h)).pow(2)
            return h, slope @ weight.pow(2).sum(-1)
        return self.encoder(x), jacobian_squared_norm(self.encoder, x, len(self.x_shape))

    def contraction(self, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
        r""":math:`\|\partial f(x)/\partial x\|_F^2` for each point, shape ``(N,)``."""
        return self.code_and_contraction(self.check_x(self.to_device(x)), method)[1]

    def guide_code(self, x):
        z, squared_norm = self.code_and_contraction(x)
        # A guide factor enters the ELBO as -log q: a factor of +penalty adds it to the loss.
        pyro.factor("contraction", self.weight * squared_norm, has_rsample=True)
        return z

    def extra_repr(self):
        return f"weight={self.weight}, method={self.method!r}"


def jacobian_squared_norm(encoder, x: torch.Tensor, event_dim: int) -> torch.Tensor:
    r""":math:`\|\partial f(x_n)/\partial x_n\|_F^2` for every point of a batch, exactly,
    by a reverse-mode Jacobian per point vectorized with ``torch.func.vmap``. Gradients
    flow to the encoder's parameters (for training the penalty).

    :param encoder: a module mapping ``(N, *x_shape)`` to ``(N, z_dim)``, each point
        independently of the others.
    :param torch.Tensor x: inputs of shape ``(N, *x_shape)``.
    :param int event_dim: ``len(x_shape)``.
    """

    def one_point(v):
        return encoder(v.unsqueeze(0)).squeeze(0)

    jacobian = torch.func.vmap(torch.func.jacrev(one_point), randomness="different")(x)
    return jacobian.pow(2).reshape(x.shape[0], -1).sum(-1)
