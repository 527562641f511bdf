r"""dSprites, generated here from its definition, and small factor sets for tests.

dSprites (Matthey et al. 2017) is every combination of five independent factors
of variation, each a 64 x 64 binary image of one white shape on black:

============  =====  ===========================================================
factor        count  values
============  =====  ===========================================================
shape         3      square, ellipse, heart (stored as 1, 2, 3)
scale         6      0.5, 0.6, ..., 1.0
orientation   40     :math:`2\pi k / 39`, k = 0..39 (0 and :math:`2\pi` both present)
position x    32     :math:`k / 31`, k = 0..31
position y    32     :math:`k / 31`, k = 0..31
============  =====  ===========================================================

3 x 6 x 40 x 32 x 32 = 737,280 images. An image's index is the mixed-radix number
of its factor classes, position y running fastest (the order of the original file).

**Geometry** (pixel units; pixel (row i, column j) has its center at
:math:`(i + \tfrac12, j + \tfrac12)`). The shape's center is
:math:`c_x = 12 + 40\,p_x` (column) and :math:`c_y = 12 + 40\,p_y` (row). A pixel is
white when its center lies inside the shape. With :math:`(d_x, d_y)` the pixel center
less the shape's center, orientation :math:`\theta` and scale :math:`s`, the shape's
own coordinates are

.. math:: u = \frac{d_x\cos\theta + d_y\sin\theta}{sR}, \qquad
          v = \frac{-d_x\sin\theta + d_y\cos\theta}{sR}, \qquad R = 8,

and the shapes, with their areas :math:`A` in pixels at scale :math:`s`:

- square: :math:`\max(|u|, |v|) \le 1`, :math:`A = 4 (sR)^2`;
- ellipse: :math:`u^2 + (2v)^2 \le 1`, :math:`A = \tfrac\pi2 (sR)^2`;
- heart: a square standing on a corner (half-diagonal 1, centered at
  :math:`(0, v_0)`, :math:`v_0 = (\sqrt{1/2} - \tfrac12)/2`, so that the heart's
  extent along :math:`v` is centered)
  with a disc on each upper side, the side its diameter:
  :math:`|u| + |v - v_0| \le 1` or
  :math:`(|u| - \tfrac12)^2 + (v - v_0 + \tfrac12)^2 \le \tfrac12`;
  :math:`A = (2 + \tfrac\pi2)(sR)^2`.

Every shape fits inside the image at every setting (its farthest point is at most
11.4 pixels from its center at scale 1). The shapes are drawn from this definition,
not copied from the original file, so images differ from it in detail; the factor
structure (what the metrics of :mod:`probae.evaluate.disentangle` read) is the
same.

Images are rendered by index, vectorized, in chunks: memory grows with the number
of images asked for, never with the 737,280 of the whole set. :class:`Grid` is a
whole split (or the whole set) as a map-style :class:`torch.utils.data.Dataset` that
renders each batch when it is read: it holds one index per image, not the images
(a few MiB for the whole set against 11 GiB as float32), and :func:`probae.fit`
streams it.

**References**

[1] `dSprites: Disentanglement testing Sprites dataset`, Loic Matthey, Irina Higgins,
Demis Hassabis, Alexander Lerchner (2017), https://github.com/deepmind/dsprites-dataset
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._dataset import Dataset

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "NUM_IMAGES",
    "SHAPES",
    "Grid",
    "area",
    "classes_to_index",
    "factor_values",
    "index_to_classes",
    "load",
    "render",
    "synthetic",
]

FACTOR_NAMES = ("shape", "scale", "orientation", "position_x", "position_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_IMAGES = math.prod(FACTOR_SIZES)
SHAPES = ("square", "ellipse", "heart")
IMAGE_SIZE = 64
#: radius unit of a shape at scale 1, in pixels
RADIUS = 8.0
#: the first and last possible shape center, in pixels
MARGIN, SPAN = 12.0, 40.0
#: the heart's diamond is centered at v0 so that its extent along v is centered at 0
_HEART_V0 = (0.5 + math.sqrt(0.5) - 1.0) / 2.0
#: split of the shuffled index set: the first 90% train, the rest test
TRAIN_FRACTION = 0.9
_CHUNK = 1024


def _check_classes(classes) -> torch.Tensor:
    classes = torch.as_tensor(classes)
    if classes.is_floating_point() or classes.dtype == torch.bool:
        raise TypeError(f"classes must be an integer tensor, got dtype {classes.dtype}")
    if classes.dim() != 2 or classes.shape[1] != len(FACTOR_SIZES):
        raise ValueError(
            f"classes must have shape (N, {len(FACTOR_SIZES)}), got {tuple(classes.shape)}"
        )
    sizes = classes.new_tensor(FACTOR_SIZES)
    if classes.numel() and ((classes < 0).any() or (classes >= sizes).any()):
        raise ValueError(f"classes out of range: factor j must lie in [0, {list(FACTOR_SIZES)}[j])")
    return classes.long()


def index_to_classes(index) -> torch.Tensor:
    """Factor classes ``(N, 5)`` of image indices ``(N,)`` (position y fastest)."""
    index = torch.as_tensor(index).long()
    if index.numel() and (index.min() < 0 or index.max() >= NUM_IMAGES):
        raise ValueError(f"index must lie in [0, {NUM_IMAGES}), got values outside it")
    out = []
    for size in reversed(FACTOR_SIZES):
        out.append(index % size)
        index = index // size
    return torch.stack(out[::-1], -1)


def classes_to_index(classes) -> torch.Tensor:
    """The image index of factor classes ``(N, 5)``."""
    classes = _check_classes(classes)
    index = torch.zeros_like(classes[:, 0])
    for j, size in enumerate(FACTOR_SIZES):
        index = index * size + classes[:, j]
    return index


def factor_values(classes) -> torch.Tensor:
    """Factor values ``(N, 5)`` (float64) of factor classes: shape 1..3, scale
    0.5..1, orientation in :math:`[0, 2\\pi]`, positions in [0, 1]."""
    classes = _check_classes(classes).double()
    return torch.stack(
        [
            classes[:, 0] + 1,
            0.5 + classes[:, 1] / 10,
            classes[:, 2] * (2 * math.pi / (FACTOR_SIZES[2] - 1)),
            classes[:, 3] / (FACTOR_SIZES[3] - 1),
            classes[:, 4] / (FACTOR_SIZES[4] - 1),
        ],
        -1,
    )


def area(shape: str, scale: float) -> float:
    """The exact area in pixels of ``shape`` (``"square"``, ``"ellipse"``,
    ``"heart"``) at ``scale``; a rendered image's white pixel count approaches it."""
    unit = (scale * RADIUS) ** 2
    factor = {"square": 4.0, "ellipse": math.pi / 2, "heart": 2 + math.pi / 2}
    if shape not in factor:
        raise ValueError(f"shape must be one of {list(SHAPES)}, got {shape!r}")
    return factor[shape] * unit


