"""Data points as pictures: a grid of any points, samples from the model, and
points above their reconstructions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .. import data as _data
from .._common import device_of
from ._common import (
    _PAD_VALUE,
    _as_images,
    _figure_for,
    _image_shape,
    _mosaic,
    _normalize,
    _points,
    _positive,
    _save,
)

__all__ = ["image_grid", "sample_grid", "reconstructions"]


def image_grid(images, path, image_shape=None, nrow: int | None = None, title=None) -> Path:
    """Draws data points as a grid of pictures (for instance decoded draws of a
    user's own model).

    :param images: a tensor of shape ``(N, ...)`` or a :class:`~probae.data.Dataset`.
    :param path: the PNG file to write.
    :param tuple image_shape: ``(C, H, W)`` of one picture (see :mod:`probae.viz`).
    :param int nrow: pictures per row (default about sqrt(N)).
    :param str title: a title above the grid.
    :returns: ``path``.
    """
    x = _data.as_tensor(images, "images")
    shape = _image_shape(None, images, image_shape, x_shape=tuple(x.shape[1:]))
    tiles = _as_images(x, shape)
    ncol = _positive("nrow", nrow) if nrow is not None else math.ceil(math.sqrt(len(tiles)))
    (tiles,) = _normalize(tiles)
    fig, _ = _figure_for(_mosaic(tiles, ncol), title)
    return _save(fig, path)


def sample_grid(
    model,
    n: int = 64,
    path="samples.png",
    c=None,
    image_shape=None,
    nrow=None,
    seed=None,
    sampler=None,
) -> Path:
    """Draws ``n`` samples z ~ p(z) decoded to E[x|z] as a grid.

    :param model: a probae model (with ``sample``).
    :param int n: number of samples.
    :param path: the PNG file to write.
    :param c: conditions for a conditional model, one row per sample.
    :param tuple image_shape: ``(C, H, W)`` of one picture.
    :param int nrow: pictures per row (default about sqrt(n)).
    :param int seed: draw with this seed, leaving the global random state untouched.
    :param sampler: a density fitted to the codes (:mod:`probae.samplers`) to draw z from
        instead of the prior.
    :returns: ``path``.
    """
    n = _positive("n", n)
    shape = _image_shape(model, None, image_shape)
    device = device_of(model)
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if sampler is not None:
            x = model.sample(n, sampler=sampler)
        else:
            x = model.sample(n) if c is None else model.sample(n, c=c.to(device))
    return image_grid(x, path, shape, nrow, title=f"{n} samples from the model")


def reconstructions(model, x, path="reconstructions.png", c=None, image_shape=None, ncol=None):
    """Originals above their reconstructions E[x|z], z the code of x.

    :param model: a probae model (with ``reconstruct``).
    :param x: the points to reconstruct, a tensor ``(N, ...)`` or a Dataset.
    :param path: the PNG file to write.
    :param c: conditions, one row per point.
    :param tuple image_shape: ``(C, H, W)`` of one picture.
    :param int ncol: points per row (default ``min(N, 8)``); each row of originals is
        followed by the row of their reconstructions.
    :returns: ``path``.
    """
    shape = _image_shape(model, x, image_shape)
    device = device_of(model)
    xs = _points(x, "x", device)
    with torch.no_grad():
        recon = model.reconstruct(xs) if c is None else model.reconstruct(xs, c.to(device))
    originals, rebuilt = _normalize(_as_images(xs, shape), _as_images(recon, shape))
    ncol = _positive("ncol", ncol) if ncol is not None else min(len(originals), 8)
    return _save(
        _figure_for(
            _paired_rows(originals, rebuilt, ncol), "originals (above) and reconstructions"
        )[0],
        path,
    )


def _paired_rows(top: np.ndarray, bottom: np.ndarray, ncol: int) -> np.ndarray:
    """Rows of ``top`` tiles, each followed by the matching row of ``bottom`` tiles."""
    n = len(top)
    blank = np.full((1, *top.shape[1:]), _PAD_VALUE, dtype=np.float32)
    tiles = []
    for start in range(0, n, ncol):
        stop = min(start + ncol, n)
        fill = [blank] * (ncol - (stop - start))
        tiles += [top[start:stop], *fill, bottom[start:stop], *fill]
    return _mosaic(np.concatenate(tiles), ncol)
