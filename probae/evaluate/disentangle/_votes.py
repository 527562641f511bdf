r"""Where the classifier-based scores draw their votes from: points that share the
class of a factor, drawn either from the table of factors of the encoded points
(:class:`_Groups`) or from a factor grid (:class:`probae.dsprites.Grid`), whose drawn
items are encoded once each, in chunks (:func:`_grid_codes`)."""

from __future__ import annotations

import torch

#: votes computed at once: bounds memory at _CHUNK x batch_size x D codes
_CHUNK = 1024
#: points of a factor grid whose codes give the FactorVAE score's standard deviations
_SPREAD_POINTS = 10_000


class _Groups:
    """For each factor, the points sorted by its class: draws a partner sharing the
    class of a given point in O(1)."""

    def __init__(self, classes: torch.Tensor):
        self.size = classes.shape[0]
        self.factor_sizes = tuple(int(classes[:, k].max()) + 1 for k in range(classes.shape[1]))
        self.order, self.start, self.count = [], [], []
        for k in range(classes.shape[1]):
            labels = classes[:, k]
            order = labels.argsort(stable=True)
            counts = torch.bincount(labels)
            starts = torch.cumsum(counts, 0) - counts
            self.order.append(order)
            self.start.append(starts[labels])
            self.count.append(counts[labels])

    def partners(self, k: int, anchors: torch.Tensor, shape, generator) -> torch.Tensor:
        """Points drawn uniformly among those sharing factor k's class with each anchor,
        shape ``(len(anchors), *shape)``."""
        u = torch.rand(anchors.shape[0], *shape, generator=generator, dtype=torch.float64)
        start = self.start[k][anchors].view(-1, *([1] * len(shape)))
        count = self.count[k][anchors].view(-1, *([1] * len(shape)))
        offset = (u * count).long().clamp_max(count - 1)
        return self.order[k][start + offset]

    def draw(self, shape, generator) -> torch.Tensor:
        """Points drawn uniformly, a tensor of ``shape``."""
        return torch.randint(self.size, tuple(shape), generator=generator)

    draw_sharing = partners


def _is_grid(factors) -> bool:
    """A factor grid (:class:`probae.dsprites.Grid`) rather than a table of factors."""
    return all(
        callable(getattr(factors, name, None)) for name in ("draw", "draw_sharing", "factors_of")
    )


def _grid_codes(codes, points: torch.Tensor):
    """The codes of grid items ``points``: ``(table, rows)``, the codes (float64, CPU)
    of each distinct item, computed once by ``codes`` in chunks of ``_CHUNK`` items,
    and the row of the table of each point (``points``' shape)."""
    if not callable(codes):
        raise TypeError(
            "with a factor grid as factors, codes must be a function from grid items "
            "(a 1-D long tensor) to their codes (N, D)"
        )
    unique, rows = torch.unique(points.reshape(-1), return_inverse=True)
    parts = []
    for chunk in unique.split(_CHUNK):
        part = codes(chunk)
        if not isinstance(part, torch.Tensor) or part.dim() != 2 or part.shape[0] != len(chunk):
            raise ValueError(f"codes(items) must return a tensor (len(items), D) for {len(chunk)}")
        parts.append(part.detach().double().cpu())
    table = torch.cat(parts)
    if not torch.isfinite(table).all():
        raise ValueError("codes contain NaN or infinite values")
    return table, rows.view(points.shape)


def _fixed_factor_draws(points, num, batch_size, generator):
    """``num`` draws of (factor k uniform, an anchor point, batch_size partners sharing
    its class of k) from ``points`` (a :class:`_Groups` or a factor grid): returns
    ``(k (num,), anchors (num,), partners (num, batch_size))``."""
    num_factors = len(points.factor_sizes)
    ks = torch.randint(num_factors, (num,), generator=generator)
    anchors = points.draw((num,), generator)
    partners = torch.empty(num, batch_size, dtype=torch.long)
    for k in range(num_factors):
        rows = (ks == k).nonzero().squeeze(1)
        partners[rows] = points.draw_sharing(k, anchors[rows], (batch_size,), generator)
    return ks, anchors, partners
