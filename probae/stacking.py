r"""Greedy layer-wise training of a stacked denoising autoencoder (Vincent et al. 2010):
each layer trained by :func:`probae.fit` on the clean codes of the layer below, the
layers under it frozen.

The model, :class:`~probae.models.stacked.StackedDenoisingAE`, says what each layer is
and what it is trained on (:meth:`~probae.models.stacked.StackedDenoisingAE.layer_input`);
this module trains the layers in turn. It stands above the model families, beside the
trainer it calls, so that the families import no trainer; ``sdae.pretrain(...)`` reaches
:func:`pretrain` through the model (``import probae`` wires it in).

**References**

[1] `Stacked Denoising Autoencoders: Learning Useful Representations in a Deep Network
with a Local Denoising Criterion`, Pascal Vincent, Hugo Larochelle, Isabelle Lajoie,
Yoshua Bengio, Pierre-Antoine Manzagol (JMLR 11, 2010)
"""

from __future__ import annotations

from pathlib import Path

from . import _validate
from .models.stacked import StackedDenoisingAE
from .train import fit

__all__ = ["pretrain"]


def pretrain(
    model: StackedDenoisingAE,
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
    r"""Greedy layer-wise training: layer :math:`k` of ``model`` is trained by
    :func:`probae.fit` as a :class:`~probae.DenoisingAE` on the clean codes of layer
    :math:`k-1`, the layers below it frozen. ``model.pretrain(data, ...)`` is the same call.

    Layer :math:`k`'s training data is computed once, before its training starts
    (:meth:`~probae.models.stacked.StackedDenoisingAE.layer_input`), and held on the
    model's device. While layer :math:`k` trains the layers below do not change and the
    clean code is deterministic, so a code recomputed every epoch, or streamed through
    the lower layers batch by batch, would be the same numbers at the price of
    :math:`k-1` extra forward passes over the data per epoch; holding it costs
    ``N * layers[k-1]`` numbers. The corruption is drawn afresh in every step by layer
    :math:`k`'s own guide.

    With ``checkpoint_dir``, layer :math:`k` trains in ``checkpoint_dir/layer-k``
    (:math:`k` from 1) and ``resume=True`` continues the greedy phase where it
    stopped: finished layers are restored from their checkpoints, the interrupted
    one continues its run (as :func:`probae.fit` resumes), and the layers above it
    have not started. The result is that of the uninterrupted run.

    :param StackedDenoisingAE model: the stack whose layers are trained.
    :param data: the training data (a :class:`~probae.data.Dataset` or a tensor).
    :param epochs_per_layer: epochs of each layer, an int or one per layer.
    :param int batch_size: points per step.
    :param float lr: learning rate of the default Adam optimizer.
    :param optimizer: a callable ``params -> torch.optim.Optimizer``.
    :param str binarize: ``binarize`` of the first layer's training (see
        :func:`probae.fit`); the layers above train on the codes of the data as given.
    :param validation: data scored after every epoch, passed up the stack as the
        training data is.
    :param checkpoint_dir: folder of the layers' checkpoint folders.
    :param bool resume: continue a greedy phase stopped in ``checkpoint_dir``.
    :param int seed: seeds layer :math:`k`'s training with ``seed + k - 1``.
    :param bool progress: show progress bars.
    :returns: the :class:`probae.History` of each layer, bottom up (also kept in
        ``model.layer_histories``).
    """
    if not isinstance(model, StackedDenoisingAE):
        raise TypeError(f"model must be a probae StackedDenoisingAE, got {type(model).__name__}")
    epochs = _epochs_per_layer(epochs_per_layer, len(model.layers))
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=")
    if seed is not None:
        seed = _validate.seed("seed", seed)
    histories = []
    for k, stage in enumerate(model.layers):
        inputs = model.layer_input(data, k)
        held_out = None if validation is None else model.layer_input(validation, k)
        histories.append(
            fit(
                stage,
                inputs,
                epochs=epochs[k],
                batch_size=batch_size,
                lr=lr,
                optimizer=optimizer,
                binarize=binarize if k == 0 else None,
                validation=held_out,
                checkpoint_dir=(
                    None if checkpoint_dir is None else Path(checkpoint_dir) / f"layer-{k + 1}"
                ),
                resume=resume,
                seed=None if seed is None else seed + k,
                progress=progress,
            )
        )
    model.layer_histories = histories
    return histories


def _epochs_per_layer(epochs, count: int) -> list:
    if isinstance(epochs, (list, tuple)):
        if len(epochs) != count:
            raise ValueError(
                f"epochs_per_layer must be one number or one per layer ({count}), got {len(epochs)}"
            )
        values = list(epochs)
    else:
        values = [epochs] * count
    try:
        return [_validate.integer("epochs_per_layer", e, minimum=1) for e in values]
    except (TypeError, ValueError):
        raise ValueError(
            f"epochs_per_layer must be a positive integer or one per layer, got {epochs!r}"
        ) from None
