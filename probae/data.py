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
"""

from __future__ import annotations

import difflib
import math
import os
import pickle
from dataclasses import dataclass, replace

import numpy as np
import torch

from . import _validate
from ._dataset import Dataset

Dataset.__module__ = __name__  # documented and known as probae.data.Dataset

__all__ = ["Dataset", "load", "binarize", "as_tensor", "batches", "NAMES"]

NAMES = ("digits", "mnist", "fashion-mnist", "moons", "spiral", "dsprites")
SPLITS = ("train", "test")
DIGITS_TRAIN_SIZE = 1437


def load(name: str, split: str = "train", root=None, flatten: bool = True, size="sample"):
    """Loads a data set into memory (dSprites with ``size=None``: rendered on demand).

    :param str name: one of ``"digits"``, ``"mnist"``, ``"fashion-mnist"``, ``"moons"``,
        ``"spiral"``, ``"dsprites"``, ``"cifar10"``, ``"svhn"``, ``"celeba"``,
        ``"image-folder"`` (from ``root``), or the path of a ``.npy``/``.pt`` file or of an
        image folder.
    :param str split: ``"train"`` or ``"test"``.
    :param root: folder holding ``MNIST/raw`` or ``FashionMNIST/raw`` (torchvision's
        layout); needed for the MNIST family only.
    :param bool flatten: images as vectors ``(N, H*W)`` (True) or ``(N, C, H, W)``.
    :param size: ``"dsprites"`` only: ``"sample"`` (default) the seeded 50,000 training
        or 10,000 test images (60,000 of ``split="all"``); a number, that many; None, the whole split (663,552 or
        73,728; ``split="all"``: all 737,280) as a :class:`probae.dsprites.Grid`, which
        renders each batch when it is read and which :func:`probae.fit` streams.
    """
    key = str(name).lower().replace("_", "-")
    if key == "dsprites":
        from . import dsprites

        if isinstance(size, str) and size == "sample":
            size = {"train": 50_000, "test": 10_000}.get(split, 60_000)
        return dsprites.load(split, size=size, flatten=flatten)
    if not (isinstance(size, str) and size == "sample"):
        raise ValueError(f"size= applies to 'dsprites' only, got size={size!r} for {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    path = os.fspath(name) if isinstance(name, (str, os.PathLike)) else None
    if key not in NAMES and path and (path.endswith((".npy", ".pt")) or os.path.isdir(path)):
        return _from_disk(path, split, root, flatten)
    if key in DISK_NAMES:
        return _from_disk(key, split, root, flatten)
    if key not in NAMES:  # NAMES holds the names on disk too (see the module's end)
        close = difflib.get_close_matches(key, NAMES, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown data set name={name!r}; {guess}expected one of {list(NAMES)} or the "
            "path of a .npy/.pt file or an image folder"
        )
    if key == "digits":
        ds = _digits(split)
    elif key in ("mnist", "fashion-mnist"):
        ds = _torchvision(key, split, root)
    else:
        return _toy(key, split)
    if not flatten:
        ds = replace(ds, x=ds.x.reshape(len(ds), *ds.image_shape))
    return ds


def _digits(split: str) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.RandomState(0).permutation(len(bunch.target))
    index = order[:DIGITS_TRAIN_SIZE] if split == "train" else order[DIGITS_TRAIN_SIZE:]
    x = torch.as_tensor(bunch.data[index] / 16.0, dtype=torch.float32)
    y = torch.as_tensor(bunch.target[index], dtype=torch.long)
    return Dataset(x, y, (1, 8, 8), "digits")


_TORCHVISION = {"mnist": ("MNIST", "MNIST"), "fashion-mnist": ("FashionMNIST", "FashionMNIST")}


def _torchvision(key: str, split: str, root) -> Dataset:
    import torchvision

    cls_name, folder = _TORCHVISION[key]
    if root is None:
        raise ValueError(
            f"data set {key!r} needs root=: a folder holding {folder}/raw with the original "
            f"gzip files (train-images-idx3-ubyte.gz, ...), as torchvision lays them out"
        )
    root = os.fspath(root)
    raw = os.path.join(root, folder, "raw")
    if not os.path.isdir(raw):
        raise FileNotFoundError(
            f"root={root!r} has no folder {folder}/raw; put the original {key} gzip files "
            f"(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            f"t10k-labels-idx1-ubyte.gz) in {raw}"
        )
    cls = getattr(torchvision.datasets, cls_name)
    try:
        tv = cls(root, train=(split == "train"), download=False)
    except RuntimeError:
        # The folder exists but torchvision found the files incomplete: let it fetch them
        # where a network exists, and say where they go where it does not.
        try:
            tv = cls(root, train=(split == "train"), download=True)
        except Exception as error:
            raise FileNotFoundError(
                f"could not read {key} from {raw} and could not download it ({error}); "
                "place the four original gzip files there"
            ) from error
    except Exception as error:  # a damaged gzip file, a refused legacy processed/*.pt
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"could not read {key} from {os.path.join(root, folder)} (torchvision reads "
            f"raw/*.gz, or processed/*.pt without running code): {type(error).__name__}: "
            f"{detail}"
        ) from None
    x = tv.data.to(torch.float32).div_(255.0).reshape(len(tv.data), -1)
    return Dataset(x, tv.targets.to(torch.long), (1, 28, 28), key)


def _toy(key: str, split: str, n: int = 2000) -> Dataset:
    """Two moons or a two-armed spiral, standardized, with a seeded split."""
    seed = 0 if split == "train" else 1
    rng = np.random.RandomState(seed)
    if key == "moons":
        from sklearn.datasets import make_moons

        points, labels = make_moons(n, noise=0.05, random_state=seed)
    else:
        t = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3 * math.pi
        labels = rng.randint(0, 2, n)
        sign = np.where(labels == 1, 1.0, -1.0)
        points = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], 1) / (3 * math.pi)
        points += rng.normal(scale=0.02, size=points.shape)
    points = (points - points.mean(0)) / points.std(0)
    return Dataset(
        torch.as_tensor(points, dtype=torch.float32),
        torch.as_tensor(labels, dtype=torch.long),
        None,
        key,
    )


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


# -- conditions ------------------------------------------------------------------------


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


# ``quadrants`` has an argument of the same name
_static_binarize = binarize

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


__all__ += ["ConditionalDataset", "QuadrantTask", "one_hot", "quadrants", "resolve_condition"]


# -- image data sets and files from disk ------------------------------------------------
#
# Read from the files in their published layouts (no download, no checksum of the
# originals, so a copy made for tests reads the same way). Images come as floats in
# [0, 1], channels first.

HELD_OUT = 0.1  # the test share of a data set that has no split of its own


class ImageFiles(torch.utils.data.Dataset):
    """Image files read one at a time, for data sets too large to hold in memory:
    items ``(x, y)`` with ``x`` a float tensor ``(C, H, W)`` in [0, 1].

    :param list paths: image files.
    :param labels: one integer per file, or None (labels 0).
    :param int crop: side of the central square cut first (None: none).
    :param int size: side the (cropped) image is resized to (None: as it is).
    """

    def __init__(self, paths, labels=None, crop=None, size=None, name="images"):
        self.paths, self.labels = list(paths), labels
        self.crop, self.size, self.name = crop, size, name
        if labels is not None and len(labels) != len(self.paths):
            raise ValueError(
                f"labels must hold one label per image file ({len(self.paths)}), got {len(labels)}"
            )
        if not self.paths:
            raise FileNotFoundError(f"no image files for data set {name!r}")
        first = self[0][0]
        self.image_shape = tuple(first.shape)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                pixels = self._pixels(image)
        except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for a bad file
            raise ValueError(
                f"image file {str(path)!r} of data set {self.name!r} cannot be read: {error}"
            ) from None
        x = pixels.permute(2, 0, 1).float().div_(255.0)
        return x, 0 if self.labels is None else int(self.labels[index])

    def _pixels(self, image):
        from PIL import Image

        image = image.convert("RGB")
        if self.crop is not None:
            width, height = image.size
            left, top = (width - self.crop) // 2, (height - self.crop) // 2
            image = image.crop((left, top, left + self.crop, top + self.crop))
        if self.size is not None:
            image = image.resize((self.size, self.size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())


def _require(root, name, what):
    if root is None:
        raise ValueError(f"data set {name!r} needs root=: {what}")
    root = os.fspath(root)
    return root


def _images(x_uint8_nhwc, labels, name, flatten) -> Dataset:
    x = torch.as_tensor(x_uint8_nhwc).permute(0, 3, 1, 2).float().div_(255.0)
    shape = tuple(x.shape[1:])
    if flatten:
        x = x.reshape(x.shape[0], -1)
    return Dataset(x.contiguous(), torch.as_tensor(labels, dtype=torch.long), shape, name)


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only what the CIFAR-10 python files hold: dicts,
    lists, numbers, bytes and strings, and NumPy arrays through NumPy's own array
    reconstruction. Any other class or function named in the file is refused before
    it is called, so a planted file cannot run code."""

    def find_class(self, module, name):
        allowed = _ARRAY_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which is not part of the format (only NumPy "
                "arrays, lists, dicts, numbers, bytes and strings are read)"
            )
        return allowed()


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as reconstruct
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import _reconstruct as reconstruct
    return reconstruct


