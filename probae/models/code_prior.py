r"""An autoregressive prior over a grid of discrete codes: a small gated PixelCNN.

A VQ-VAE's codes form an ``h x w`` grid of indices :math:`k_{ij} \in \{0..K-1\}`.
Its prior, fitted after the autoencoder as in van den Oord et al. (2017), factorizes
in raster order,

.. math:: p(k) = \prod_{i,j} p(k_{ij} \mid k_{<(i,j)}),

each factor a softmax over the K codes computed by a gated PixelCNN (van den Oord
et al. 2016): a vertical stack that sees the rows above and a horizontal stack that
sees the codes to the left in the current row, joined so that no position is
blind. Because every factor is normalized and sees only earlier positions,
:math:`\sum_k p(k) = 1` over all :math:`K^{hw}` grids.

**References**

[1] `Conditional Image Generation with PixelCNN Decoders`, Aaron van den Oord,
Nal Kalchbrenner, Oriol Vinyals, Lasse Espeholt, Alex Graves, Koray Kavukcuoglu
(NeurIPS 2016)

[2] `Neural Discrete Representation Learning`, Aaron van den Oord, Oriol Vinyals,
Koray Kavukcuoglu (NeurIPS 2017)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .._config import Configurable

__all__ = ["GatedPixelCNN"]


class _MaskedConv(nn.Conv2d):
    """A convolution whose kernel is multiplied by a fixed 0/1 mask."""

    def __init__(self, in_ch, out_ch, kernel, mask):
        kh, kw = kernel
        super().__init__(in_ch, out_ch, kernel, padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask.reshape(1, 1, kh, kw).to(self.weight.dtype))

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def _vertical_mask(k):
    mask = torch.ones(k, k)
    mask[k // 2 + 1 :] = 0  # rows at and above the centre only
    return mask


def _horizontal_mask(k, include_centre):
    mask = torch.ones(1, k)
    mask[0, k // 2 + (1 if include_centre else 0) :] = 0
    return mask


def _gate(h):
    a, b = h.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class _GatedLayer(nn.Module):
    def __init__(self, channels, kernel, first):
        super().__init__()
        self.first = first
        self.vertical = _MaskedConv(
            channels, 2 * channels, (kernel, kernel), _vertical_mask(kernel)
        )
        self.horizontal = _MaskedConv(
            channels, 2 * channels, (1, kernel), _horizontal_mask(kernel, not first)
        )
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, v, h):
        v_pre = self.vertical(v)
        # Shifted down one row, the vertical stack holds only rows strictly above.
        shifted = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1, :]
        h_new = self.out(_gate(self.horizontal(h) + self.link(shifted)))
        return _gate(v_pre), h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module, Configurable):
    r"""An autoregressive distribution over ``h x w`` grids of code indices in
    ``{0, ..., K-1}`` (see the module docstring).

    :param int codebook_size: K, the number of codes.
    :param int channels: feature channels of the stacks.
    :param int layers: gated layers (the first masks out the centre).
    :param int kernel: odd kernel size of the stacks.
    """

    def __init__(self, codebook_size: int, channels: int = 64, layers: int = 5, kernel: int = 3):
        super().__init__()
        for name, value in (("codebook_size", codebook_size), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive integer, got {layers!r}")
        if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd positive integer, got {kernel!r}")
        self.codebook_size = codebook_size
        self.embedding = nn.Embedding(codebook_size, channels)
        self.layers = nn.ModuleList(
            _GatedLayer(channels, kernel, first=(i == 0)) for i in range(layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, codebook_size, 1),
        )

    def _check(self, codes):
        if not isinstance(codes, torch.Tensor) or codes.dtype not in (torch.int64, torch.int32):
            raise TypeError("codes must be an integer tensor of code indices")
        if codes.dim() < 2:
            raise ValueError(f"codes must have shape (..., h, w), got {tuple(codes.shape)}")

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """The logits of :math:`p(k_{ij} | k_{<(i,j)})`, shape ``(..., K, h, w)``."""
        self._check(codes)
        batch, grid = codes.shape[:-2], codes.shape[-2:]
        x = self.embedding(codes.reshape(-1, *grid).long()).permute(0, 3, 1, 2)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h).reshape(*batch, self.codebook_size, *grid)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(k)` of each grid, shape ``codes.shape[:-2]``."""
        log_p = self.logits(codes).log_softmax(-3)
        picked = log_p.gather(-3, codes.long().unsqueeze(-3)).squeeze(-3)
        return picked.sum((-2, -1))

    @torch.no_grad()
    def sample(self, n: int, grid) -> torch.Tensor:
        """``n`` grids drawn position by position in raster order, shape ``(n, h, w)``."""
        h, w = grid
        anchor = self.embedding.weight
        codes = torch.zeros(n, h, w, dtype=torch.long, device=anchor.device)
        for i in range(h):
            for j in range(w):
                logits = self.logits(codes)[:, :, i, j]
                codes[:, i, j] = torch.distributions.Categorical(logits=logits).sample()
        return codes