def render(classes, dtype=torch.float32, device=None) -> torch.Tensor:
    """The images of factor classes: a tensor ``(N, 1, 64, 64)`` of 0s and 1s.

    :param classes: integer factor classes ``(N, 5)`` (see :func:`index_to_classes`).
    :param dtype: the images' dtype.
    :param device: where to render (default: the classes' device).
    """
    classes = _check_classes(classes)
    device = classes.device if device is None else torch.device(device)
    classes = classes.to(device)
    out = torch.empty(classes.shape[0], 1, IMAGE_SIZE, IMAGE_SIZE, dtype=dtype, device=device)
    for start in range(0, classes.shape[0], _CHUNK):
        part = classes[start : start + _CHUNK]
        out[start : start + _CHUNK, 0] = _rasterize(part).to(dtype)
    return out


def _rasterize(classes: torch.Tensor) -> torch.Tensor:
    # float32 suffices: pixel centers never fall within rounding error of an edge.
    # Each image tests only its own shape's inequality: the images of one shape are
    # rendered together, with the same float operations for every pixel.
    values = factor_values(classes).float()
    _, scale, theta, px, py = values.unbind(-1)
    centers = torch.arange(IMAGE_SIZE, dtype=torch.float32, device=classes.device) + 0.5
    out = torch.empty(
        classes.shape[0], IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool, device=classes.device
    )
    kind = classes[:, 0]
    for shape in range(len(SHAPES)):
        rows = (kind == shape).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        if rows.numel() == kind.numel():
            rows = slice(None)
        dx = centers.view(1, 1, -1) - (MARGIN + SPAN * px[rows]).view(-1, 1, 1)  # columns
        dy = centers.view(1, -1, 1) - (MARGIN + SPAN * py[rows]).view(-1, 1, 1)  # rows
        cos, sin = theta[rows].cos().view(-1, 1, 1), theta[rows].sin().view(-1, 1, 1)
        unit = (scale[rows] * RADIUS).view(-1, 1, 1)
        u = (dx * cos + dy * sin) / unit
        v = (-dx * sin + dy * cos) / unit
        if shape == 0:  # square
            inside = torch.maximum(u.abs(), v.abs()) <= 1
        elif shape == 1:  # ellipse
            inside = u**2 + (2 * v) ** 2 <= 1
        else:  # heart
            w = v - _HEART_V0
            inside = ((u.abs() + w.abs()) <= 1) | ((u.abs() - 0.5) ** 2 + (w + 0.5) ** 2 <= 0.5)
        out[rows] = inside
    return out