def _frombuffer():
    try:
        from numpy._core.numeric import _frombuffer as frombuffer
    except ImportError:  # NumPy 1
        from numpy.core.numeric import _frombuffer as frombuffer
    return frombuffer


def _encode():
    import codecs

    def encode(text, encoding="latin1"):  # how Python 3 pickles bytes at protocol 2
        if not isinstance(text, str) or encoding != "latin1":
            raise pickle.UnpicklingError("bytes in an unexpected encoding")
        return codecs.encode(text, "latin1")

    return encode


#: the globals a pickled NumPy array names (NumPy 1 and 2, protocols 2 to 5)
_ARRAY_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _encode,
}


def read_array_pickle(path):
    """Reads a pickle of arrays and plain containers (the CIFAR-10 python files) without
    running anything it names: :class:`pickle.Unpickler` restricted to NumPy's array
    reconstruction, dicts, lists, numbers, bytes and strings.

    :raises ValueError: naming the file, if it names any other class or function, or is
        not a pickle.
    """
    try:
        with open(path, "rb") as handle:
            return _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path!r} is not a readable array pickle: {error}") from None


def cifar10(split: str = "train", root=None, flatten: bool = True) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009) from ``root/cifar-10-batches-py`` (the python
    pickles of the original archive): 50,000 training and 10,000 test images, 3x32x32.

    The files are read by a restricted unpickler (:func:`read_array_pickle`): a file
    naming anything but NumPy arrays and plain containers is refused unread, so a
    planted file runs no code."""
    root = _require(root, "cifar10", "a folder holding cifar-10-batches-py")
    folder = os.path.join(root, "cifar-10-batches-py")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for file in names:
        path = os.path.join(folder, file)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"CIFAR-10 file {path} not found (unpack cifar-10-python.tar.gz in root)"
            )
        batch = read_array_pickle(path)
        pixels = batch.get(b"data") if isinstance(batch, dict) else None
        labels = batch.get(b"labels") if isinstance(batch, dict) else None
        if (
            not isinstance(pixels, np.ndarray)
            or pixels.dtype != np.uint8
            or pixels.ndim != 2
            or pixels.shape[1] != 3 * 32 * 32
            or not isinstance(labels, list)
            or len(labels) != len(pixels)
            or not all(type(label) is int and 0 <= label < 10 for label in labels)
        ):
            raise ValueError(
                f"CIFAR-10 file {path!r} does not hold a batch of the format: a dict with "
                "b'data', a uint8 array (N, 3072), and b'labels', N integers in 0..9"
            )
        xs.append(pixels.reshape(-1, 3, 32, 32))
        ys.extend(labels)
    x = np.concatenate(xs).transpose(0, 2, 3, 1)
    return _images(x, ys, "cifar10", flatten)


def svhn(split: str = "train", root=None, flatten: bool = True) -> Dataset:
    """SVHN (Netzer et al. 2011), cropped digits, from ``root/train_32x32.mat`` and
    ``root/test_32x32.mat``; label 10 (the digit 0) becomes 0."""
    from scipy.io import loadmat

    root = _require(root, "svhn", "a folder holding train_32x32.mat and test_32x32.mat")
    path = os.path.join(root, f"{split}_32x32.mat")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SVHN file {path} not found")
    try:
        mat = loadmat(path)  # MATLAB arrays only: loadmat builds no Python objects
        x = np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2)  # (32, 32, 3, N) -> NHWC
        y = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
    except Exception as error:  # scipy's many errors for a file that is not such a .mat
        raise ValueError(
            f"SVHN file {path!r} is not a MATLAB file with arrays 'X' (32, 32, 3, N) and "
            f"'y' (N, 1): {type(error).__name__}: {error}"
        ) from None
    if x.shape[1:] != (32, 32, 3) or len(y) != len(x):
        raise ValueError(
            f"SVHN file {path!r} must hold 'X' of shape (32, 32, 3, N) and 'y' of N labels"
        )
    return _images(x, y, "svhn", flatten)


def celeba(split: str = "train", root=None) -> ImageFiles:
    """CelebA (Liu et al. 2015) aligned faces, from ``root/celeba/img_align_celeba``
    and ``root/celeba/list_eval_partition.txt`` (torchvision's layout), as 64x64
    images: the central 148x148 square resized to 64x64, as in most autoencoder papers.
    ``"train"`` is the official training partition, ``"test"`` the test one. Streamed
    (an :class:`ImageFiles`): 162,770 training images do not fit in memory as floats.
    """
    root = _require(root, "celeba", "a folder holding celeba/img_align_celeba")
    folder = os.path.join(root, "celeba")
    partition = os.path.join(folder, "list_eval_partition.txt")
    if not os.path.isfile(partition):
        raise FileNotFoundError(f"CelebA partition file {partition} not found")
    wanted = "0" if split == "train" else "2"
    with open(partition) as handle:
        files = [line.split()[0] for line in handle if line.split()[1:2] == [wanted]]
    paths = [os.path.join(folder, "img_align_celeba", f) for f in files]
    return ImageFiles(paths, crop=148, size=64, name="celeba")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def image_folder(root, split: str = "train", size=None) -> ImageFiles:
    """Images in torchvision's ``ImageFolder`` layout, ``root/<class>/<image>``,
    labelled by class folder in sorted order. With ``root/train`` and ``root/test``
    those are the splits; otherwise a seeded tenth of the files is the test split.

    :param int size: resize to ``size x size`` (needed when the images differ in size).
    """
    root = os.fspath(root)
    if os.path.isdir(os.path.join(root, split)):
        root, held_out = os.path.join(root, split), False
    else:
        held_out = True
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise FileNotFoundError(
            f"image folder {root!r} has no class folders (root/<class>/<image>)"
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(root, name))):
            if file.lower().endswith(IMAGE_SUFFIXES):
                paths.append(os.path.join(root, name, file))
                labels.append(label)
    if held_out:
        index = _held_out_split(len(paths), split)
        paths, labels = [paths[i] for i in index], [labels[i] for i in index]
    return ImageFiles(paths, labels, size=size, name="image-folder")


def _held_out_split(n: int, split: str):
    order = np.random.RandomState(0).permutation(n)
    test = max(1, int(round(HELD_OUT * n))) if n > 1 else 0
    return sorted(order[test:] if split == "train" else order[:test])


def from_file(path, split: str = "train") -> Dataset:
    """A data set from one ``.npy`` or ``.pt`` file: an array ``(N, ...)`` (uint8 images
    are divided by 255), or for ``.pt`` a tensor or a dict with ``"x"`` (and ``"y"``).
    Images, ``(N, C, H, W)``, ``(N, H, W, C)`` with C = 1 or 3, or ``(N, H, W)`` (grey),
    are stored flat with their ``image_shape`` ``(C, H, W)``.
    A seeded tenth of the points is the ``"test"`` split, the rest ``"train"``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} not found")
    y = None
    if path.endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(
                f"data file {path!r} is not a .npy array readable without running code "
                f"(object arrays, which hold pickles, are refused): {error}"
            ) from None
        if not isinstance(array, np.ndarray):
            raise ValueError(f"data file {path!r} must hold one array")
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"data file {path!r} holds an array of dtype {array.dtype}; expected real "
                "numbers (integers or floats)"
            )
        x = torch.from_numpy(array)
    elif path.endswith(".pt"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch's weights-only unpickler refused or failed
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(
                f"data file {path!r} is not a tensor file readable without running code "
                f"(torch.load(weights_only=True) refused it: {detail or type(error).__name__})"
            ) from None
        if isinstance(obj, dict):
            if "x" not in obj:
                raise ValueError(f"{path!r} holds a dict without 'x'; expected keys 'x' (and 'y')")
            x, y = obj["x"], obj.get("y")
        else:
            x = obj
        if not isinstance(x, torch.Tensor) or (y is not None and not isinstance(y, torch.Tensor)):
            raise TypeError(f"{path!r} must hold a tensor or a dict of tensors")
        if x.is_complex() or x.dtype == torch.bool:
            raise ValueError(
                f"data file {path!r} holds a tensor of dtype {x.dtype}; expected real numbers"
            )
        if y is not None:
            points = x.shape[0] if x.dim() else None
            if y.dim() != 1 or y.shape[0] != points:
                raise ValueError(
                    f"labels 'y' in {path!r} must be one per point of 'x' (shape "
                    f"({points},)), got shape {tuple(y.shape)}"
                )
            if y.is_floating_point() or y.is_complex():
                raise ValueError(f"labels 'y' in {path!r} must be integers, got dtype {y.dtype}")
    else:
        raise ValueError(f"data file {path!r} must end in .npy or .pt")
    if x.dim() < 2:
        raise ValueError(f"data in {path!r} must have shape (N, ...), got {tuple(x.shape)}")
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    index = torch.as_tensor(_held_out_split(x.shape[0], split), dtype=torch.long)
    if x.dim() == 3:  # (N, H, W): grey images
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)  # (N, H, W, C), as images are stored by most libraries
    shape = tuple(x.shape[1:]) if x.dim() == 4 else None
    name = os.path.basename(path)
    return Dataset(
        x[index].reshape(len(index), -1).contiguous() if shape else x[index],
        None if y is None else torch.as_tensor(y)[index].long(),
        shape,
        name,
    )


