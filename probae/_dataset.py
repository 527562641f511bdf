"""The in-memory data set every reader returns (:class:`probae.data.Dataset`), in a module
of its own so that the readers (:mod:`probae.dsprites`) and :mod:`probae.data` both
import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Dataset:
    """An in-memory data set.

    :ivar torch.Tensor x: data, shape ``(N, *x_shape)``.
    :ivar y: labels of shape ``(N,)`` (``torch.long``) or None.
    :ivar tuple image_shape: ``(C, H, W)`` of one point seen as a picture, or None.
    :ivar str name: the data set's name.
    :ivar factors: ground-truth factors of variation ``(N, K)`` or None: integer
        classes, or real values (see :mod:`probae.evaluate.disentangle`).
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    image_shape: tuple | None = None
    name: str = "tensor"
    factors: torch.Tensor | None = None

    def __post_init__(self):
        points = self.x.shape[0] if torch.is_tensor(self.x) and self.x.dim() else None
        for name, rows in (("y", 1), ("factors", 2)):  # dims of a set's (a point's: one less)
            value = getattr(self, name)
            if value is None or not torch.is_tensor(value) or value.dim() < rows:
                continue  # none, or those of one point (dataset[i])
            if points is not None and value.shape[0] != points:
                raise ValueError(
                    f"{name} must hold one row per point of x ({points}), got shape "
                    f"{tuple(value.shape)}"
                )

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index) -> Dataset:
        return replace(
            self,
            x=self.x[index],
            y=None if self.y is None else self.y[index],
            factors=None if self.factors is None else self.factors[index],
        )

    def to(self, device) -> Dataset:
        return replace(
            self,
            x=self.x.to(device),
            y=None if self.y is None else self.y.to(device),
            factors=None if self.factors is None else self.factors.to(device),
        )
