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
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np
import torch

__all__ = ["Dataset", "load", "binarize", "as_tensor", "batches", "NAMES"]

NAMES = ("digits", "mnist", "fashion-mnist", "moons", "spiral")
SPLITS = ("train", "test")
DIGITS_TRAIN_SIZE = 1437


@dataclass(frozen=True)
class Dataset:
    """An in-memory data set.

    :ivar torch.Tensor x: data, shape ``(N, *x_shape)``.
    :ivar y: labels of shape ``(N,)`` (``torch.long``) or None.
    :ivar tuple image_shape: ``(C, H, W)`` of one point seen as a picture, or None.
    :ivar str name: the data set's name.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    image_shape: tuple | None = None
    name: str = "tensor"

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index) -> Dataset:
        return replace(self, x=self.x[index], y=None if self.y is None else self.y[index])

    def to(self, device) -> Dataset:
        return replace(self, x=self.x.to(device), y=None if self.y is None else self.y.to(device))


def load(name: str, split: str = "train", root=None, flatten: bool = True) -> Dataset:
    """Loads a data set into memory.

    :param str name: one of ``"digits"``, ``"mnist"``, ``"fashion-mnist"``, ``"moons"``,
        ``"spiral"``.
    :param str split: ``"train"`` or ``"test"``.
    :param root: folder holding ``MNIST/raw`` or ``FashionMNIST/raw`` (torchvision's
        layout); needed for the MNIST family only.
    :param bool flatten: images as vectors ``(N, H*W)`` (True) or ``(N, C, H, W)``.
    """
    key = str(name).lower().replace("_", "-")
    if key not in NAMES:
        raise ValueError(f"unknown data set name={name!r}; expected one of {list(NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
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
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    binary = torch.bernoulli(x.detach().cpu(), generator=generator).to(x.device, x.dtype)
    return replace(data, x=binary) if isinstance(data, Dataset) else binary


def batches(n: int, batch_size: int, shuffle: bool = True, device=None):
    """Index tensors covering ``range(n)`` in batches (the last may be smaller)."""
    order = torch.randperm(n, device=device) if shuffle else torch.arange(n, device=device)
    return order.split(batch_size)
