r"""Pictures of deterministic autoencoders: the denoising vector field and the
encoder's filters. Both write a PNG and return its path.

The denoising vector field of a denoising autoencoder :math:`r = g \circ f`
trained with small Gaussian corruption of variance :math:`\sigma^2` points from a
point back towards the data: :math:`(r(\tilde x) - \tilde x)/\sigma^2` estimates the
score :math:`\nabla_x \log p(x)` (Alain & Bengio 2014).

**References**

[1] `What Regularized Auto-Encoders Learn from the Data-Generating Distribution`,
Guillaume Alain, Yoshua Bengio (JMLR 2014)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .. import data as _data

__all__ = ["vector_field", "filters", "first_layer_weights"]


def _figure(**kwargs):
    # A bare Figure draws with the Agg canvas and leaves pyplot's global state (and the
    # user's backend) alone: files only, never a window.
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _output_path(path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must name a .png file, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _evaluating(model):
    """``model`` in eval mode without gradients for the block, restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def vector_field(
    model,
    path,
    data=None,
    grid: int = 25,
    extent=None,
    scale: float | None = None,
    title: str | None = None,
):
    r"""Draws the reconstruction field :math:`r(\tilde x) - \tilde x` of a model of
    2-D data over a regular grid, with the data behind it.

    For a denoising autoencoder the arrows point back to the data manifold: the field
    is :math:`\sigma^2` times an estimate of the score of the data density.

    :param model: a trained model with ``reconstruct`` and ``x_shape == (2,)``.
    :param path: the ``.png`` file to write.
    :param data: the 2-D points to show (a :class:`~probae.data.Dataset` or a tensor).
    :param int grid: arrows per side.
    :param tuple extent: ``(xmin, xmax, ymin, ymax)``; by default the data's range
        with a margin (or [-2.5, 2.5]² without data).
    :param float scale: arrows are drawn ``scale`` times their true length (1: each
        arrow ends at the reconstruction); None draws directions only, all of one
        length, coloured by their true length.
    :param str title: the figure's title.
    :returns: the path written.
    """
    if tuple(getattr(model, "x_shape", ())) != (2,) or not hasattr(model, "reconstruct"):
        raise ValueError(
            "vector_field needs a model of 2-D points (x_shape == (2,)) with .reconstruct, "
            f"got {type(model).__name__} with x_shape={getattr(model, 'x_shape', None)}"
        )
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an integer >= 2, got {grid!r}")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0
    ):
        raise ValueError(f"scale must be a positive number or None, got {scale!r}")
    path = _output_path(path)
    points = None if data is None else _data.as_tensor(data, "data").detach().float().cpu()
    if points is not None and (points.dim() != 2 or points.shape[1] != 2):
        raise ValueError(f"data must hold 2-D points, shape (N, 2), got {tuple(points.shape)}")
    if extent is None:
        if points is None:
            extent = (-2.5, 2.5, -2.5, 2.5)
        else:
            low, high = points.min(0).values, points.max(0).values
            margin = 0.25 * (high - low)
            low, high = (low - margin).tolist(), (high + margin).tolist()
            extent = (low[0], high[0], low[1], high[1])
    xmin, xmax, ymin, ymax = (float(v) for v in extent)
    if not (xmin < xmax and ymin < ymax):
        raise ValueError(f"extent must be (xmin, xmax, ymin, ymax) with min < max, got {extent}")

    device = getattr(model, "device", torch.device("cpu"))
    gx, gy = torch.meshgrid(
        torch.linspace(xmin, xmax, grid), torch.linspace(ymin, ymax, grid), indexing="xy"
    )
    where = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    with _evaluating(model):
        arrows = (model.reconstruct(where.to(device)) - where.to(device)).cpu()

    length = arrows.norm(dim=1)
    if scale is None:
        # Directions only, each about 0.8 of a grid cell long; colour carries the length,
        # which varies too much over the plane to be drawn to scale.
        cell = min(xmax - xmin, ymax - ymin) / (grid - 1)
        shown = 0.8 * cell * arrows / length.clamp_min(1e-12).unsqueeze(1)
    else:
        shown = scale * arrows

    # matplotlib takes NumPy arrays.
    where, arrows, shown, length = (t.numpy() for t in (where, arrows, shown, length))
    points = None if points is None else points.numpy()
    fig = _figure(figsize=(6, 6))
    ax = fig.subplots()
    if points is not None:
        ax.scatter(points[:, 0], points[:, 1], s=3, c="0.7", zorder=1)
    quiver = ax.quiver(
        where[:, 0],
        where[:, 1],
        shown[:, 0],
        shown[:, 1],
        length,
        angles="xy",
        scale_units="xy",
        scale=1.0,
        width=0.004,
        cmap="viridis",
        zorder=2,
    )
    fig.colorbar(quiver, ax=ax, shrink=0.8, label=r"$\|r(\tilde x) - \tilde x\|$")
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_aspect("equal")
    ax.set_title(title or r"$r(\tilde x) - \tilde x$")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def first_layer_weights(model) -> torch.Tensor:
    """The weight matrix of the first linear layer of ``model.encoder`` (or of
    ``model`` itself if it is an encoder), shape ``(units, D)``: one filter per row."""
    encoder = getattr(model, "encoder", model)
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"model must be a probae model or an encoder module, got {model!r}")
    first = getattr(encoder, "first_layer", None)  # a stack's encoder names its bottom layer's
    if isinstance(first, nn.Linear):
        return first.weight.detach()
    for module in encoder.modules():
        if isinstance(module, nn.Linear):
            return module.weight.detach()
    raise ValueError(f"{type(encoder).__name__} has no linear layer whose filters can be shown")


