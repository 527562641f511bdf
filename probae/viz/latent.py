r"""Pictures of the latent space: traversals along each coordinate, interpolations
between codes, the codes of data in the plane, and the aggregate posterior of a
2-D latent model over its prior.

The aggregate posterior :math:`q(z) = \frac1N \sum_n q(z|x_n)` is what the
decoder actually sees; the prior :math:`p(z)` is what :meth:`sample` draws from.
Where they differ, samples from the prior decode to nothing like the data. One
draw :math:`z_n \sim q(z|x_n)` per point, coloured by label, over the contours
of :math:`p(z)`, shows both at once: the picture Makhzani et al. (2016) drew to
compare a standard normal prior with a mixture of ten Gaussians.

**References**

[1] `Adversarial Autoencoders`, Alireza Makhzani, Jonathon Shlens, Navdeep
Jaitly, Ian Goodfellow, Brendan Frey (ICLR 2016 workshop)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from pyro import poutine

from .. import data as _data
from .._common import as_pair, device_of, prepare
from ._common import (
    _as_images,
    _decode,
    _encode,
    _figure_for,
    _image_shape,
    _mosaic,
    _normalize,
    _points,
    _positive,
    _save,
)

__all__ = ["traversal", "interpolation", "latent_scatter", "aggregate_posterior"]


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


# -- aggregate posterior -------------------------------------------------------------


def aggregate_posterior(
    models,
    data,
    path,
    labels=None,
    c=None,
    grid_size: int = 200,
    max_points: int = 5000,
    seed: int = 0,
) -> Path:
    """Draws one z ~ q(z|x) per point of ``data`` for each model, over the contours
    of the model's prior, side by side, and writes a PNG.

    :param models: a probae model or ``(model, guide)`` pair with a 2-D latent, or a
        dict ``{title: model}`` of them (one panel each).
    :param data: a :class:`~probae.data.Dataset` (its labels colour the points) or a
        tensor.
    :param path: where to write the PNG.
    :param labels: integer labels colouring the points (default ``data.y``).
    :param c: conditions, one row per point, for conditional models.
    :param int grid_size: points per axis of the grid the prior density is drawn on.
    :param int max_points: at most this many points are drawn (the first ones).
    :param int seed: seeds the draws from the guides.
    :returns: the path of the PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    panels = dict(models) if isinstance(models, dict) else {"": models}
    if not panels:
        raise ValueError("models must hold at least one model")
    if labels is None and isinstance(data, _data.Dataset):
        labels = data.y
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1)[:max_points].cpu()
    figure = Figure(figsize=(4.2 * len(panels), 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, model) in zip(axes, panels.items(), strict=True):
        z, prior = _draws(model, data, c, max_points, seed)
        if labels is not None and labels.numel() != z.shape[0]:
            raise ValueError(
                f"labels must have one entry per point: {z.shape[0]}, got {labels.numel()}"
            )
        lo = torch.minimum(z.min(0).values, z.new_tensor([-3.0, -3.0]))
        hi = torch.maximum(z.max(0).values, z.new_tensor([3.0, 3.0]))
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        if prior is not None:
            gx = torch.linspace(lo[0].item(), hi[0].item(), grid_size)
            gy = torch.linspace(lo[1].item(), hi[1].item(), grid_size)
            grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)
            with torch.no_grad():
                density = _prior_density(prior, grid)
            ax.contourf(gx.numpy(), gy.numpy(), density.numpy(), levels=12, cmap="Greys")
        _scatter_by_label(figure, ax, z.numpy(), None if labels is None else labels.numpy())
        ax.set_xlim(lo[0].item(), hi[0].item())
        ax.set_ylim(lo[1].item(), hi[1].item())
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        if title:
            ax.set_title(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _scatter_by_label(figure, ax, points, labels) -> None:
    """Points coloured by class with a legend naming the classes (a colour bar when
    there are more than 20), or in one colour without labels."""
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], color="tab:blue", s=3, alpha=0.7)
        return
    classes = np.unique(labels)
    if len(classes) > 20:
        drawn = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="viridis", s=3, alpha=0.7)
        figure.colorbar(drawn, ax=ax, label="label")
        return
    cmap = matplotlib.colormaps["tab20" if len(classes) > 10 else "tab10"]
    for i, label in enumerate(classes):
        keep = labels == label
        ax.scatter(points[keep, 0], points[keep, 1], color=cmap(i), s=3, alpha=0.7,
                   label=str(label))  # fmt: skip
    ax.legend(markerscale=3, fontsize="x-small", title="label", title_fontsize="x-small",
              loc="upper right", ncol=2)  # fmt: skip


def _draws(model, data, c, max_points, seed):
    pair = as_pair(model)
    x, c = prepare(data, pair.module, c, check_support=False)
    x = x[:max_points]
    c = None if c is None else c[:max_points]
    args = (x,) if c is None else (x, c)
    devices = [x.device] if x.device.type == "cuda" else []
    was_training = pair.module is not None and pair.module.training
    if pair.module is not None:
        pair.module.eval()
    try:
        # Seeded draws that leave the caller's random stream untouched.
        with torch.random.fork_rng(devices=devices), torch.no_grad(), poutine.block():
            torch.manual_seed(seed)
            site = (
                poutine.trace(pair.guide)
                .get_trace(*args, **getattr(args, "kwargs", {}))
                .nodes.get("z")
            )
        if site is None or site["type"] != "sample":
            raise ValueError("aggregate_posterior needs the guide to sample a site named 'z'")
        z = site["value"].reshape(x.shape[0], -1)
        if z.shape[-1] != 2:
            raise ValueError(f"aggregate_posterior needs a 2-D latent, got z_dim={z.shape[-1]}")
    finally:
        if pair.module is not None:
            pair.module.train(was_training)
    prior = getattr(pair.module, "prior", None)
    if prior is not None and getattr(prior, "improper", False):
        prior = None
    return z.detach().cpu().float(), prior


def _prior_density(prior, grid):
    device = next((t.device for t in (*prior.parameters(), *prior.buffers())), torch.device("cpu"))
    flat = grid.reshape(-1, 2).to(device)
    if any(p.dtype == torch.float64 for p in prior.parameters()):
        flat = flat.double()
    log_p = prior((flat.shape[0],)).log_prob(flat)
    return log_p.exp().reshape(grid.shape[:-1]).float().cpu()