SPLITS = ("train", "test", "all")


def _split_indices(split: str) -> np.ndarray:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    order = np.random.RandomState(0).permutation(NUM_IMAGES)
    cut = int(TRAIN_FRACTION * NUM_IMAGES)
    return order if split == "all" else order[:cut] if split == "train" else order[cut:]


class Grid(torch.utils.data.Dataset):
    """A split of dSprites (or the whole set) whose images are rendered when read.

    Item ``i`` is ``(x, y)``: the image (float32 0s and 1s, ``(1, 64, 64)`` or
    ``(4096,)`` with ``flatten``) and its shape class. The split rule is
    :func:`load`'s: ``"train"`` and ``"test"`` hold the same images, in the same
    order, as ``load(split, size=None)`` would hold in memory; ``"all"`` is the
    whole set in index order (item ``i`` is image ``i``). Only the grid indices
    are stored (8 bytes an image; none for ``"all"``).

    A :class:`~torch.utils.data.DataLoader` reads a batch as one vectorized render
    (:meth:`__getitems__`); :func:`probae.fit` streams a grid, since it is larger
    than its in-memory budget. :func:`probae.evaluate.disentanglement` draws its
    metric batches from the grid by fixing factors (:meth:`draw_sharing`).

    :param str split: ``"train"``, ``"test"`` or ``"all"``.
    :param bool flatten: items as vectors ``(4096,)`` instead of ``(1, 64, 64)``.
    :ivar str name: ``"dsprites"``.
    :ivar tuple image_shape: ``(1, 64, 64)``.
    :ivar tuple factor_sizes: the number of classes of each factor.
    """

    name = "dsprites"
    image_shape = (1, IMAGE_SIZE, IMAGE_SIZE)
    factor_sizes = FACTOR_SIZES

    def __init__(self, split: str = "all", flatten: bool = False):
        if not isinstance(flatten, bool):
            raise TypeError(f"flatten must be True or False, got {flatten!r}")
        index = _split_indices(split)
        self.split, self.flatten = split, flatten
        self._index = None if split == "all" else torch.from_numpy(index)
        self._position = None  # grid index -> item, built when first needed

    def __len__(self) -> int:
        return NUM_IMAGES if self._index is None else self._index.numel()

    def __repr__(self) -> str:
        return f"Grid(split={self.split!r}, flatten={self.flatten}, len={len(self)})"

    def _items(self, items) -> torch.Tensor:
        items = torch.as_tensor(items)
        if items.is_floating_point() or items.dtype == torch.bool:
            raise TypeError(f"items must be integer positions, got dtype {items.dtype}")
        items = items.long().reshape(-1)
        n = len(self)
        if items.numel() and (items.min() < -n or items.max() >= n):
            raise IndexError(f"items must lie in [-{n}, {n}) for a grid of {n} images")
        return torch.where(items < 0, items + n, items)

    def indices(self, items) -> torch.Tensor:
        """The grid indices (see :func:`index_to_classes`) of items ``(N,)``."""
        items = self._items(items)
        return items if self._index is None else self._index[items]

    def factors_of(self, items) -> torch.Tensor:
        """The factor classes ``(N, 5)`` of items ``(N,)``."""
        return index_to_classes(self.indices(items))

    @property
    def factors(self) -> torch.Tensor:
        """The factor classes ``(N, 5)`` of every item (40 bytes an item)."""
        return self.factors_of(torch.arange(len(self)))

    @property
    def y(self) -> torch.Tensor:
        """The shape class of every item."""
        return self.factors[:, 0].clone()

    def images(self, items, dtype=torch.float32, device=None) -> torch.Tensor:
        """The images of items ``(N,)``, rendered at once: ``(N, 1, 64, 64)``, or
        ``(N, 4096)`` with ``flatten``."""
        x = render(self.factors_of(items), dtype=dtype, device=device)
        return x.reshape(x.shape[0], -1) if self.flatten else x

    def __getitem__(self, item):
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            if not (isinstance(item, torch.Tensor) and item.dim() == 0):
                raise TypeError(f"a Grid is indexed by one integer, got {type(item).__name__}")
        classes = self.factors_of(torch.tensor([int(item)]))
        x = render(classes)[0]
        return (x.reshape(-1) if self.flatten else x), classes[0, 0]

    def __getitems__(self, items) -> list:
        """Items of a batch of positions, rendered as one batch."""
        classes = self.factors_of(torch.as_tensor(list(items), dtype=torch.long))
        x = render(classes)
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        return list(zip(x.unbind(0), classes[:, 0].unbind(0), strict=True))

    def draw(self, shape, generator=None) -> torch.Tensor:
        """Items drawn uniformly, a long tensor of ``shape``."""
        return torch.randint(len(self), tuple(shape), generator=generator)

    def draw_sharing(self, k: int, items, shape, generator=None) -> torch.Tensor:
        """For each of ``items`` ``(A,)``, items drawn uniformly among those of the grid
        that share its class of factor ``k``: a long tensor ``(A, *shape)``.

        Every factor but ``k`` is drawn uniformly from its classes and factor ``k`` is
        fixed to the anchor's class; a draw outside this split is drawn again, so
        draws are uniform over the split's images with that class.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(FACTOR_SIZES):
            raise ValueError(f"k must be a factor number in [0, {len(FACTOR_SIZES)}), got {k!r}")
        shape = tuple(shape)
        fixed = self.factors_of(items)[:, k]
        fixed = fixed.view(-1, *([1] * len(shape))).expand(fixed.shape[0], *shape).reshape(-1)
        out = torch.empty(fixed.numel(), dtype=torch.long)
        pending = torch.arange(fixed.numel())
        while pending.numel():
            draw = torch.stack(
                [torch.randint(s, (pending.numel(),), generator=generator) for s in FACTOR_SIZES],
                -1,
            )
            draw[:, k] = fixed[pending]
            position = self._positions(classes_to_index(draw))
            found = position >= 0
            out[pending[found]] = position[found]
            pending = pending[~found]
        return out.view(-1, *shape)

    def _positions(self, index: torch.Tensor) -> torch.Tensor:
        """The item of each grid index, -1 where it is not in this split."""
        if self._index is None:
            return index
        if self._position is None:
            position = torch.full((NUM_IMAGES,), -1, dtype=torch.int32)
            position[self._index] = torch.arange(len(self), dtype=torch.int32)
            self._position = position
        return self._position[index].long()


def load(split: str = "train", size: int | None = 50_000, flatten: bool = False):
    """dSprites images and their factors as a :class:`probae.data.Dataset`, or a
    whole split rendered on demand as a :class:`Grid`.

    The 737,280 indices are shuffled once (``numpy.random.RandomState(0)``); the
    first 90% are ``"train"``, the rest ``"test"``; ``size`` takes the first that
    many of a split, a uniform sample of the whole factor grid. ``factors`` holds the
    classes ``(N, 5)`` (:func:`factor_values` turns them into values), ``y`` the shape.

    :param str split: ``"train"`` (663,552 images), ``"test"`` (73,728) or ``"all"``
        (the 737,280 in shuffled order; as a :class:`Grid`, in index order).
    :param int size: number of images, rendered now and held in memory (16 KiB an
        image); None: the whole split as a :class:`Grid`, each batch rendered when
        it is read.
    :param bool flatten: images as vectors ``(N, 4096)`` instead of ``(N, 1, 64, 64)``.
    """
    if size is None:
        return Grid(split, flatten=flatten)
    index = _split_indices(split)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer or None, got {size!r}")
    if size > len(index):
        raise ValueError(f"size={size} exceeds the {len(index)} images of split {split!r}")
    index = index[:size]
    classes = index_to_classes(torch.as_tensor(index))
    x = render(classes)
    if flatten:
        x = x.reshape(x.shape[0], -1)
    return Dataset(
        x=x, y=classes[:, 0].clone(), image_shape=(1, 64, 64), name="dsprites", factors=classes
    )


def synthetic(n: int = 2000, sizes=(3, 4, 5, 8), seed: int = 0):
    """A small data set with known independent factors, for tests and examples:
    factor j takes ``sizes[j]`` equally likely classes, and ``x`` is the factor
    values scaled to [0, 1] (``x[:, j] = class / (sizes[j] - 1)``), so that an
    encoder returning ``x`` returns the ground truth.

    :param int n: number of points.
    :param tuple sizes: number of classes of each factor (each at least 2).
    :param int seed: seeds the draw.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    sizes = tuple(int(s) for s in sizes)
    if not sizes or min(sizes) < 2:
        raise ValueError(f"sizes must be factor class counts of at least 2, got {sizes!r}")
    generator = torch.Generator().manual_seed(seed)
    classes = torch.stack([torch.randint(s, (n,), generator=generator) for s in sizes], -1)
    x = classes.float() / torch.tensor(sizes, dtype=torch.float32).sub(1)
    return Dataset(x=x, y=None, image_shape=None, name="synthetic-factors", factors=classes)
