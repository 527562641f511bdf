"""Data as tensors: the ``x`` of a data set or a tensor (:func:`as_tensor`), static
binarization (:func:`binarize`), and the index batches training slices out of
in-memory tensors (:func:`batches`)."""

from __future__ import annotations

from dataclasses import replace

import torch

from .. import _validate
from .._dataset import Dataset

__all__ = ["as_tensor", "batches", "binarize"]


def as_tensor(data, name: str = "data") -> torch.Tensor:
    """The ``x`` tensor of a :class:`Dataset`, or ``data`` itself if it is a tensor."""
    if isinstance(data, Dataset):
        return data.x
    if isinstance(data, torch.Tensor):
        return data
    raise TypeError(
        f"{name} must be a probae.data.Dataset or a torch.Tensor, got {type(data).__name__}"
    )


def binarize(data, seed: int | None = 0):
    """Static binarization: each value in [0, 1] becomes 1 with that probability.

    With a seed the result is the same on every call (one fixed binarization for
    evaluation, as in Salakhutdinov & Murray 2008). Accepts a :class:`Dataset`
    (returns one) or a tensor (returns a tensor).
    """
    x = as_tensor(data)
    if ((x < 0) | (x > 1)).any():
        raise ValueError(
            f"binarize needs data in [0, 1], got values in [{x.min().item()}, {x.max().item()}]"
        )
    generator = torch.Generator(device="cpu")
    seed = _validate.seed("seed", seed)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    binary = torch.bernoulli(x.detach().cpu(), generator=generator).to(x.device, x.dtype)
    return replace(data, x=binary) if isinstance(data, Dataset) else binary


def batches(n: int, batch_size: int, shuffle: bool = True, device=None):
    """Index tensors covering ``range(n)`` in batches (the last may be smaller)."""
    batch_size = _validate.integer("batch_size", batch_size, minimum=1)
    order = torch.randperm(n, device=device) if shuffle else torch.arange(n, device=device)
    return order.split(batch_size)
