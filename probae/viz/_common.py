"""Helpers shared by the picture modules: the (C, H, W) a data point is drawn as
(see :mod:`probae.viz`), tiles laid out as a mosaic, a figure for it, the PNG
written, and checks of points and counts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import _validate
from .. import data as _data

#: grey level of the one-pixel border between tiles of a mosaic
_PAD_VALUE = 0.5


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _flat_square(size: int) -> tuple | None:
    side = math.isqrt(size)
    return (1, side, side) if side * side == size else None


def _image_shape(model=None, data=None, image_shape=None, x_shape=None) -> tuple:
    """The (C, H, W) a data point is drawn as (see :mod:`probae.viz`)."""
    if image_shape is None and isinstance(data, _data.Dataset):
        image_shape = data.image_shape
    if x_shape is None:
        x_shape = tuple(getattr(model, "x_shape", ()) or ())
    if image_shape is None and len(x_shape) == 3:
        image_shape = x_shape
    if image_shape is None and len(x_shape) == 1:
        image_shape = _flat_square(x_shape[0])
    if image_shape is None:
        raise ValueError(
            "image_shape is needed: the data are not pictures the model's x_shape "
            f"{x_shape or None} tells the shape of; pass image_shape=(C, H, W)"
        )
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3 or image_shape[0] not in (1, 3):
        raise ValueError(f"image_shape must be (C, H, W) with C = 1 or 3, got {image_shape}")
    return image_shape


def _as_images(x: torch.Tensor, image_shape: tuple) -> np.ndarray:
    """``(N, ...)`` values as an ``(N, H, W, C)`` float array."""
    x = x.detach().to("cpu", torch.float32)
    if x[0].numel() != math.prod(image_shape):
        raise ValueError(
            f"a data point has {x[0].numel()} values, which cannot be drawn as an image of "
            f"shape {image_shape}"
        )
    return x.reshape(x.shape[0], *image_shape).permute(0, 2, 3, 1).numpy()


def _normalize(*arrays: np.ndarray) -> list:
    """Rescales arrays jointly to [0, 1] unless they already lie there."""
    low = min(float(a.min()) for a in arrays)
    high = max(float(a.max()) for a in arrays)
    if low >= 0.0 and high <= 1.0:
        return list(arrays)
    span = high - low if high > low else 1.0
    return [(a - low) / span for a in arrays]


def _mosaic(tiles: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """Lays ``(N, H, W, C)`` tiles out row by row, ``ncol`` per row, with a ``pad``-pixel
    border; cells after the last tile stay at the border's grey."""
    n, h, w, channels = tiles.shape
    nrow = math.ceil(n / ncol)
    out = np.full(
        (nrow * (h + pad) + pad, ncol * (w + pad) + pad, channels), _PAD_VALUE, dtype=np.float32
    )
    for k in range(n):
        r, col = divmod(k, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        out[top : top + h, left : left + w] = tiles[k]
    return out


def _figure_for(mosaic: np.ndarray, title: str | None = None) -> tuple:
    height, width = mosaic.shape[:2]
    # About 20 image pixels per inch, kept between 4 and 10 inches on the longer side.
    scale = min(max(max(height, width) / 20.0, 4.0), 10.0) / max(height, width)
    fig = Figure(figsize=(width * scale, height * scale + (0.4 if title else 0.0)))
    ax = fig.add_axes((0, 0, 1, 1))
    if mosaic.shape[2] == 1:
        ax.imshow(mosaic[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(mosaic, 0.0, 1.0), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig, ax


def _points(x, name: str, device) -> torch.Tensor:
    return _data.as_tensor(x, name).to(device)


def _encode(model, x, c):
    return model.encode(x) if c is None else model.encode(x, c)


def _decode(model, z, c):
    return model.decode(z) if c is None else model.decode(z, c)


#: more pictures than this in one PNG cannot be told apart (and would fill the memory)
MAX_PICTURES = 10_000


def _positive(name: str, value) -> int:
    try:
        value = _validate.integer(name, value, minimum=1)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if value > MAX_PICTURES:
        raise ValueError(
            f"{name} must be at most {MAX_PICTURES} (pictures in one file), got {value}"
        )
    return value