def filters(
    model,
    path,
    image_shape=None,
    max_filters: int = 100,
    columns: int | None = None,
    title: str | None = None,
):
    """Shows the first-layer encoder weights as images, one tile per unit, each scaled
    to its own range (grey is 0 for symmetric ranges), as in Makhzani & Frey's filter
    figures.

    :param model: a probae model whose encoder starts with a linear layer.
    :param path: the ``.png`` file to write.
    :param tuple image_shape: ``(H, W)`` or ``(C, H, W)`` of one input; by default the
        model's ``x_shape`` if it is an image, else a square.
    :param int max_filters: at most this many units (the first ones).
    :param int columns: tiles per row (default about the square root of their number).
    :param str title: the figure's title.
    :returns: the path written.
    """
    if isinstance(max_filters, bool) or not isinstance(max_filters, int) or max_filters < 1:
        raise ValueError(f"max_filters must be a positive integer, got {max_filters!r}")
    path = _output_path(path)
    weights = first_layer_weights(model).float().cpu()[:max_filters]
    units, size = weights.shape
    if image_shape is None:
        x_shape = tuple(getattr(model, "x_shape", ()))
        if len(x_shape) >= 2:
            image_shape = x_shape[-2:]
        else:
            side = math.isqrt(size)
            if side * side != size:
                raise ValueError(
                    f"cannot show filters of {size} inputs as square images: pass image_shape="
                )
            image_shape = (side, side)
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) == 3:
        if image_shape[0] != 1:
            raise ValueError(f"filters shows grey images only, got image_shape={image_shape}")
        image_shape = image_shape[1:]
    if len(image_shape) != 2 or math.prod(image_shape) != size:
        raise ValueError(
            f"image_shape={image_shape} does not hold the {size} inputs of each filter"
        )
    if columns is None:
        columns = math.ceil(math.sqrt(units))
    rows = math.ceil(units / columns)

    fig = _figure(figsize=(columns * 0.8, rows * 0.8 + 0.4))
    axes = fig.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < units:
            w = weights[index].reshape(image_shape).numpy()
            bound = float(abs(w).max()) or 1.0
            ax.imshow(w, cmap="gray", vmin=-bound, vmax=bound, interpolation="nearest")
    fig.suptitle(title or f"first-layer filters ({units} units)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
