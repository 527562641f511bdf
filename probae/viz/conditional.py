"""Pictures of conditional models: quadrant completions and class-by-sample grids.

Each function draws with matplotlib's Agg canvas (no window, no pyplot state),
writes a PNG and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

__all__ = ["quadrant_completions", "class_samples"]

#: colour of pixels that are not observed
UNSEEN = "#4a90d9"


def _canvas(rows: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Stacks rows of images ``(K, height, width)`` into one array with NaN gaps."""
    gap = 1
    columns = max(len(row) for row in rows)
    out = np.full(
        (len(rows) * (height + gap) - gap, columns * (width + gap) - gap), np.nan, dtype=float
    )
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            top, left = i * (height + gap), j * (width + gap)
            out[top : top + height, left : left + width] = image
    return out


def _save_labelled(grid: np.ndarray, labels: list[str], height: int, path, title: str) -> Path:
    """Writes the grid as a PNG: values in [0, 1] in grey levels, values below 0 (unseen
    pixels) in :data:`UNSEEN`, NaN (the gaps) in white."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white", under=UNSEEN)
    scale = 0.12 if height <= 8 else 0.045
    fig = Figure(figsize=(1.5 + grid.shape[1] * scale, 0.6 + grid.shape[0] * scale))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([i * (height + 1) + (height - 1) / 2 for i in range(len(labels))])
    ax.set_yticklabels(labels)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def quadrant_completions(
    model,
    task,
    data=None,
    num_images: int = 8,
    num_samples: int = 4,
    baseline=None,
    path="cvae_completions.png",
) -> Path:
    """A grid of completions on a :class:`probae.data.QuadrantTask`.

    One column per test image; rows: the observed quadrant(s) (the unseen pixels
    in blue), the truth, the baseline's prediction E[x|c] (if given), and
    ``num_samples`` completions of the CVAE, each E[x|z, c] for one draw
    :math:`z \\sim p(z|c)`. Observed pixels are shown as given in every row.

    :param model: a trained :class:`probae.CVAE` (anything with ``predict(c, num_samples)``).
    :param task: the :class:`~probae.data.QuadrantTask`.
    :param data: a :class:`~probae.data.ConditionalDataset` (default ``task.test``).
    :param int num_images: columns.
    :param int num_samples: completion rows.
    :param baseline: a trained :class:`probae.ConditionalBaseline`, or None.
    :param path: where the PNG goes.
    :returns: the path of the PNG.
    """
    data = task.test if data is None else data
    num_images = min(int(num_images), len(data))
    if num_images < 1 or num_samples < 1:
        raise ValueError("num_images and num_samples must be positive")
    _, height, width = task.image_shape
    c, x = data.c[:num_images].cpu(), data.x[:num_images].cpu()

    def images(unseen: torch.Tensor) -> np.ndarray:
        return task.assemble(c, unseen).reshape(-1, height, width).numpy()

    observed = task.assemble(c, torch.full_like(x, -1.0))  # drawn in the UNSEEN colour
    rows = [observed.reshape(-1, height, width).numpy(), images(x)]
    labels = ["observed", "truth"]
    if baseline is not None:
        rows.append(images(baseline.predict(c.to(baseline.device)).cpu()))
        labels.append("baseline")
    completions = model.predict(c.to(model.device), num_samples=num_samples).cpu()
    for s in range(num_samples):
        rows.append(images(completions[s]))
        labels.append(f"CVAE {s + 1}")
    grid = _canvas(rows, height, width)
    title = f"{task.name}: {task.observed} observed quadrant{'s' if task.observed > 1 else ''}"
    return _save_labelled(grid, labels, height, path, title)


def class_samples(
    model,
    num_per_class: int = 8,
    classes=None,
    image_shape=None,
    path="cvae_class_samples.png",
) -> Path:
    """A class-by-sample grid of a class-conditional model: row k holds
    ``num_per_class`` samples E[x|z, c=k], :math:`z \\sim p(z|c=k)`.

    :param model: a trained :class:`probae.CVAE` with ``c_shape == (K,)``.
    :param int num_per_class: columns.
    :param classes: the classes to draw (default all K).
    :param tuple image_shape: ``(H, W)`` of one sample (default: square from ``x_shape``).
    :param path: where the PNG goes.
    :returns: the path of the PNG.
    """
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError("class_samples needs a class-conditional model (c_shape=(K,))")
    classes = list(range(num_classes)) if classes is None else [int(k) for k in classes]
    if image_shape is None:
        side = math.isqrt(math.prod(model.x_shape))
        if side * side != math.prod(model.x_shape):
            raise ValueError(f"give image_shape=(H, W) for x_shape={model.x_shape}")
        image_shape = (side, side)
    height, width = image_shape[-2:]
    rows = []
    for k in classes:
        samples = model.sample(num_per_class, c=k).cpu()
        rows.append(samples.reshape(-1, height, width).numpy())
    grid = _canvas(rows, height, width)
    return _save_labelled(grid, [str(k) for k in classes], height, path, "samples by class")
