r"""Feature spaces for sample quality (:func:`probae.evaluate.sample_quality`).

The Inception network that FID usually uses cannot be downloaded on many machines,
and it is the wrong space for small grey images: papers on MNIST-like data measure
FID on the features of a classifier trained on the data set itself.
:func:`classifier` trains one, a small convolutional network, on the labelled data,
reports its held-out accuracy, and caches it on disk so that every model is measured
in the same space.

The features are the network's penultimate layer, :math:`h(x) \in \mathbb R^{F}`
(ReLU units), whose classes are read off linearly by the last layer.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from .. import data as _data
from .._common import positive_int

__all__ = ["Classifier", "classifier"]


class Classifier(nn.Module):
    r"""A small convolutional classifier whose ``forward`` returns its penultimate
    features :math:`h(x)`; :meth:`logits` returns the class scores :math:`W h(x) + b`.

    Two 3x3 convolutions (``width`` and ``2 * width`` channels, ReLU, each followed by
    2x2 max pooling while the image is at least 4 pixels across), a fully connected layer
    of ``feature_dim`` ReLU units (the features), and a linear layer to the classes.
    Points may come flat, ``(N, C*H*W)``, or as images, ``(N, C, H, W)``.

    :param tuple image_shape: ``(C, H, W)``.
    :param int num_classes: number of classes.
    :param int width: channels of the first convolution.
    :param int feature_dim: F, the size of the features.
    """

    def __init__(self, image_shape, num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
        self.image_shape = image_shape
        self.num_classes = positive_int("num_classes", num_classes)
        self.width = positive_int("width", width)
        self.feature_dim = positive_int("feature_dim", feature_dim)
        channels, height, breadth = image_shape
        layers = []
        for out in (self.width, 2 * self.width):
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
            if min(height, breadth) >= 4:
                layers.append(nn.MaxPool2d(2))
                height, breadth = height // 2, breadth // 2
            channels = out
        self.convolutions = nn.Sequential(*layers)
        self.hidden = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * height * breadth, self.feature_dim), nn.ReLU()
        )
        self.head = nn.Linear(self.feature_dim, self.num_classes)
        #: accuracy on held-out labelled data, written by :func:`classifier`
        self.accuracy = float("nan")

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) == self.image_shape:
            return x
        if x.dim() == 2 and x.shape[1] == self.image_shape_numel:
            return x.reshape(x.shape[0], *self.image_shape)
        raise ValueError(
            f"x must have shape (N, {self.image_shape_numel}) or (N, "
            f"{', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}"
        )

    @property
    def image_shape_numel(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features :math:`h(x)`, shape ``(N, feature_dim)``."""
        return self.hidden(self.convolutions(self._images(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores, shape ``(N, num_classes)``."""
        return self.head(self(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The most likely class of each point."""
        return torch.cat([self.logits(xb).argmax(-1) for xb in x.split(batch_size)])

    def extra_repr(self):
        return f"image_shape={self.image_shape}, classes={self.num_classes}, accuracy={self.accuracy:.4f}"


def _labelled(data, name):
    if not isinstance(data, _data.Dataset):
        raise TypeError(
            f"{name} must be a labelled probae.data.Dataset (data.load(...)), got "
            f"{type(data).__name__}"
        )
    if data.y is None:
        raise ValueError(f"{name} has no labels (y is None): a classifier needs them")
    if data.image_shape is None:
        raise ValueError(f"{name} has no image_shape: the classifier is convolutional")
    return data.x.reshape(len(data), *data.image_shape).float(), data.y.long()


def _fingerprint(x, y, options) -> str:
    digest = hashlib.sha256(repr(options).encode())
    digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    digest.update(y.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _default_cache_dir() -> Path:
    root = os.environ.get("PROBAE_CACHE") or Path.home() / ".cache" / "probae"
    return Path(root) / "features"


def classifier(
    train,
    test=None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    width: int = 32,
    feature_dim: int = 128,
    seed: int = 0,
    cache=None,
    verbose: bool = False,
) -> Classifier:
    r"""A :class:`Classifier` trained on labelled data, as a feature extractor for
    :func:`probae.evaluate.sample_quality`.

    Trains by Adam on the cross-entropy for ``epochs`` passes, then measures its accuracy
    on ``test`` (or, without it, on a sixth of ``train`` held out from training) and stores it
    as ``.accuracy``. The result is cached: a file named after a hash of the data and the
    options is written (atomically) and read back, with ``weights_only=True``, by later calls
    with the same data and options, so that all models are measured in one feature space.

    :param train: a labelled :class:`~probae.data.Dataset` (``y`` and ``image_shape`` set).
    :param test: labelled held-out data for the accuracy, or None.
    :param int epochs: passes over the training points.
    :param int batch_size: points per step.
    :param float lr: Adam's learning rate.
    :param int width: channels of the first convolution.
    :param int feature_dim: size of the features.
    :param int seed: seeds the initialization, the hold-out split and the batches.
    :param cache: a folder for the cached classifier (default ``$PROBAE_CACHE/features``,
        else ``~/.cache/probae/features``), or False to train without caching.
    :param bool verbose: print the accuracy once trained.
    :rtype: Classifier
    """
    x, y = _labelled(train, "train")
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    lr = float(lr)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if test is not None:
        test_x, test_y = _labelled(test, "test")
    else:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        held = order[: len(x) // 6].to(x.device)
        kept = order[len(x) // 6 :].to(x.device)
        x, y, test_x, test_y = x[kept], y[kept], x[held], y[held]
    num_classes = int(max(int(y.max()), int(test_y.max()))) + 1
    options = dict(
        image_shape=tuple(train.image_shape),
        num_classes=num_classes,
        width=width,
        feature_dim=feature_dim,
    )
    training = dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    path = None
    if cache is not False:
        folder = _default_cache_dir() if cache is None else Path(cache)
        if not isinstance(folder, Path):
            raise TypeError(f"cache must be a folder path, None or False, got {cache!r}")
        key = _fingerprint(x, y, (options, training, tuple(test_x.shape)))
        path = folder / f"classifier-{key}.pt"
        if path.exists():
            stored = torch.load(path, map_location=x.device, weights_only=True)
            net = Classifier(**stored["options"]).to(x.device)
            net.load_state_dict(stored["state_dict"])
            net.accuracy = float(stored["accuracy"])
            net.eval()
            if verbose:
                print(f"classifier features from {path}: held-out accuracy {net.accuracy:.4f}")
            return net

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Classifier(**options).to(x.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for index in order.split(batch_size):
            loss = nn.functional.cross_entropy(net.logits(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    net.accuracy = float((net.predict(test_x) == test_y).double().mean())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        stored_options = {**options, "image_shape": list(options["image_shape"])}
        torch.save(
            {"options": stored_options, "state_dict": state, "accuracy": net.accuracy}, partial
        )
        os.replace(partial, path)
    if verbose:
        print(f"classifier features trained: held-out accuracy {net.accuracy:.4f}")
    return net
