r"""DRAW, the Deep Recurrent Attentive Writer, as a Pyro model/guide pair.

An image is drawn on a canvas :math:`c` in T steps. The model, one latent
:math:`z_t \sim \mathcal N(0, I)` per step under ``pyro.markov``::

    with pyro.plate("data", N):
        for t in pyro.markov(range(T)):
            z_t = pyro.sample(f"z_{t+1}", Normal(0, I))
            h_dec = LSTM_dec(h_dec, z_t)
            c = c + write(h_dec)
        pyro.sample("x", p(x | c), obs=x)

and the guide, which reads the image through the same decoder state:

.. math::

    \hat x_t = x - \mathbb E[x \mid c_{t-1}], \quad
    r_t = \mathrm{read}(x, \hat x_t, h^{dec}_{t-1}), \quad
    h^{enc}_t = \mathrm{LSTM}_{enc}(h^{enc}_{t-1}, [r_t, h^{dec}_{t-1}]), \quad
    z_t \sim \mathcal N(\mu(h^{enc}_t), \sigma(h^{enc}_t)),

followed by the decoder's step as in the model. All T sites enter one importance
weight :math:`p(x, z_{1:T}) / q(z_{1:T}|x)`, so :func:`probae.fit` and
:func:`probae.evaluate.log_likelihood` serve DRAW as any other pair, and the KL
term is the sum of the per-step KLs (:meth:`DRAW.step_kls`).

Without attention, read is :math:`[x, \hat x_t]` and write a linear map of
:math:`h^{dec}_t` to the whole canvas. With attention, a linear map of
:math:`h^{dec}` gives :math:`(\tilde g_X, \tilde g_Y, \log\sigma^2, \log\tilde\delta,
\log\gamma)`, and an :math:`N \times N` grid of Gaussian filters (:func:`filterbank`)
is placed on the :math:`B \times A` image, with pixels and filters counted from 1:

.. math::

    g_X = \tfrac{A+1}{2}(\tilde g_X + 1), \quad g_Y = \tfrac{B+1}{2}(\tilde g_Y + 1),
    \quad \delta = \tfrac{\max(A, B) - 1}{N - 1}\,\tilde\delta,

    \mu_X^i = g_X + (i - N/2 - 1/2)\,\delta, \quad
    F_X[i, a] = \frac{1}{Z_X^i} \exp\Big(-\frac{(a - \mu_X^i)^2}{2\sigma^2}\Big),

likewise :math:`F_Y`; then :math:`\mathrm{read} = \gamma\,[F_Y x F_X^\top,
F_Y \hat x F_X^\top]` and :math:`\mathrm{write} = \frac{1}{\hat\gamma} \hat F_Y^\top w\,
\hat F_X` with :math:`w` a linear map of :math:`h^{dec}` to an
:math:`N \times N` patch.

**References**

[1] `DRAW: A Recurrent Neural Network For Image Generation`, Karol Gregor, Ivo
Danihelka, Alex Graves, Danilo Jimenez Rezende, Daan Wierstra (ICML 2015)
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .._common import positive_int
from .base import Autoencoder
from .vqvae import _image_shape

__all__ = ["DRAW", "filterbank"]

#: added to the filters' normalizers so that a filter far off the image does not divide by 0
_FILTER_EPS = 1e-8


def filterbank(g_x, g_y, log_var, delta, image_size, patch: int):
    r"""The Gaussian filterbanks :math:`F_X` (shape ``(..., N, A)``) and :math:`F_Y`
    (``(..., N, B)``) of the module docstring, from the centre :math:`(g_X, g_Y)` in
    pixel coordinates (counted from 1), the log-variance and the stride
    :math:`\delta`, each of shape ``(...)``.

    :param tuple image_size: ``(B, A)``, the image's height and width.
    :param int patch: N, the filters per axis.
    """
    B, A = image_size
    i = torch.arange(1, patch + 1, dtype=g_x.dtype, device=g_x.device)
    offsets = (i - patch / 2 - 0.5) * delta.unsqueeze(-1)
    mu_x = g_x.unsqueeze(-1) + offsets
    mu_y = g_y.unsqueeze(-1) + offsets
    var = log_var.exp().unsqueeze(-1).unsqueeze(-1)
    a = torch.arange(1, A + 1, dtype=g_x.dtype, device=g_x.device)
    b = torch.arange(1, B + 1, dtype=g_x.dtype, device=g_x.device)
    f_x = torch.exp(-((a - mu_x.unsqueeze(-1)) ** 2) / (2 * var))
    f_y = torch.exp(-((b - mu_y.unsqueeze(-1)) ** 2) / (2 * var))
    f_x = f_x / (f_x.sum(-1, keepdim=True) + _FILTER_EPS)
    f_y = f_y / (f_y.sum(-1, keepdim=True) + _FILTER_EPS)
    return f_x, f_y


def _cell(cell: nn.LSTMCell, inputs: torch.Tensor, state):
    """One LSTM step on any leading batch dimensions (particles, samples, points)."""
    h, c = state
    batch = torch.broadcast_shapes(inputs.shape[:-1], h.shape[:-1])
    inputs = inputs.expand(*batch, inputs.shape[-1]).reshape(-1, inputs.shape[-1])
    h = h.expand(*batch, h.shape[-1]).reshape(-1, h.shape[-1])
    c = c.expand(*batch, c.shape[-1]).reshape(-1, c.shape[-1])
    h, c = cell(inputs, (h, c))
    return h.reshape(*batch, -1), c.reshape(*batch, -1)


class DRAW(Autoencoder):
    r"""DRAW (see the module docstring) on images ``(C, H, W)`` or flat square
    images ``(H*W,)``; the filters of a coloured image are shared by its channels.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: size of each step's latent :math:`z_t`.
    :param int steps: T, the number of steps.
    :param tuple read: ``(N, N)``, the read window (attention only).
    :param tuple write: ``(N, N)``, the write patch (attention only).
    :param bool attention: Gaussian filterbank attention, or read and write whole images.
    :param int encoder_size: hidden units of the encoder LSTM.
    :param int decoder_size: hidden units of the decoder LSTM.
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param float beta: weight of the KL terms.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int = 10,
        steps: int = 16,
        read=(2, 2),
        write=(5, 5),
        attention: bool = True,
        encoder_size: int = 256,
        decoder_size: int = 256,
        likelihood=None,
        beta: float = 1.0,
    ):
        super().__init__(x_shape, z_dim, None, likelihood, beta)
        self.image_shape = _image_shape(self.x_shape)
        self.steps = positive_int("steps", steps)
        self.encoder_size = positive_int("encoder_size", encoder_size)
        self.decoder_size = positive_int("decoder_size", decoder_size)
        self.attention = bool(attention)
        self.read_size = self._window("read", read)
        self.write_size = self._window("write", write)
        C, H, W = self.image_shape
        read_dim = 2 * C * self.read_size**2 if self.attention else 2 * C * H * W
        write_dim = C * self.write_size**2 if self.attention else C * H * W
        self.encoder_cell = nn.LSTMCell(read_dim + self.decoder_size, self.encoder_size)
        self.posterior_net = nn.Linear(self.encoder_size, 2 * z_dim)
        self.decoder_cell = nn.LSTMCell(z_dim, self.decoder_size)
        self.write_net = nn.Linear(self.decoder_size, write_dim)
        if self.attention:
            self.read_attention = nn.Linear(self.decoder_size, 5)
            self.write_attention = nn.Linear(self.decoder_size, 5)

    @staticmethod
    def _window(name, value) -> int:
        try:
            n, m = (int(v) for v in value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a pair (N, N), got {value!r}") from None
        if n != m or n < 1:
            raise ValueError(f"{name} must be a square window (N, N) with N >= 1, got {value!r}")
        return n

    # -- attention -------------------------------------------------------------------
    def attention_parameters(self, linear: nn.Linear, h_dec: torch.Tensor, patch: int):
        r"""The filterbanks and the intensity :math:`\gamma` a decoder state sets."""
        _, B, A = self.image_shape
        g_x, g_y, log_var, log_delta, log_gamma = linear(h_dec).unbind(-1)
        g_x = (A + 1) / 2 * (g_x + 1)
        g_y = (B + 1) / 2 * (g_y + 1)
        delta = (max(A, B) - 1) / max(patch - 1, 1) * log_delta.exp()
        f_x, f_y = filterbank(g_x, g_y, log_var, delta, (B, A), patch)
        return f_x, f_y, log_gamma.exp()

    @staticmethod
    def glimpse(image, f_x, f_y, gamma):
        r""":math:`\gamma F_Y x F_X^\top` per channel: ``(..., C, B, A) -> (..., C, N, N)``."""
        out = f_y.unsqueeze(-3) @ image @ f_x.unsqueeze(-3).transpose(-1, -2)
        return gamma[..., None, None, None] * out

    def _image(self, x):
        return x.reshape(*x.shape[: x.dim() - len(self.x_shape)], *self.image_shape)

    def read(self, x, x_hat, h_dec):
        """The encoder's input of a step: the glimpses of x and of the error image."""
        x, x_hat = self._image(x), self._image(x_hat)
        if not self.attention:
            both = torch.cat(torch.broadcast_tensors(x, x_hat), dim=-3)
            return both.reshape(*both.shape[:-3], -1)
        f_x, f_y, gamma = self.attention_parameters(self.read_attention, h_dec, self.read_size)
        glimpses = [self.glimpse(v, f_x, f_y, gamma) for v in (x, x_hat)]
        both = torch.cat(torch.broadcast_tensors(*glimpses), dim=-3)
        return both.reshape(*both.shape[:-3], -1)

    def write(self, h_dec):
        """What a step adds to the canvas, shape ``(..., C, H, W)``."""
        C, H, W = self.image_shape
        w = self.write_net(h_dec)
        if not self.attention:
            return w.reshape(*w.shape[:-1], C, H, W)
        n = self.write_size
        f_x, f_y, gamma = self.attention_parameters(self.write_attention, h_dec, n)
        patch = w.reshape(*w.shape[:-1], C, n, n)
        out = f_y.transpose(-1, -2).unsqueeze(-3) @ patch @ f_x.unsqueeze(-3)
        return out / gamma[..., None, None, None]

    # -- the Pyro program ------------------------------------------------------------
    def _start(self, like: torch.Tensor, n: int):
        zeros = like.new_zeros
        return (
            (zeros(n, self.decoder_size), zeros(n, self.decoder_size)),
            zeros(n, *self.image_shape),
        )

    def _step_prior(self, n):
        return self.prior((n,))

    def _output(self, canvas):
        return canvas.reshape(*canvas.shape[:-3], *self.x_shape)

    def model(self, x=None, c=None):
        r""":math:`\prod_t p(z_t)\; p(x \mid c_T)`; with ``x=None`` it generates."""
        self._no_condition(c)
        n = self._batch_size(x, None)
        anchor = self.write_net.weight
        dec, canvas = self._start(anchor, n)
        with pyro.plate("data", n):
            for t in pyro.markov(range(self.steps)):
                with self._beta_scale():
                    z = pyro.sample(f"z_{t + 1}", self._step_prior(n))
                dec = _cell(self.decoder_cell, z, dec)
                canvas = canvas + self.write(dec[0])
            out = self._output(canvas)
            return pyro.sample("x", self.likelihood(out, len(self.x_shape)), obs=x)

    def guide(self, x, c=None):
        """The recurrent recognition model :math:`\\prod_t q(z_t | x, z_{<t})`."""
        x = self.check_x(x)
        self._no_condition(c)
        n = x.shape[0]
        with pyro.plate("data", n):
            steps = list(self._infer(x, sample=True))
        return steps[-1][1]

    def _infer(self, x, sample: bool):
        """Runs the guide's recurrence; yields ``(t, z_t, q(z_t|...))``. With
        ``sample=False`` it follows the posterior means without Pyro sites."""
        n = x.shape[0]
        dec, canvas = self._start(x, n)
        enc = (x.new_zeros(n, self.encoder_size), x.new_zeros(n, self.encoder_size))
        for t in pyro.markov(range(self.steps)):
            x_hat = x - self._image_to_x(self.likelihood.mean(canvas))
            enc_in = torch.cat(self._broadcast(self.read(x, x_hat, dec[0]), dec[0]), -1)
            enc = _cell(self.encoder_cell, enc_in, enc)
            q = self.posterior(enc[0])
            if sample:
                with self._beta_scale():
                    z = pyro.sample(f"z_{t + 1}", q)
            else:
                z = q.mean
            yield t, z, q
            dec = _cell(self.decoder_cell, z, dec)
            canvas = canvas + self.write(dec[0])

    @staticmethod
    def _broadcast(a, b):
        batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
        return a.expand(*batch, a.shape[-1]), b.expand(*batch, b.shape[-1])

    def _image_to_x(self, image):
        return image.reshape(*image.shape[:-3], *self.x_shape)

    def posterior(self, h_enc) -> dist.TorchDistribution:
        r""":math:`q(z_t | \ldots) = \mathcal N(\mu(h^{enc}_t), \sigma(h^{enc}_t))`."""
        loc, raw = self.posterior_net(h_enc).chunk(2, -1)
        return dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1)

    # -- using a trained model -------------------------------------------------------
    def step_kls(self, x) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q(z_t | x, z_{<t}) \,\|\, p(z_t))` of each step, along one
        draw of :math:`z_{1:T}` from the guide; shape ``(N, T)`` (or with the batch
        dimensions of enclosing plates). Their sum over t is the KL term of the ELBO
        for that draw, and its average over draws the KL of the whole sequence,
        :math:`\mathrm{KL}(q(z_{1:T}|x) \,\|\, p(z_{1:T}))`."""
        x = self.check_x(x)
        kls = []
        with pyro.plate("data", x.shape[0]):
            for _, _, q in self._infer(x, sample=True):
                p = self._step_prior(x.shape[0])
                kls.append(torch.distributions.kl_divergence(q, p))
        return torch.stack(torch.broadcast_tensors(*kls), -1)

    def encode(self, x, c=None) -> torch.Tensor:
        """The posterior means of :math:`z_1, \\dots, z_T` along the path of means,
        concatenated: shape ``(N, T * z_dim)``."""
        self._no_condition(c)
        return torch.cat([z for _, z, _ in self._infer(self.check_x(x), sample=False)], -1)

    def canvases(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathbb E[x \mid c_t]` after every step for codes ``(N, T * z_dim)``;
        shape ``(T, N, *x_shape)``."""
        if z.shape[-1] != self.steps * self.z_dim:
            raise ValueError(
                f"z must have {self.steps} * {self.z_dim} = {self.steps * self.z_dim} columns "
                f"(one z_t per step), got {z.shape[-1]}"
            )
        n = z.shape[0]
        dec, canvas = self._start(z, n)
        out = []
        for z_t in z.split(self.z_dim, -1):
            dec = _cell(self.decoder_cell, z_t, dec)
            canvas = canvas + self.write(dec[0])
            out.append(self.likelihood.mean(self._output(canvas)))
        return torch.stack(out)

    def decode(self, z, c=None) -> torch.Tensor:
        """E[x | c_T] for codes ``(N, T * z_dim)``."""
        self._no_condition(c)
        return self.canvases(z)[-1]

    @torch.no_grad()
    def sample(self, n: int, c=None) -> torch.Tensor:
        """``n`` images drawn step by step from the prior, as E[x | c_T]."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self._no_condition(c)
        z = self._step_prior(n).sample((self.steps,))
        return self.decode(z.transpose(0, 1).reshape(n, -1))

    def extra_repr(self):
        window = f", read={self.read_size}, write={self.write_size}" if self.attention else ""
        return f"steps={self.steps}, z_dim={self.z_dim}, attention={self.attention}{window}"
