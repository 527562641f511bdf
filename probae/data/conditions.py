"""Data sets whose points come with a condition ``c``, for the conditional models: the
:class:`ConditionalDataset`, conditions from labels (:func:`one_hot`) or from a data
set's fields (:func:`resolve_condition`), and the quadrant-completion task of Sohn, Lee
& Yan (2015) (:func:`quadrants`).

**References**

[1] `Learning Structured Output Representation using Deep Conditional Generative
Models`, Kihyuk Sohn, Honglak Lee, Xinchen Yan (NeurIPS 2015)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .._dataset import Dataset
from .loading import SPLITS, load
from .tensors import binarize as _static_binarize  # quadrants has an argument `binarize`

__all__ = [
    "ConditionalDataset",
    "QUADRANT_ORDER",
    "QuadrantTask",
    "one_hot",
    "quadrants",
    "resolve_condition",
]


@dataclass(frozen=True)
class ConditionalDataset(Dataset):
    """A :class:`Dataset` whose points come with a condition: pairs ``(x, c)``.

    :func:`probae.fit` and :mod:`probae.evaluate` read ``.c`` when no other
    condition is given.

    :ivar torch.Tensor c: the conditions, one row per point.
    """

    c: torch.Tensor | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.c is None or not isinstance(self.c, torch.Tensor):
            raise TypeError("ConditionalDataset needs c=, a torch.Tensor with one row per point")
        if self.c.shape[0] != self.x.shape[0]:
            raise ValueError(
                f"c must have one row per point: x has {self.x.shape[0]}, c has {self.c.shape[0]}"
            )

    def __getitem__(self, index) -> ConditionalDataset:
        return replace(
            self,
            x=self.x[index],
            y=None if self.y is None else self.y[index],
            c=self.c[index],
            factors=None if self.factors is None else self.factors[index],
        )

    def to(self, device) -> ConditionalDataset:
        return replace(
            self,
            x=self.x.to(device),
            y=None if self.y is None else self.y.to(device),
            c=self.c.to(device),
            factors=None if self.factors is None else self.factors.to(device),
        )


def one_hot(labels, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    """Labels as one-hot rows of shape ``(N, num_classes)``.

    :param labels: integer labels: a tensor, a sequence or an int.
    :param int num_classes: number of classes K; labels must lie in ``[0, K)``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    labels = labels.reshape(-1).long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"label out of range: labels must lie in [0, {num_classes}), got values in "
            f"[{labels.min().item()}, {labels.max().item()}]"
        )
    return torch.nn.functional.one_hot(labels, num_classes).to(dtype)


def resolve_condition(data, condition=None, c=None, c_shape=None, name: str = "data"):
    """The condition tensor for ``data``, or None for an unconditional model.

    :param data: a :class:`Dataset` (or a tensor).
    :param condition: ``"label"`` (one-hot rows of ``data.y``), the name of a tensor
        field of ``data`` (``"c"``), a tensor, or None (``data.c`` if ``data`` has one).
    :param c: an explicit condition tensor (not together with ``condition``).
    :param tuple c_shape: the model's condition shape; ``(K,)`` sets the number of
        classes for ``condition="label"`` (otherwise the largest label plus one).
    :param str name: the data's name in error messages.
    """
    if c is not None and condition is not None:
        raise ValueError("give the condition either as c= or as condition=, not both")
    if c is not None:
        return c
    if condition is None:
        return getattr(data, "c", None)
    if isinstance(condition, torch.Tensor):
        return condition
    if not isinstance(condition, str):
        raise TypeError(
            f"condition must be 'label', a field name of {name} or a tensor, "
            f"got {type(condition).__name__}"
        )
    if condition in ("label", "labels"):
        labels = getattr(data, "y", None)
        if labels is None:
            raise ValueError(f"condition={condition!r} needs {name} with labels (.y)")
        if c_shape is not None:
            c_shape = tuple(c_shape)
            if len(c_shape) != 1:
                raise ValueError(
                    f"condition={condition!r} gives one-hot rows, but the model has "
                    f"c_shape={c_shape}; build it with c_shape=(number of classes,)"
                )
            num_classes = c_shape[0]
        else:
            num_classes = int(labels.max().item()) + 1
        return one_hot(labels, num_classes).to(labels.device)
    value = getattr(data, condition, None)
    if not isinstance(value, torch.Tensor):
        fields = (
            [k for k, v in vars(data).items() if isinstance(v, torch.Tensor)]
            if isinstance(data, Dataset)
            else []
        )
        raise ValueError(
            f"condition={condition!r} is neither 'label' nor a tensor field of {name}; "
            f"its tensor fields are {fields}"
        )
    return value


