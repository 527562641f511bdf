"""Data sets as in-memory tensors, and fast batching.

:func:`load` returns a :class:`Dataset` whose ``.x`` is a float tensor (values in
[0, 1] for images), ``.y`` the labels (or None) and ``.image_shape`` the shape a
picture of one point has. Training slices batches straight out of these
tensors on the model's device: no per-sample collation.

Built in:

- ``"digits"``: the 8x8 handwritten digits that ship inside scikit-learn (1,797
  images, no network). Pixel values 0..16 are divided by 16. The split is fixed:
  a permutation of the 1,797 indices drawn with ``numpy.random.RandomState(0)``;
  its first 1,437 points (80%) are ``"train"``, the other 360 ``"test"``.
- ``"mnist"``, ``"fashion-mnist"``: 28x28 images through torchvision, read from
  ``root`` (the original gzip files in ``root/MNIST/raw`` or
  ``root/FashionMNIST/raw`` are enough; nothing is downloaded when they are there).
- ``"moons"``, ``"spiral"``: 2-D toy sets for pictures.
- ``"cifar10"``, ``"svhn"``, ``"celeba"`` (64x64), ``"image-folder"``: images read
  from ``root`` in their published on-disk layouts (:func:`cifar10`, :func:`svhn`,
  :func:`celeba`, :func:`image_folder`); ``.npy``/``.pt`` files by path
  (:func:`from_file`). :func:`open_images` gives CelebA or a folder as a streamed
  :class:`ImageFiles` for :func:`probae.fit`.
- ``"dsprites"``: 64x64 binary sprites with five known factors of variation,
  generated from their definition (:func:`probae.dsprites.load`): a seeded sample of
  50,000 training or 10,000 test images, ``factors`` holding their classes; with
  ``size=None`` the whole split (or ``split="all"``, all 737,280 images) rendered on
  demand (:class:`probae.dsprites.Grid`).

Where things are: :func:`load` and the built-in sets in :mod:`probae.data.loading`;
image sets and files read from disk in :mod:`probae.data.files` (pickles read without
running code in :mod:`probae.data.pickles`); conditions and the quadrant task in
:mod:`probae.data.conditions`; tensors, binarization and index batches in
:mod:`probae.data.tensors`. Every name is imported from here.
"""

from __future__ import annotations

# every name users read is importable from here; ``name as name``: those outside __all__
from .._dataset import Dataset
from .conditions import QUADRANT_ORDER as QUADRANT_ORDER
from .conditions import (
    ConditionalDataset,
    QuadrantTask,
    one_hot,
    quadrants,
    resolve_condition,
)
from .files import DISK_NAMES as DISK_NAMES
from .files import HELD_OUT as HELD_OUT
from .files import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from .files import (
    ImageFiles,
    celeba,
    cifar10,
    from_file,
    image_folder,
    open_images,
    svhn,
)
from .loading import DIGITS_TRAIN_SIZE as DIGITS_TRAIN_SIZE
from .loading import NAMES, load
from .loading import SPLITS as SPLITS
from .pickles import read_array_pickle as read_array_pickle
from .tensors import as_tensor, batches, binarize

# documented and known as probae.data.<name>
for _cls in (Dataset, ConditionalDataset, QuadrantTask, ImageFiles):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "Dataset",
    "load",
    "binarize",
    "as_tensor",
    "batches",
    "NAMES",
    "ConditionalDataset",
    "QuadrantTask",
    "one_hot",
    "quadrants",
    "resolve_condition",
    "ImageFiles",
    "cifar10",
    "svhn",
    "celeba",
    "image_folder",
    "from_file",
    "open_images",
]
