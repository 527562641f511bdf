"""Data sets by name (:func:`load`), and those built in: the 8x8 digits that ship with
scikit-learn, MNIST and Fashion-MNIST through torchvision, and the 2-D toy sets;
dSprites comes from :mod:`probae.dsprites`, image sets and files from
:mod:`probae.data.files`."""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import replace

import numpy as np
import torch

from .. import dsprites
from .._dataset import Dataset
from .files import DISK_NAMES, from_disk

__all__ = ["DIGITS_TRAIN_SIZE", "NAMES", "SPLITS", "load"]


#: the data sets :func:`load` knows by name: built in, then read from ``root``
NAMES = ("digits", "mnist", "fashion-mnist", "moons", "spiral", "dsprites") + DISK_NAMES
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
        if isinstance(size, str) and size == "sample":
            size = {"train": 50_000, "test": 10_000}.get(split, 60_000)
        return dsprites.load(split, size=size, flatten=flatten)
    if not (isinstance(size, str) and size == "sample"):
        raise ValueError(f"size= applies to 'dsprites' only, got size={size!r} for {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    path = os.fspath(name) if isinstance(name, (str, os.PathLike)) else None
    if key not in NAMES and path and (path.endswith((".npy", ".pt")) or os.path.isdir(path)):
        return from_disk(path, split, root, flatten)
    if key in DISK_NAMES:
        return from_disk(key, split, root, flatten)
    if key not in NAMES:
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
