r"""The sparse autoencoders: a penalty on the code (:class:`SparseAE`, L1 as a
Laplace prior or the KL divergence of mean activations), or only the :math:`k`
largest code units kept (:class:`KSparseAE`, with its tied decoder
:class:`TiedDecoder`). See :mod:`probae.models.autoencoders` for the whole family of
point-mass guides.

**References**

[1] `Sparse autoencoder`, Andrew Ng, CS294A lecture notes (Stanford 2011);
`Deep Learning`, Ian Goodfellow, Yoshua Bengio, Aaron Courville, ch. 14 (MIT Press 2016)

[2] `k-Sparse Autoencoders`, Alireza Makhzani, Brendan Frey (ICLR 2014, arXiv 2013)
"""

from __future__ import annotations

import math

import pyro
import torch
from torch import nn

from .. import _validate
from .. import priors as _priors
from .deterministic import DeterministicAutoencoder

__all__ = ["KSparseAE", "SparseAE", "TiedDecoder", "top_k"]


class SparseAE(DeterministicAutoencoder):
    r"""The sparse autoencoder, with one of two penalties on the code :math:`z = f(x)`.

    ``penalty="l1"``: a factorized Laplace prior of scale :math:`1/\lambda`, whose
    negative log-density is the L1 penalty of sparse coding (Goodfellow et al. ch. 14),

    .. math:: -\log p(z) = \lambda\|z\|_1 + D\log(2/\lambda).

    The code activation defaults to ReLU, so inactive units are exactly zero.

    ``penalty="kl"``: sigmoid codes whose average activation over the batch,
    :math:`\hat\rho_j = \frac1N\sum_n z_{nj}`, is pulled towards a small target
    :math:`\rho` (Ng's CS294A notes), with the flat prior and the extra term

    .. math:: \beta \sum_j \mathrm{KL}(\rho\,\|\,\hat\rho_j), \quad
              \mathrm{KL}(\rho\|\hat\rho) = \rho\log\frac{\rho}{\hat\rho}
              + (1-\rho)\log\frac{1-\rho}{1-\hat\rho}.

    This is a property of the batch, not of a point. It enters the guide as a
    ``pyro.factor`` named ``"sparsity"`` inside the ``"data"`` plate, spread evenly
    over the batch's points (each carries :math:`1/N` of it), so that the plate's
    sum is the batch penalty and per-point estimators still apply; the value a point
    gets depends on the batch it is evaluated with.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param str penalty: ``"l1"`` or ``"kl"``.
    :param float weight: :math:`\lambda` for ``"l1"`` (default 0.1), :math:`\beta`
        for ``"kl"`` (default 3).
    :param float rho: the target mean activation of ``"kl"``.
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths of the encoder; the decoder mirrors them.
    :param str activation: code activation (``"l1"``: default ReLU; ``"kl"``: sigmoid,
        the only one allowed).
    :param encoder: a module mapping x to its code; built if None (with ``"kl"`` its
        output must lie in (0, 1)).
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    PENALTIES = ("l1", "kl")

    def __init__(
        self,
        x_shape,
        z_dim: int,
        penalty: str = "l1",
        weight: float | None = None,
        rho: float = 0.05,
        likelihood=None,
        hidden=(128,),
        activation="default",
        encoder=None,
        decoder=None,
    ):
        if penalty not in self.PENALTIES:
            raise ValueError(f"penalty must be one of {list(self.PENALTIES)}, got {penalty!r}")
        weight = (0.1 if penalty == "l1" else 3.0) if weight is None else weight
        weight = _validate.positive("weight", weight)
        if penalty == "l1":
            activation = "relu" if activation == "default" else activation
            prior = _priors.Laplace(z_dim, scale=1.0 / weight)
        else:
            if activation not in ("default", "sigmoid"):
                raise ValueError(
                    f"penalty='kl' needs sigmoid codes (mean activations in (0, 1)); "
                    f"got activation={activation!r}"
                )
            activation = "sigmoid"
            rho = _validate.number("rho", rho, 0, 1, low_open=True, high_open=True)
            prior = None
        super().__init__(x_shape, z_dim, prior, likelihood, hidden, activation, encoder, decoder)
        self.penalty = penalty
        self.weight = weight
        self.rho = float(rho)

    def sparsity_penalty(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\beta\sum_j \mathrm{KL}(\rho\|\hat\rho_j)` for a batch of sigmoid codes
        ``z`` of shape ``(N, z_dim)`` (``penalty="kl"``), :math:`\hat\rho` their mean."""
        rho_hat = z.mean(0)
        # A saturated sigmoid can round to exactly 0 or 1; keep the logarithms finite.
        eps = torch.finfo(z.dtype).eps
        rho_hat = rho_hat.clamp(eps, 1 - eps)
        rho = self.rho
        kl = rho * (math.log(rho) - rho_hat.log()) + (1 - rho) * (
            math.log(1 - rho) - (1 - rho_hat).log()
        )
        return self.weight * kl.sum(-1)

    def guide_code(self, x):
        z = self.encoder(x)
        if self.penalty == "kl":
            n = z.shape[0]
            share = (self.sparsity_penalty(z) / n).expand(n)
            # A guide factor enters the ELBO as -log q: a factor of +share adds it to the loss.
            pyro.factor("sparsity", share, has_rsample=True)
        return z

    def extra_repr(self):
        rho = f", rho={self.rho}" if self.penalty == "kl" else ""
        return f"penalty={self.penalty!r}, weight={self.weight}{rho}"


