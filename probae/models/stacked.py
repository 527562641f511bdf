r"""The stacked denoising autoencoder (Vincent et al. 2010): denoising autoencoders
trained one layer at a time, each on the clean codes of the layer below, then used
(and trained end to end) as one deep denoising autoencoder.

Layer :math:`k` is a one-layer :class:`~probae.DenoisingAE` on the code
:math:`h_{k-1}` of the layer below (:math:`h_0 = x`): its guide corrupts its input,
:math:`\tilde h_{k-1} \sim C(\cdot\,|\,h_{k-1})`, and puts its point mass at
:math:`f_k(\tilde h_{k-1}) = s(W_k \tilde h_{k-1} + b_k)`; its model scores the clean
:math:`h_{k-1}` under :math:`p_k(h_{k-1}\,|\,g_k(z))`. The greedy phase
(:meth:`StackedDenoisingAE.pretrain`, :func:`probae.stacking.pretrain`) minimizes, for :math:`k = 1, \dots, L` in turn,

.. math::

    \mathcal J_k = \mathbb E_{\tilde h_{k-1} \sim C(\cdot|h_{k-1})}
        \big[-\log p_k\big(h_{k-1}\,\big|\,g_k(f_k(\tilde h_{k-1}))\big)\big],
    \qquad h_k = f_k(h_{k-1}) \text{ (clean)},

with the layers below frozen. The whole stack is then itself a denoising
autoencoder (a Pyro pair with the same sites ``"data"``, ``"z"``, ``"x"`` and
``"x_tilde"``): the encoder :math:`F = f_L \circ \dots \circ f_1` sees the corrupted
input, the decoder maps the top code back down, each layer handing the mean of its
code likelihood to the one below,

.. math::

    G(z) = g_1\big(\mu_2(g_2(\cdots \mu_L(g_L(z))))\big), \qquad
    -\mathcal L(x) = -\log p_1\big(x\,\big|\,G(F(\tilde x))\big),\quad
    \tilde x \sim C(\cdot|x),

where :math:`\mu_k` is the mean of layer :math:`k`'s likelihood (the identity for the
default Gaussian code likelihood). :func:`probae.fit` trains it end
to end like any other model, and :meth:`~StackedDenoisingAE.encode` gives the top
code :math:`F(x)` of the clean input.

**References**

[1] `Stacked Denoising Autoencoders: Learning Useful Representations in a Deep Network
with a Local Denoising Criterion`, Pascal Vincent, Hugo Larochelle, Isabelle Lajoie,
Yoshua Bengio, Pierre-Antoine Manzagol (JMLR 11, 2010)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import _validate
from .. import corruption as _corruption
from .. import likelihoods as _likelihoods
from .._common import prepare
from .autoencoders import DenoisingAE

__all__ = ["StackedDenoisingAE", "StackedDecoder", "StackedEncoder"]

#: greedy layer-wise training, :func:`probae.stacking.pretrain`: set by ``import probae``,
#: so that the model families import no trainer
GREEDY_TRAINING: list = []


class StackedEncoder(nn.Module):
    r"""The deep encoder :math:`F = f_L \circ \dots \circ f_1` of a stack of
    autoencoders. It holds no weights of its own: the layers' encoders are referred
    to, not registered, so the stack's ``state_dict`` keeps each weight once (under
    its layer).

    :param layers: the stack's layers (autoencoders with an ``encoder``).
    """

    def __init__(self, layers):
        super().__init__()
        self._layers = tuple(layers)

    @property
    def first_layer(self) -> nn.Linear:
        """The linear layer applied to the input (its rows are the first-layer filters)."""
        return self._layers[0].encoder.first_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self._layers:
            h = layer.encoder(h)
        return h


class StackedDecoder(nn.Module):
    r"""The deep decoder :math:`G(z) = g_1(\mu_2(g_2(\cdots \mu_L(g_L(z)))))` of a stack
    of autoencoders: each layer's decoder output goes through the mean :math:`\mu_k`
    of that layer's likelihood, the reconstruction of the code below, before the next
    decoder down. The output is the first layer's likelihood input. Like
    :class:`StackedEncoder` it refers to the layers' weights without holding them.

    :param layers: the stack's layers (autoencoders with a ``decoder`` and a
        ``likelihood``).
    """

    def __init__(self, layers):
        super().__init__()
        self._layers = tuple(layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        top = len(self._layers) - 1
        out = z
        for k in reversed(range(top + 1)):
            if k < top:  # the reconstruction of layer k's code, as layer k + 1 models it
                out = self._layers[k + 1].likelihood.mean(out)
            out = self._layers[k].decoder(out)
        return out


class StackedDenoisingAE(DenoisingAE):
    r"""The stacked denoising autoencoder (Vincent et al. 2010).

    A stack of one-layer :class:`~probae.DenoisingAE` s (``self.layers``), layer
    :math:`k` of width ``layers[k]`` on the code of layer :math:`k-1`. Train it greedily
    with :meth:`pretrain`, then end to end with :func:`probae.fit` as the deep
    denoising autoencoder described in :mod:`probae.models.stacked`;
    :meth:`encode` gives the top code of the clean input::

        sdae = StackedDenoisingAE(x_shape=(784,), layers=(500, 250, 50))
        histories = sdae.pretrain(train, epochs_per_layer=20)   # one History per layer
        probae.fit(sdae, train, epochs=20)                      # the whole stack
        evaluate.linear_probe(sdae, train, test)

    With one layer the stack is the :class:`~probae.DenoisingAE`
    ``DenoisingAE(x_shape, layers[0], corruption, likelihood, hidden=(),
    activation=activation)``: the same weights from the same seed, the same training.

    :param tuple x_shape: shape of one data point.
    :param tuple layers: code widths from the bottom up; the last is the top code's
        size (``z_dim``).
    :param corruption: the corruption :math:`C` of every layer's input (default
        ``MaskingNoise(0.25)``), or a sequence of one per layer; end-to-end training
        corrupts the input of the first layer only.
    :param likelihood: :math:`p_1(x|\cdot)` of the first layer, the stack's likelihood
        (default :class:`~probae.likelihoods.Gaussian`, s = 1).
    :param code_likelihood: :math:`p_k` of the layers above the first, over the
        codes below them; each layer gets its own copy. Default
        :class:`~probae.likelihoods.Gaussian` with s = 1 (the squared error; its mean
        is the identity, so the deep decoder is linear between layers);
        :class:`~probae.likelihoods.ContinuousBernoulli` suits sigmoid codes too
        (values in [0, 1]; its mean is a sigmoid-like squashing). On the digits the
        Gaussian gave the better linear-probe accuracy, the continuous Bernoulli
        leaving a quarter of the top code's values saturated after end-to-end training.
    :param str activation: code activation :math:`s` of every layer (default sigmoid).
    """

    def __init__(
        self,
        x_shape,
        layers=(500, 250, 50),
        corruption=None,
        likelihood=None,
        code_likelihood=None,
        activation="sigmoid",
    ):
        widths = _validate.widths("layers", layers)
        if not widths:
            raise ValueError(f"layers must name at least one code width, got {layers!r}")
        corruptions = _per_layer_corruption(corruption, len(widths))
        likelihood = _likelihoods.Gaussian() if likelihood is None else likelihood
        if code_likelihood is None:
            code_likelihood = _likelihoods.Gaussian()
        elif not isinstance(code_likelihood, _likelihoods.Likelihood):
            raise TypeError(
                "code_likelihood must be a probae.likelihoods.Likelihood, got "
                f"{type(code_likelihood).__name__}"
            )
        # The layers are built first, bottom up, so that a one-layer stack draws its
        # initial weights exactly as a DenoisingAE built from the same seed does.
        stages, shape = [], x_shape
        for k, width in enumerate(widths):
            stages.append(
                DenoisingAE(
                    shape,
                    width,
                    corruption=corruptions[k],
                    likelihood=likelihood if k == 0 else copy.deepcopy(code_likelihood),
                    hidden=(),
                    activation=activation,
                )
            )
            shape = (width,)
        super().__init__(
            x_shape,
            widths[-1],
            corruption=corruptions[0],
            likelihood=likelihood,
            hidden=(),
            activation=activation,
            encoder=StackedEncoder(stages),
            decoder=StackedDecoder(stages),
        )
        self.layers = nn.ModuleList(stages)
        self.widths = widths
        self.activation = activation
        #: the History of each layer's greedy training, filled by :meth:`pretrain`
        self.layer_histories: list = []

    # -- the greedy phase ------------------------------------------------------------
    @torch.no_grad()
    def layer_input(self, data, layer: int, batch_size: int = 1000) -> torch.Tensor:
        r"""What layer ``layer`` (0 is the bottom) is trained on: the data itself for
        layer 0, else the clean code :math:`h_{k} = f_{k}(\cdots f_1(x))` of the layer
        below, computed without corruption and without gradients, in batches.

        :param data: a :class:`~probae.data.Dataset` or a tensor ``(N, *x_shape)``.
        :param int layer: the layer's index, ``0 <= layer < len(layers)``.
        :param int batch_size: points encoded at once.
        :returns: a tensor on the model's device, ``(N, *x_shape)`` for layer 0 and
            ``(N, layers[layer - 1])`` above.
        """
        layer = _validate.integer("layer", layer, minimum=0)
        if layer >= len(self.layers):
            raise ValueError(
                f"layer must be in [0, {len(self.layers) - 1}] for a stack of "
                f"{len(self.layers)} layers, got {layer}"
            )
        batch_size = _validate.integer("batch_size", batch_size, minimum=1)
        x = prepare(data, self, check_support=False)[0]
        if layer == 0:
            return x
        below = self.layers[:layer]

        def code(xb):
            for stage in below:
                xb = stage.encoder(xb)
            return xb

        return torch.cat([code(xb) for xb in x.split(batch_size)])

    def pretrain(
        self,
        data,
        epochs_per_layer=10,
        batch_size: int = 128,
        lr: float | None = None,
        optimizer=None,
        binarize: str | None = None,
        validation=None,
        checkpoint_dir=None,
        resume: bool = False,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> list:
        r"""Greedy layer-wise training: layer :math:`k` is trained by :func:`probae.fit`
        as a :class:`~probae.DenoisingAE` on the clean codes of layer :math:`k-1`, the
        layers below it frozen; resumable layer by layer from ``checkpoint_dir``.

        The same as :func:`probae.stacking.pretrain` ``(self, data, ...)``, which
        documents every option: the trainer stands above the model families, which never
        import it.

        :returns: the :class:`probae.History` of each layer, bottom up (also kept in
            ``layer_histories``).
        """
        if not GREEDY_TRAINING:
            raise RuntimeError("greedy training needs probae.stacking, wired in by import probae")
        return GREEDY_TRAINING[0](
            self,
            data,
            epochs_per_layer=epochs_per_layer,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            binarize=binarize,
            validation=validation,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            seed=seed,
            progress=progress,
        )

    def extra_repr(self):
        return f"layers={self.widths}, activation={self.activation}"


def _per_layer_corruption(corruption, count: int) -> list:
    if corruption is None:
        corruption = _corruption.MaskingNoise(0.25)
    if isinstance(corruption, (list, tuple)):
        if len(corruption) != count:
            raise ValueError(
                f"corruption must be one corruption or one per layer ({count}), "
                f"got {len(corruption)}"
            )
        corruptions = list(corruption)
    else:
        corruptions = [corruption] * count
    for c in corruptions:
        if not callable(c):
            raise TypeError(
                "corruption must be a probae.corruption.Corruption (or a callable x -> x~), "
                f"got {type(c).__name__}"
            )
    return corruptions
