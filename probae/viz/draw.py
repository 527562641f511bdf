"""The canvas of a DRAW model at every step, as in Gregor et al. (2015), figure 7:
one row per image, one column per step, from the first stroke to the finished picture.

**References**

[1] `DRAW: A Recurrent Neural Network For Image Generation`, Karol Gregor, Ivo
Danihelka, Alex Graves, Danilo Jimenez Rezende, Daan Wierstra (ICML 2015)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .._common import device_of
from ._common import (
    _as_images,
    _figure_for,
    _image_shape,
    _mosaic,
    _normalize,
    _points,
    _positive,
    _save,
)

__all__ = ["draw_canvas"]


def draw_canvas(model, path="canvas.png", n: int = 8, x=None, image_shape=None, seed=None) -> Path:
    r"""Draws :math:`\mathbb E[x \mid c_t]` after every step t of a DRAW model: ``n``
    images generated step by step from the prior, or, given ``x``, the canvases of
    the guide's path of posterior means for those points (their reconstruction as it
    is drawn).

    :param model: a :class:`~probae.models.draw.DRAW` (anything with ``canvases``,
        ``steps`` and ``z_dim``).
    :param path: the PNG file to write.
    :param int n: images generated from the prior (ignored when ``x`` is given).
    :param x: points whose drawing to show, a tensor ``(N, ...)`` or a Dataset.
    :param tuple image_shape: ``(C, H, W)`` of one picture.
    :param int seed: draw with this seed, leaving the global random state untouched.
    :returns: ``path``.
    """
    if not callable(getattr(model, "canvases", None)):
        raise TypeError(
            f"draw_canvas needs a DRAW model (with canvases), got {type(model).__name__}"
        )
    shape = _image_shape(model, x, image_shape)
    device = device_of(model)
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if x is None:
            n = _positive("n", n)
            z = model.prior((n,)).sample((model.steps,)).transpose(0, 1).reshape(n, -1)
            title = f"{n} images drawn in {model.steps} steps (left to right)"
        else:
            z = model.encode(_points(x, "x", device))
            title = f"reconstructions drawn in {model.steps} steps (left to right)"
        canvases = model.canvases(z)  # (T, N, ...)
    steps, count = canvases.shape[:2]
    tiles = _as_images(canvases.transpose(0, 1).reshape(steps * count, -1), shape)
    (tiles,) = _normalize(tiles)
    fig, _ = _figure_for(_mosaic(np.asarray(tiles), steps), title)
    return _save(fig, path)
