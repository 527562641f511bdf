r"""The vector-quantized variational autoencoder (VQ-VAE) as a Pyro model/guide pair.

An encoder maps x to a grid of vectors :math:`z_e(x) \in \mathbb R^{D \times h \times w}`;
each vector is replaced by its nearest entry of a learned codebook
:math:`e_1, \dots, e_K`,

.. math:: k_{ij}(x) = \arg\min_k \|z_e(x)_{ij} - e_k\|^2, \qquad z_q(x)_{ij} = e_{k_{ij}(x)},

and the decoder reads :math:`z_q`. As a Pyro program the guide is one more
degenerate guide, a point mass at the quantized grid, and the model puts a prior on
the codes::

    # model                                   # guide
    with pyro.plate("data", N):               with pyro.plate("data", N):
        z = pyro.sample("z", CodeGrid(p(k)))      z_e = encoder(x); k = nearest(z_e)
        pyro.sample("x", p(x | z), obs=x)         pyro.factor("vq", codebook + commitment)
                                                  pyro.sample("z", Delta(z_e + sg(z_q - z_e)))

:math:`p(k)` is uniform over the :math:`K^{hw}` grids while the autoencoder trains
(its log-density is the constant :math:`-hw \log K`, the paper's constant KL), and a
learned autoregressive prior (:class:`~probae.models.code_prior.GatedPixelCNN`)
after :func:`fit_code_prior`. The ELBO of a point is then

.. math:: \log p(x) \ge \log p(x \mid z_q(x)) + \log p(k(x)),

which :func:`probae.evaluate.elbo` computes and :func:`probae.evaluate.bits_per_dim`
reports in bits. The value of the Delta is :math:`z_e + \mathrm{sg}(z_q - z_e)`: equal
to :math:`z_q`, with the gradient of the decoder's term passed straight through to
the encoder. While training, the guide adds (as a ``pyro.factor`` whose value
enters the loss with a plus sign)

.. math:: \|\mathrm{sg}(z_e) - z_q\|^2 + \beta\,\|z_e - \mathrm{sg}(z_q)\|^2,

summed over the grid: the codebook term moves the entries toward the encoder
outputs, the commitment term (weight :math:`\beta`, ``commitment``) keeps the
encoder near its entries. With ``ema=True`` the codebook term is replaced by the
exponential moving averages of the paper's appendix, done in the guide while the
module trains: with :math:`n_k` the number of vectors assigned to entry k in a
batch and :math:`s_k` their sum,

.. math:: N_k \leftarrow \gamma N_k + (1-\gamma) n_k, \quad
          m_k \leftarrow \gamma m_k + (1-\gamma) s_k, \quad
          e_k = m_k / \tilde N_k,

with :math:`\tilde N_k = (N_k + \epsilon) / (\sum_j N_j + K\epsilon) \sum_j N_j`
(Laplace smoothing, so an unused entry never divides by zero). A code whose running
count :math:`N_k` falls below ``dead_code_threshold`` is restarted at an encoder
output of the current batch.

**References**

[1] `Neural Discrete Representation Learning`, Aaron van den Oord, Oriol Vinyals,
Koray Kavukcuoglu (NeurIPS 2017)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

from .._common import positive_int, prepare
from .base import Autoencoder
from .code_prior import GatedPixelCNN

__all__ = ["VQVAE", "CodeGrid", "CodebookUsage", "fit_code_prior"]


def _image_shape(x_shape) -> tuple:
    if len(x_shape) == 3:
        return tuple(x_shape)
    if len(x_shape) == 1 and math.isqrt(x_shape[0]) ** 2 == x_shape[0]:
        side = math.isqrt(x_shape[0])
        return (1, side, side)
    raise ValueError(
        f"x_shape must be an image (C, H, W) or a flat square image (H*W,), got {x_shape}"
    )


@dataclass
class CodebookUsage:
    r"""How the codebook is used on some data.

    :ivar torch.Tensor counts: how many grid positions chose each entry, shape ``(K,)``.
    :ivar float perplexity: :math:`\exp(-\sum_k p_k \log p_k)` with :math:`p_k` the
        fraction of positions that chose entry k: K for uniform use, 1 for one code.
    :ivar int used: entries chosen at least once.
    """

    counts: torch.Tensor
    perplexity: float
    used: int


def _perplexity(counts: torch.Tensor) -> torch.Tensor:
    p = counts / counts.sum().clamp_min(1)
    return torch.exp(-torch.xlogy(p, p).sum())


class CodeGrid(dist.TorchDistribution):
    r"""The prior of the ``"z"`` site of a :class:`VQVAE`: a distribution over grids of
    codebook entries, :math:`p(z) = p(k)` where :math:`z_{ij} = e_{k_{ij}}`. Its
    ``log_prob`` reads the indices of a grid of entries (the nearest entry of each
    vector, exact for a grid of entries) and scores them under the code prior
    (uniform when the model has none).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 3)

    def __init__(self, vq, batch_shape=(), validate_args=None):
        self.vq = vq
        event_shape = torch.Size((vq.code_dim, *vq.grid))
        super().__init__(torch.Size(batch_shape), event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return CodeGrid(self.vq, batch_shape)

    def log_prob(self, value):
        codes = self.vq.nearest(value)
        if self.vq.prior is None:
            h, w = self.vq.grid
            log_p = value.new_full(codes.shape[:-2], -h * w * math.log(self.vq.codebook_size))
        else:
            log_p = self.vq.prior.log_prob(codes)
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape
        codes = self.vq.sample_codes(max(1, math.prod(shape)))
        return self.vq.lookup(codes).reshape(*shape, *self.event_shape)


class VQVAE(Autoencoder):
    r"""A VQ-VAE (see the module docstring) on images ``(C, H, W)``, or flat square
    images ``(H*W,)``, with H and W divisible by ``2 ** len(channels)``.

    The encoder is ``len(channels)`` stride-2 convolutions (4x4, ReLU) and a 1x1
    convolution to ``code_dim`` channels, so the code grid is
    ``(H / 2**len(channels), W / 2**len(channels))``; the decoder mirrors it with
    transposed convolutions.

    :param tuple x_shape: shape of one data point.
    :param int code_dim: D, the size of each entry (the command line's ``--z-dim``).
    :param int codebook_size: K, the number of codebook entries.
    :param float commitment: :math:`\beta`, the weight of the commitment term.
    :param bool ema: update the codebook by exponential moving averages (no codebook
        term in the loss) rather than by gradient.
    :param float decay: :math:`\gamma` of the moving averages.
    :param float epsilon: :math:`\epsilon` of the Laplace smoothing of the counts.
    :param float dead_code_threshold: restart entries whose running count per batch
        falls below this (0 never restarts).
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param tuple channels: widths of the convolutions, one per halving of the image.
    :param int prior_channels: channels of the code prior :func:`fit_code_prior` builds.
    :param int prior_layers: gated layers of that prior.
    """

    def __init__(
        self,
        x_shape,
        code_dim: int = 64,
        codebook_size: int = 512,
        commitment: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        dead_code_threshold: float = 0.0,
        likelihood=None,
        channels=(32, 64),
        prior_channels: int = 64,
        prior_layers: int = 5,
    ):
        codebook_size = positive_int("codebook_size", codebook_size)
        code_dim = positive_int("code_dim", code_dim)
        super().__init__(x_shape, code_dim, None, likelihood, beta=1.0)
        self.image_shape = _image_shape(self.x_shape)
        channels = tuple(positive_int("channels", int(c)) for c in channels)
        if not channels:
            raise ValueError("channels must name at least one convolution width")
        C, H, W = self.image_shape
        factor = 2 ** len(channels)
        if H % factor or W % factor:
            raise ValueError(
                f"an image of {H}x{W} cannot be halved {len(channels)} times (channels="
                f"{channels}); use fewer channels entries"
            )
        if not (isinstance(commitment, (int, float)) and commitment >= 0):
            raise ValueError(f"commitment must be a number >= 0, got {commitment!r}")
        if not (isinstance(decay, (int, float)) and 0 < decay < 1):
            raise ValueError(f"decay must lie in (0, 1), got {decay!r}")
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
        if not (isinstance(dead_code_threshold, (int, float)) and dead_code_threshold >= 0):
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold!r}")
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.commitment, self.ema = float(commitment), bool(ema)
        self.decay, self.epsilon = float(decay), float(epsilon)
        self.dead_code_threshold = float(dead_code_threshold)
        self.prior_channels = positive_int("prior_channels", prior_channels)
        self.prior_layers = positive_int("prior_layers", prior_layers)
        self.grid = (H // factor, W // factor)
        self.prior = None  # uniform over the codes until fit_code_prior

        layers, width = [], C
        for c in channels:
            layers += [nn.Conv2d(width, c, 4, stride=2, padding=1), nn.ReLU()]
            width = c
        self.encoder = nn.Sequential(*layers, nn.Conv2d(width, code_dim, 1))
        layers, width = [nn.Conv2d(code_dim, channels[-1], 3, padding=1)], channels[-1]
        for c in (*reversed(channels[:-1]), C):
            layers += [nn.ReLU(), nn.ConvTranspose2d(width, c, 4, stride=2, padding=1)]
            width = c
        self.decoder_net = nn.Sequential(*layers)

        if self.ema:
            codebook = torch.randn(codebook_size, code_dim)
            self.register_buffer("codebook", codebook)
            self.register_buffer("embed_sum", codebook.clone())
        else:
            bound = 1.0 / codebook_size
            self.codebook = nn.Parameter(
                torch.empty(codebook_size, code_dim).uniform_(-bound, bound)
            )
        #: running count per batch of each entry (the EMA's N_k)
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        # Counts of the current epoch of training, read and reset by epoch_metrics.
        self.register_buffer("_epoch_counts", torch.zeros(codebook_size), persistent=False)

    #: :func:`probae.evaluate.bits_per_dim` scores this model through its code prior
    discrete_codes = True

    # -- the quantizer ---------------------------------------------------------------
    def encode_continuous(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`z_e(x)`, shape ``(..., D, h, w)``."""
        batch = x.shape[: x.dim() - len(self.x_shape)]
        z = self.encoder(x.reshape(-1, *self.image_shape))
        return z.reshape(*batch, *z.shape[1:])

    def decoder(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's input from a grid of vectors ``(..., D, h, w)``."""
        batch = z.shape[:-3]
        out = self.decoder_net(z.reshape(-1, *z.shape[-3:]))
        return out.reshape(*batch, *self.x_shape)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        r"""The index of the nearest codebook entry of each vector of a grid
        ``(..., D, h, w)``; shape ``(..., h, w)``."""
        flat = z.movedim(-3, -1)
        book = self.codebook.detach()
        distance = (
            flat.detach().pow(2).sum(-1, keepdim=True)
            - 2 * flat.detach() @ book.t()
            + book.pow(2).sum(-1)
        )
        return distance.argmin(-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The grid of entries ``(..., D, h, w)`` of a grid of indices ``(..., h, w)``."""
        return self.codebook[codes].movedim(-1, -3)

    def quantize(self, z_e: torch.Tensor):
        r"""``(codes, z_q, z_st)``: the indices, the entries, and
        :math:`z_e + \mathrm{sg}(z_q - z_e)` (value :math:`z_q`, gradient to
        :math:`z_e`)."""
        codes = self.nearest(z_e)
        z_q = self.lookup(codes)
        return codes, z_q, z_e + (z_q - z_e).detach()

    def vq_loss(self, z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
        r"""The codebook and commitment terms of each point (summed over the grid),
        :math:`\|\mathrm{sg}(z_e) - z_q\|^2 + \beta\|z_e - \mathrm{sg}(z_q)\|^2`, the
        first left out with ``ema=True``."""
        dims = (-3, -2, -1)
        loss = self.commitment * (z_e - z_q.detach()).pow(2).sum(dims)
        if not self.ema:
            loss = loss + (z_e.detach() - z_q).pow(2).sum(dims)
        return loss

    @torch.no_grad()
    def ema_update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        """One step of the moving averages (module docstring) on a batch, then the
        restart of dead entries."""
        flat = z_e.detach().movedim(-3, -1).reshape(-1, self.code_dim)
        onehot = nn.functional.one_hot(codes.reshape(-1), self.codebook_size).to(flat.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        if self.ema:
            self.embed_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
            total = self.cluster_size.sum()
            smoothed = (
                (self.cluster_size + self.epsilon)
                / (total + self.codebook_size * self.epsilon)
                * total
            )
            self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(-1))
        if self.dead_code_threshold > 0:
            self._restart_dead(flat)

    def _restart_dead(self, flat):
        # Decided on the device for all entries at once: no host synchronization.
        dead = (self.cluster_size < self.dead_code_threshold).unsqueeze(-1)
        rows = torch.randint(flat.shape[0], (self.codebook_size,), device=flat.device)
        fresh = flat[rows]
        self.codebook.data.copy_(torch.where(dead, fresh, self.codebook.data))
        if self.ema:
            self.embed_sum.copy_(torch.where(dead, fresh, self.embed_sum))
        self.cluster_size.copy_(torch.where(dead.squeeze(-1), 1.0, self.cluster_size))

    # -- the Pyro program ------------------------------------------------------------
    def model(self, x=None, c=None):
        r""":math:`p(k)\,p(x|z_q)`; with ``x=None`` it generates."""
        self._no_condition(c)
        n = self._batch_size(x, None)
        with pyro.plate("data", n):
            z = pyro.sample("z", CodeGrid(self, (n,)))
            return pyro.sample("x", self.likelihood(self.decoder(z), len(self.x_shape)), obs=x)

    def guide(self, x, c=None):
        """The point mass at the quantized grid, with the training terms (module
        docstring) and, while training with ``ema=True``, the codebook's update."""
        x = self.check_x(x)
        self._no_condition(c)
        with pyro.plate("data", x.shape[0]):
            z_e = self.encode_continuous(x)
            codes, z_q, z_st = self.quantize(z_e)
            if self.training and torch.is_grad_enabled():
                self._epoch_counts += torch.bincount(
                    codes.reshape(-1), minlength=self.codebook_size
                ).to(self._epoch_counts.dtype)
                self.ema_update(z_e, codes)
                pyro.factor("vq", self.vq_loss(z_e, z_q), has_rsample=True)
            return pyro.sample("z", dist.Delta(z_st, event_dim=3))

    # -- using a trained model -------------------------------------------------------
    def encode(self, x, c=None) -> torch.Tensor:
        """The quantized grid :math:`z_q(x)`, shape ``(N, D, h, w)``."""
        self._no_condition(c)
        return self.lookup(self.nearest(self.encode_continuous(self.check_x(x))))

    @torch.no_grad()
    def code_indices(self, x) -> torch.Tensor:
        """The grid of code indices of each point, shape ``(N, h, w)``."""
        return self.nearest(self.encode_continuous(self.check_x(x.to(self.device))))

    def decode(self, z, c=None) -> torch.Tensor:
        self._no_condition(c)
        return self.likelihood.mean(self.decoder(z))

    def sample_codes(self, n: int) -> torch.Tensor:
        """``n`` grids of indices from the code prior (uniform without one)."""
        if self.prior is None:
            return torch.randint(self.codebook_size, (n, *self.grid), device=self.codebook.device)
        return self.prior.sample(n, self.grid)

    @torch.no_grad()
    def sample(self, n: int, c=None) -> torch.Tensor:
        """``n`` grids of codes drawn from the learned code prior, decoded to E[x|z]."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self._no_condition(c)
        if self.prior is None:
            raise RuntimeError(
                "VQVAE samples through a prior over its code grid, learned after training: "
                "fit one first, probae.fit_code_prior(model, train_data); then "
                "model.sample(n) decodes its draws"
            )
        return self.decode(self.lookup(self.sample_codes(n)))

    @torch.no_grad()
    def codebook_usage(self, data, batch_size: int = 1000) -> CodebookUsage:
        """How often each entry is the nearest on ``data`` (a data set or tensor)."""
        x = prepare(data, self, check_support=False)[0]
        counts = torch.zeros(self.codebook_size, device=x.device)
        for start in range(0, x.shape[0], positive_int("batch_size", batch_size)):
            codes = self.code_indices(x[start : start + batch_size])
            counts += torch.bincount(codes.reshape(-1), minlength=self.codebook_size)
        return CodebookUsage(counts, _perplexity(counts).item(), int((counts > 0).sum()))

    def epoch_metrics(self) -> dict:
        """Codebook perplexity and entries used over the training steps since the last
        call; :func:`probae.fit` records them in ``History.metrics`` every epoch."""
        counts = self._epoch_counts
        metrics = {"perplexity": _perplexity(counts).item(), "codes_used": int((counts > 0).sum())}
        counts.zero_()
        return metrics

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # A fitted code prior is part of the state: make its slot, so that a fresh model
        # loads the state of one that had fit_code_prior run on it.
        if self.prior is None and any(k.startswith("prior.") for k in state_dict):
            self.prior = self._new_prior().to(self.codebook.device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _new_prior(self) -> GatedPixelCNN:
        return GatedPixelCNN(
            self.codebook_size, channels=self.prior_channels, layers=self.prior_layers
        )

    def extra_repr(self):
        return (
            f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, grid={self.grid}, "
            f"ema={self.ema}"
        )


def fit_code_prior(
    vq: VQVAE,
    data,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int | None = None,
) -> GatedPixelCNN:
    r"""Fits the autoregressive prior :math:`p(k)` of a trained :class:`VQVAE` to the
    code grids of ``data`` by maximum likelihood (Adam), and makes it the model's
    prior: afterwards ``vq.sample(n)`` draws codes from it and
    :func:`probae.evaluate.bits_per_dim` scores through it. The autoencoder is left
    as it is.

    :param VQVAE vq: a trained VQ-VAE.
    :param data: a :class:`~probae.data.Dataset` or tensor, encoded as it is (binarize
        it first if the model was trained on binarized data).
    :param int epochs: passes over the codes.
    :param int batch_size: grids per step.
    :param float lr: Adam's learning rate.
    :param int seed: seeds PyTorch before the prior is built.
    :returns: the prior, a :class:`~probae.models.code_prior.GatedPixelCNN`
        (also ``vq.prior``).
    """
    if not isinstance(vq, VQVAE):
        raise TypeError(f"fit_code_prior takes a VQVAE, got {type(vq).__name__}")
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    x = prepare(data, vq, check_support=False)[0]
    was_training = vq.training
    vq.eval()
    codes = torch.cat(
        [vq.code_indices(x[start : start + 1000]) for start in range(0, x.shape[0], 1000)]
    )
    vq.train(was_training)
    if seed is not None:
        torch.manual_seed(seed)
    prior = vq._new_prior().to(x.device)
    optim = torch.optim.Adam(prior.parameters(), lr=lr)
    for _ in range(epochs):
        for rows in torch.randperm(codes.shape[0], device=codes.device).split(batch_size):
            loss = -prior.log_prob(codes[rows]).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
    prior.eval()
    vq.prior = prior
    return prior