QUADRANT_ORDER = ("bottom-left", "top-left", "top-right", "bottom-right")


@dataclass(frozen=True)
class QuadrantTask:
    """Structured output prediction on images: predict the unseen quadrants x from the
    observed ones c (Sohn, Lee & Yan 2015).

    ``train`` and ``test`` are :class:`ConditionalDataset` s whose ``x`` holds the
    unseen pixels and ``c`` the observed ones (both flat, in row-major pixel order);
    ``y`` keeps the digit labels.

    :ivar str name: the image data set.
    :ivar int observed: number of observed quadrants (1, 2 or 3).
    :ivar tuple image_shape: ``(C, H, W)`` of a whole image.
    :ivar torch.Tensor mask: boolean, ``(H*W,)``, True at observed pixels.
    """

    name: str
    observed: int
    image_shape: tuple
    mask: torch.Tensor
    train: ConditionalDataset
    test: ConditionalDataset

    @property
    def x_shape(self) -> tuple:
        return (int((~self.mask).sum()),)

    @property
    def c_shape(self) -> tuple:
        return (int(self.mask.sum()),)

    def split(self, images: torch.Tensor):
        """Whole images ``(N, H*W)`` (or ``(N, C, H, W)``) to ``(c, x)``."""
        flat = images.reshape(images.shape[0], -1)
        mask = self.mask.to(flat.device)
        return flat[:, mask], flat[:, ~mask]

    def assemble(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Observed pixels ``c`` and unseen pixels ``x`` back to whole images ``(N, H*W)``;
        ``x`` may carry extra leading dimensions (samples), shared by ``c``."""
        mask = self.mask.to(x.device)
        out = x.new_empty(*x.shape[:-1], mask.numel())
        out[..., mask] = c.to(x.dtype).expand(*x.shape[:-1], c.shape[-1])
        out[..., ~mask] = x
        return out


def _quadrant_mask(image_shape, observed: int) -> torch.Tensor:
    _, height, width = image_shape
    mask = torch.zeros(height, width, dtype=torch.bool)
    rows = {"top": slice(0, height // 2), "bottom": slice(height // 2, height)}
    cols = {"left": slice(0, width // 2), "right": slice(width // 2, width)}
    for quadrant in QUADRANT_ORDER[:observed]:
        row, col = quadrant.split("-")
        mask[rows[row], cols[col]] = True
    return mask.reshape(-1)


def quadrants(name: str = "digits", observed: int = 1, root=None, binarize: bool = True):
    """The quadrant-completion task of Sohn, Lee & Yan (2015) on an image data set.

    Quadrants are observed in the order bottom-left, top-left, top-right, as in
    Pyro's CVAE tutorial: with 1 the other three are predicted, with 2 the right
    half, with 3 the bottom-right quadrant.

    :param str name: ``"digits"``, ``"mnist"`` or ``"fashion-mnist"``.
    :param int observed: number of observed quadrants, 1, 2 or 3.
    :param root: data folder for the MNIST family (see :func:`load`).
    :param bool binarize: binarize the unseen pixels x once (seed 0 for the training
        split, 1 for the test split) so that a Bernoulli likelihood is a proper one;
        the observed pixels c keep their grey levels. With False x keeps grey levels
        (train with ``fit(..., binarize="dynamic")``).
    :rtype: QuadrantTask
    """
    key = str(name).lower().replace("_", "-")
    if key not in ("digits", "mnist", "fashion-mnist"):
        raise ValueError(
            f"quadrants needs an image data set name ('digits', 'mnist', 'fashion-mnist'), "
            f"got name={name!r}"
        )
    if isinstance(observed, bool) or observed not in (1, 2, 3):
        raise ValueError(f"observed must be 1, 2 or 3 quadrants, got {observed!r}")
    splits = {}
    mask = None
    for seed, split in enumerate(SPLITS):
        ds = load(key, split, root=root)
        if mask is None:
            mask = _quadrant_mask(ds.image_shape, observed)
        c, x = ds.x[:, mask], ds.x[:, ~mask]
        if binarize:
            x = _static_binarize(x, seed=seed)
        splits[split] = ConditionalDataset(x=x, y=ds.y, image_shape=None, name=key, c=c)
    return QuadrantTask(key, observed, ds.image_shape, mask, splits["train"], splits["test"])
