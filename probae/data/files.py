"""Image data sets and data files read from disk, in their published layouts: CIFAR-10,
SVHN, CelebA, torchvision's image-folder layout, ``.npy``/``.pt`` files, and
:class:`ImageFiles`, the streamed form of a set too large for memory.

Nothing is downloaded and no checksum of the originals is asked for, so a copy made
for tests reads the same way. Images come as floats in [0, 1], channels first. Files
are read without running code: pickles by :func:`~probae.data.pickles.read_array_pickle`,
``.npy`` without pickles, ``.pt`` by ``torch.load(weights_only=True)``, ``.mat`` by
SciPy's array reader.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .._dataset import Dataset
from .pickles import read_array_pickle

__all__ = [
    "DISK_NAMES",
    "HELD_OUT",
    "IMAGE_SUFFIXES",
    "ImageFiles",
    "celeba",
    "cifar10",
    "from_file",
    "image_folder",
    "open_images",
    "svhn",
]


#: the data sets :func:`~probae.data.load` reads from ``root`` by name
DISK_NAMES = ("cifar10", "svhn", "celeba", "image-folder")
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
        self.image_shape = None  # the first image's, which every other must match
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
        expected = self.image_shape
        if expected is not None and tuple(x.shape) != expected:
            raise ValueError(
                f"image file {str(path)!r} of data set {self.name!r} is "
                f"{'x'.join(map(str, x.shape))} (channels x height x width) where the first "
                f"is {'x'.join(map(str, expected))}: the images of a data set must share one "
                "size (give size= to resize them, or resize the files)"
            )
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


def from_disk(key: str, split: str, root, flatten: bool) -> Dataset:
    """The :func:`~probae.data.load` branch for the data sets of this module."""
    if key == "cifar10":
        return cifar10(split, root, flatten)
    if key == "svhn":
        return svhn(split, root, flatten)
    if key.endswith((".npy", ".pt")):
        return from_file(key, split)
    if key in ("celeba", "image-folder"):
        return _in_memory(open_images(key, split, root), flatten)
    return _in_memory(image_folder(key, split), flatten)  # a folder given by its path
