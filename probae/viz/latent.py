r"""The aggregate posterior of a 2-D latent model, drawn over its prior.

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

import torch
from pyro import poutine

from .. import data as _data
from .._common import as_pair, prepare

__all__ = ["aggregate_posterior"]


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
    from matplotlib.figure import Figure

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
        colour = labels.numpy() if labels is not None else "tab:blue"
        ax.scatter(z[:, 0].numpy(), z[:, 1].numpy(), c=colour, cmap="tab10", s=3, alpha=0.7)
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
            site = poutine.trace(pair.guide).get_trace(*args).nodes.get("z")
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
