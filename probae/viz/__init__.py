"""Pictures of a trained model, written as PNG files a person can open.

Every function draws one figure on matplotlib's Agg canvas (no display and no
pyplot state needed), writes it to ``path`` (creating missing folders) and
returns that path as a :class:`pathlib.Path`. The model runs under
:func:`torch.no_grad` on its own device; inputs are moved there.

A data point is drawn as a picture of shape ``image_shape = (C, H, W)`` with
C = 1 (grey) or 3 (colour). When ``image_shape`` is not given it is read, in
this order, from the :class:`~probae.data.Dataset` passed in, from the model's
``x_shape`` when that is already ``(C, H, W)``, and from a flat ``x_shape = (D,)``
with D a perfect square, drawn as ``(1, sqrt(D), sqrt(D))`` (the 64 pixels of
``digits`` as 8x8, the 784 of MNIST as 28x28). Values in [0, 1] are drawn as
they are (0 black, 1 white); other values are rescaled to [0, 1] over the
whole figure.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from .. import data as _data
from .._common import device_of
from .autoencoders import filters, first_layer_weights, vector_field
from .conditional import class_samples, quadrant_completions
from .latent import aggregate_posterior

__all__ = [
    "image_grid",
    "sample_grid",
    "reconstructions",
    "traversal",
    "interpolation",
    "latent_scatter",
    "history_plot",
    "vector_field",
    "filters",
    "first_layer_weights",
    "class_samples",
    "quadrant_completions",
    "aggregate_posterior",
]

#: grey level of the one-pixel border between tiles of a mosaic
_PAD_VALUE = 0.5


# -- helpers -------------------------------------------------------------------------


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _flat_square(size: int) -> tuple | None:
    side = math.isqrt(size)
    return (1, side, side) if side * side == size else None


def _image_shape(model=None, data=None, image_shape=None, x_shape=None) -> tuple:
    """The (C, H, W) a data point is drawn as (see the module's docstring)."""
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


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


# -- pictures ------------------------------------------------------------------------


def image_grid(images, path, image_shape=None, nrow: int | None = None, title=None) -> Path:
    """Draws data points as a grid of pictures (for instance decoded draws of a
    user's own model).

    :param images: a tensor of shape ``(N, ...)`` or a :class:`~probae.data.Dataset`.
    :param path: the PNG file to write.
    :param tuple image_shape: ``(C, H, W)`` of one picture (see the module's docstring).
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
    model, n: int = 64, path="samples.png", c=None, image_shape=None, nrow=None, seed=None
) -> Path:
    """Draws ``n`` samples z ~ p(z) decoded to E[x|z] as a grid.

    :param model: a probae model (with ``sample``).
    :param int n: number of samples.
    :param path: the PNG file to write.
    :param c: conditions for a conditional model, one row per sample.
    :param tuple image_shape: ``(C, H, W)`` of one picture.
    :param int nrow: pictures per row (default about sqrt(n)).
    :param int seed: draw with this seed, leaving the global random state untouched.
    :returns: ``path``.
    """
    n = _positive("n", n)
    shape = _image_shape(model, None, image_shape)
    device = device_of(model)
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
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


def _traversal_codes(z0: torch.Tensor, dims, values: torch.Tensor) -> torch.Tensor:
    """Codes of shape ``(len(dims), len(values), z_dim)``: row i is ``z0`` with
    coordinate ``dims[i]`` set to each of ``values``."""
    codes = z0.expand(len(dims), len(values), z0.shape[-1]).clone()
    for row, d in enumerate(dims):
        codes[row, :, d] = values
    return codes


def traversal(
    model,
    x=None,
    z=None,
    dims=None,
    steps: int = 9,
    span: float = 3.0,
    path="traversal.png",
    c=None,
    image_shape=None,
) -> Path:
    r"""Latent traversals: one row per latent coordinate :math:`d`, which sweeps
    :math:`z_d` over ``steps`` values evenly spaced in [-span, span] while the other
    coordinates stay at the code of ``x`` (or at ``z``, or at 0 when neither is given).

    :param model: a probae model (with ``encode`` and ``decode``).
    :param x: one data point (shape ``x_shape`` or ``(1, *x_shape)``, or a Dataset whose
        first point is used) whose code is the starting point.
    :param z: the starting code instead of ``x``, shape ``(z_dim,)`` or ``(1, z_dim)``.
    :param dims: the coordinates to sweep (default the first ``min(z_dim, 10)``).
    :param int steps: values per coordinate.
    :param float span: the sweep covers [-span, span] (in prior standard deviations for a
        standard normal prior).
    :param path: the PNG file to write.
    :param c: the condition of the point, for conditional models.
    :param tuple image_shape: ``(C, H, W)`` of one picture.
    :returns: ``path``.
    """
    if x is not None and z is not None:
        raise ValueError("traversal takes x or z, not both")
    steps = _positive("steps", steps)
    if not (isinstance(span, (int, float)) and span > 0):
        raise ValueError(f"span must be a positive number, got {span!r}")
    shape = _image_shape(model, x, image_shape)
    device = device_of(model)
    z_dim = model.z_dim
    dims = list(range(min(z_dim, 10))) if dims is None else [int(d) for d in dims]
    if not dims or any(not 0 <= d < z_dim for d in dims):
        raise ValueError(f"dims must be latent coordinates in [0, {z_dim}), got {dims}")
    c = None if c is None else c.to(device).reshape(1, -1)[:1]
    with torch.no_grad():
        if x is not None:
            xs = _points(x, "x", device)
            xs = xs.reshape(-1, *model.x_shape)[:1]
            z0 = _encode(model, xs, c)[0]
        elif z is not None:
            z0 = torch.as_tensor(z, dtype=torch.float32, device=device).reshape(-1)
            if z0.numel() != z_dim:
                raise ValueError(f"z must have {z_dim} values (z_dim), got shape {tuple(z.shape)}")
        else:
            z0 = torch.zeros(z_dim, device=device)
        values = torch.linspace(-span, span, steps, device=device, dtype=z0.dtype)
        codes = _traversal_codes(z0, dims, values).reshape(-1, z_dim)
        images = _decode(model, codes, None if c is None else c.expand(len(codes), -1))
    (tiles,) = _normalize(_as_images(images, shape))
    fig, ax = _figure_for(_mosaic(tiles, steps), f"latent traversals over [-{span:g}, {span:g}]")
    h = tiles.shape[1]
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([1 + row * (h + 1) + (h - 1) / 2 for row in range(len(dims))])
    ax.set_yticklabels([f"z{d}" for d in dims])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _save(fig, path)


def _interpolation_codes(z_a: torch.Tensor, z_b: torch.Tensor, steps: int) -> torch.Tensor:
    """Codes ``(1 - t) z_a + t z_b`` for ``steps`` values of t evenly spaced in [0, 1];
    shape ``(N, steps, z_dim)``."""
    t = torch.linspace(0.0, 1.0, steps, device=z_a.device, dtype=z_a.dtype).unsqueeze(-1)
    return (1 - t) * z_a.unsqueeze(1) + t * z_b.unsqueeze(1)


def interpolation(
    model, x_a, x_b, steps: int = 10, path="interpolation.png", c=None, image_shape=None
) -> Path:
    r"""Decodes the straight line between the codes of ``x_a`` and ``x_b``,
    :math:`z_t = (1 - t)\,z_a + t\,z_b` for ``steps`` values of t in [0, 1]; each row
    shows ``x_a``, the decoded :math:`z_t`, then ``x_b``.

    :param model: a probae model (with ``encode`` and ``decode``).
    :param x_a: start point(s): one point of shape ``x_shape`` or a batch ``(N, *x_shape)``.
    :param x_b: end point(s), as many as ``x_a``.
    :param int steps: points on each line, ends included.
    :param path: the PNG file to write.
    :param c: conditions, one row per pair (shared by both ends).
    :param tuple image_shape: ``(C, H, W)`` of one picture.
    :returns: ``path``.
    """
    steps = _positive("steps", steps)
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two ends), got {steps}")
    shape = _image_shape(model, x_a, image_shape)
    device = device_of(model)
    a = _points(x_a, "x_a", device).reshape(-1, *model.x_shape)
    b = _points(x_b, "x_b", device).reshape(-1, *model.x_shape)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x_a and x_b must hold as many points, got {a.shape[0]} and {b.shape[0]}")
    c = None if c is None else c.to(device)
    with torch.no_grad():
        codes = _interpolation_codes(_encode(model, a, c), _encode(model, b, c), steps)
        cc = None if c is None else c.repeat_interleave(steps, 0)
        images = _decode(model, codes.reshape(-1, codes.shape[-1]), cc)
    ends_a, ends_b, middle = _normalize(
        _as_images(a, shape), _as_images(b, shape), _as_images(images, shape)
    )
    middle = middle.reshape(a.shape[0], steps, *middle.shape[1:])
    rows = np.concatenate([ends_a[:, None], middle, ends_b[:, None]], axis=1)
    fig, _ = _figure_for(
        _mosaic(rows.reshape(-1, *rows.shape[2:]), steps + 2), "interpolation between codes"
    )
    return _save(fig, path)


def _principal_components(codes: torch.Tensor, k: int = 2) -> tuple:
    """Projects centred codes on their ``k`` leading principal directions; returns the
    projection ``(N, k)`` and the fraction of the variance each direction explains."""
    centred = codes - codes.mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.pow(2)
    return centred @ vh[:k].T, variance[:k] / variance.sum()


def latent_scatter(
    model, data, path="latent.png", labels=None, c=None, batch_size: int = 1000
) -> Path:
    """The codes of ``data`` in the plane, coloured by label.

    Two-dimensional codes are drawn as they are; longer ones are projected on their
    two leading principal components (the axes say how much variance each keeps);
    one-dimensional codes are drawn against the label.

    :param model: a probae model (with ``encode``).
    :param data: a Dataset (its ``y`` colours the points) or a tensor ``(N, ...)``.
    :param path: the PNG file to write.
    :param labels: labels of shape ``(N,)`` replacing ``data.y``.
    :param c: conditions, one row per point.
    :param int batch_size: points encoded at once.
    :returns: ``path``.
    """
    batch_size = _positive("batch_size", batch_size)
    device = device_of(model)
    x = _points(data, "data", device)
    if labels is None and isinstance(data, _data.Dataset):
        labels = data.y
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).cpu().numpy()
        if len(labels) != x.shape[0]:
            raise ValueError(
                f"labels must have one entry per point ({x.shape[0]}), got {len(labels)}"
            )
    with torch.no_grad():
        codes = torch.cat(
            [
                _encode(
                    model,
                    x[s : s + batch_size],
                    None if c is None else c[s : s + batch_size].to(device),
                )
                for s in range(0, x.shape[0], batch_size)
            ]
        )
    codes = codes.reshape(codes.shape[0], -1).to("cpu", torch.float64)
    if codes.shape[1] > 2:
        plane, explained = _principal_components(codes)
        axes = [
            f"PC{i + 1} ({100 * float(e):.0f}% of the variance)" for i, e in enumerate(explained)
        ]
        title = f"codes (z_dim={codes.shape[1]}) on their two principal components"
    elif codes.shape[1] == 2:
        plane, axes, title = codes, ["z0", "z1"], "codes"
    else:
        other = torch.as_tensor(labels if labels is not None else np.zeros(len(codes)))
        plane = torch.stack([codes[:, 0], other.to(codes.dtype)], 1)
        axes, title = ["z0", "label" if labels is not None else ""], "codes"
    plane = plane.numpy()
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(plane[:, 0], plane[:, 1], s=6, alpha=0.7)
    else:
        classes = np.unique(labels)
        if len(classes) <= 20:
            cmap = matplotlib.colormaps["tab20" if len(classes) > 10 else "tab10"]
            for i, label in enumerate(classes):
                keep = labels == label
                ax.scatter(
                    plane[keep, 0], plane[keep, 1], s=6, alpha=0.7, color=cmap(i), label=str(label)
                )
            ax.legend(markerscale=3, fontsize="small", loc="best", title="label")
        else:
            points = ax.scatter(plane[:, 0], plane[:, 1], s=6, alpha=0.7, c=labels, cmap="viridis")
            fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    return _save(fig, path)


def history_plot(history, path="history.png") -> Path:
    """Training and validation loss per epoch.

    :param history: a :class:`probae.History` or a mapping with ``epoch``,
        ``train_loss`` and optionally ``val_loss`` lists.
    :param path: the PNG file to write.
    :returns: ``path``.
    """
    rows = history.as_dict() if hasattr(history, "as_dict") else dict(history)
    if "epoch" not in rows or "train_loss" not in rows:
        raise ValueError("history must have 'epoch' and 'train_loss' entries")
    epochs = [float(e) for e in rows["epoch"]]
    if not epochs:
        raise ValueError("history is empty: nothing to plot")
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot()
    ax.plot(epochs, [float(v) for v in rows["train_loss"]], label="train")
    val = [
        (e, v)
        for e, v in zip(epochs, rows.get("val_loss") or [], strict=False)
        if v not in (None, "")
    ]
    if val:
        ax.plot([e for e, _ in val], [float(v) for _, v in val], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per point)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)