def top_k(h: torch.Tensor, k: int) -> torch.Tensor:
    """Keeps the ``k`` largest entries of the last dimension of ``h`` and zeroes the
    rest. The result is ``h`` times a 0/1 mask, so gradients reach the kept entries
    only."""
    index = h.topk(k, dim=-1).indices
    mask = torch.zeros_like(h).scatter_(-1, index, 1.0)
    return h * mask


class TiedDecoder(nn.Module):
    r"""A linear decoder whose weights are the transpose of a linear encoder layer's,
    :math:`g(z) = W^\top z + c` for an encoder :math:`f(x) = Wx + b` (tied weights, as in
    Makhzani & Frey's k-sparse autoencoder). Only the bias :math:`c` is its own
    parameter; :math:`W` stays the encoder's, so the pair is trained as one matrix.

    :param torch.nn.Linear layer: the encoder's linear layer (z_dim x D).
    :param tuple x_shape: shape of one data point.
    """

    def __init__(self, layer: nn.Linear, x_shape):
        super().__init__()
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"layer must be a torch.nn.Linear, got {type(layer).__name__}")
        self.x_shape = tuple(x_shape)
        if math.prod(self.x_shape) != layer.in_features:
            raise ValueError(
                f"x_shape={self.x_shape} does not match the layer's {layer.in_features} inputs"
            )
        # A tuple keeps the shared layer out of this module's state_dict (it is saved
        # once, under the encoder).
        self._layer = (layer,)
        self.bias = nn.Parameter(torch.zeros(layer.in_features))

    @property
    def weight(self) -> torch.Tensor:
        return self._layer[0].weight

    def forward(self, z):
        out = torch.nn.functional.linear(z, self.weight.t(), self.bias)
        return out.reshape(*out.shape[:-1], *self.x_shape)


class KSparseAE(DeterministicAutoencoder):
    r"""The k-sparse autoencoder (Makhzani & Frey 2013): a linear code
    :math:`h = Wx + b` of which only the :math:`k` largest units are kept,

    .. math:: q(z|x) = \delta\big(z - \mathrm{top}_k(Wx + b)\big),

    with a flat prior and, by default, the tied linear decoder :math:`g(z) = W^\top z + c`
    (:class:`TiedDecoder`). Gradients flow through the kept units only. For features
    (:meth:`encode`) the paper keeps the :math:`\alpha k` largest units
    (:math:`\alpha \ge 1`); :meth:`reconstruct` uses the same :meth:`encode`.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size (number of hidden units).
    :param int k: units kept in training.
    :param float alpha: :meth:`encode` keeps ``min(z_dim, round(alpha * k))`` units.
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths before the linear code (default none).
    :param bool tied: decode with the transpose of the encoder's weights (needs the
        built-in one-layer encoder, ``hidden=()``); False for a decoder of its own
        mirroring ``hidden``. Default: tied wherever it applies.
    :param encoder: a module mapping x to the code before selection; built if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        k: int = 10,
        alpha: float = 1.0,
        likelihood=None,
        hidden=(),
        tied: bool | None = None,
        encoder=None,
        decoder=None,
    ):
        z_dim = _validate.integer("z_dim", z_dim, minimum=1)
        hidden = _validate.widths("hidden", hidden)
        can_tie = not tuple(hidden) and encoder is None and decoder is None
        tied = can_tie if tied is None else _validate.boolean("tied", tied)
        k = _validate.integer("k", k) if not isinstance(k, bool) else k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= z_dim:
            raise ValueError(f"k must be an integer in [1, z_dim={z_dim}], got {k!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 1:
            raise ValueError(f"alpha must be a number >= 1, got {alpha!r}")
        if tied and not can_tie:
            raise ValueError(
                "tied=True needs the built-in one-layer encoder and decoder (hidden=(), "
                "encoder=None, decoder=None); pass tied=False otherwise"
            )
        super().__init__(x_shape, z_dim, None, likelihood, hidden, None, encoder, decoder)
        if tied:
            self.decoder = TiedDecoder(self.encoder.first_layer, self.x_shape)
        self.k = k
        self.alpha = float(alpha)
        self.tied = bool(tied)

    @property
    def encode_k(self) -> int:
        return min(self.z_dim, round(self.alpha * self.k))

    def guide_code(self, x):
        return top_k(self.encoder(x), self.k)

    def encode(self, x, c=None):
        self._no_condition(c)
        return top_k(self.encoder(self.check_x(self.to_device(x))), self.encode_k)

    def extra_repr(self):
        return f"k={self.k}, alpha={self.alpha}, tied={self.tied}"