def _in_memory(files: ImageFiles, flatten: bool) -> Dataset:
    loader = torch.utils.data.DataLoader(files, batch_size=512)
    xs, ys = zip(*loader, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    shape = tuple(x.shape[1:])
    return Dataset(x.reshape(len(x), -1) if flatten else x, y, shape, files.name)


def open_images(name: str, split: str = "train", root=None, size=None) -> ImageFiles:
    """A streamed image data set: ``"celeba"`` or ``"image-folder"`` (``root`` the
    folder). Pass it to :func:`probae.fit` as it is; :func:`load` reads it whole."""
    key = str(name).lower().replace("_", "-")
    if key == "celeba":
        return celeba(split, root)
    if key == "image-folder":
        return image_folder(_require(root, key, "the image folder"), split, size)
    raise ValueError(f"open_images knows 'celeba' and 'image-folder', got name={name!r}")


def _from_disk(key: str, split: str, root, flatten: bool) -> Dataset:
    """The :func:`load` branch for the data sets of this section."""
    if key == "cifar10":
        return cifar10(split, root, flatten)
    if key == "svhn":
        return svhn(split, root, flatten)
    if key.endswith((".npy", ".pt")):
        return from_file(key, split)
    if key in ("celeba", "image-folder"):
        return _in_memory(open_images(key, split, root), flatten)
    return _in_memory(image_folder(key, split), flatten)  # a folder given by its path


DISK_NAMES = ("cifar10", "svhn", "celeba", "image-folder")
NAMES = NAMES + DISK_NAMES
__all__ += ["ImageFiles", "cifar10", "svhn", "celeba", "image_folder", "from_file", "open_images"]
