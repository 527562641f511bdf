"""No file a user points probae at runs code, and every damaged or mismatched file is
one clear error naming it.

Each reader is given a planted pickle whose unpickling would create a marker file
(``__reduce__`` returning ``open(marker, "w")``): the reader must refuse it with an error
naming the file, and the marker must not exist afterwards.
"""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from probae import data


class Payload:
    """Unpickling this creates the file ``marker``: what an attacker's code would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path, marker, wrap=lambda payload: payload, protocol=pickle.HIGHEST_PROTOCOL):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(wrap(Payload(marker)), handle, protocol=protocol)
    return path


def _refused(load, marker, named):
    with pytest.raises((ValueError, TypeError)) as caught:
        load()
    assert not marker.exists(), "the planted payload ran"
    assert str(named) in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1
    return str(caught.value)


def _ok_cifar_batch(n=2):
    pixels = np.arange(n * 3072, dtype=np.int64).astype(np.uint8).reshape(n, 3072)
    return {b"data": pixels, b"labels": list(range(n)), b"batch_label": b"b"}


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize(
    "wrap",
    [
        lambda p: p,  # the file is the payload
        lambda p: {**_ok_cifar_batch(), b"labels": [p, 1]},  # hidden in a valid batch
        lambda p: {**_ok_cifar_batch(), b"extra": p},
    ],
    ids=["bare", "in-labels", "extra-key"],
)
def test_cifar10_refuses_a_planted_pickle(tmp_path, protocol, wrap):
    marker = tmp_path / "ran"
    path = _plant(tmp_path / "cifar-10-batches-py" / "test_batch", marker, wrap, protocol)
    message = _refused(lambda: data.load("cifar10", "test", root=tmp_path), marker, path)
    assert "builtins" in message or "io.open" in message  # the refused global is named


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_still_reads_arrays_of_every_protocol(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = _ok_cifar_batch(3)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(batch, handle, protocol=protocol)
    test = data.cifar10("test", root=tmp_path, flatten=True)
    assert torch.equal(test.x * 255, torch.as_tensor(batch[b"data"], dtype=torch.float32))
    assert test.y.tolist() == [0, 1, 2]


def test_cifar10_refuses_a_batch_of_another_shape(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    bad = {b"data": np.zeros((2, 10), dtype=np.uint8), b"labels": [0, 1]}
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(bad, handle)
    with pytest.raises(ValueError, match="does not hold a batch of the format"):
        data.cifar10("test", root=tmp_path)
    bad = {**_ok_cifar_batch(2), b"labels": [0, 1, 2]}  # more labels than images
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(bad, handle)
    with pytest.raises(ValueError, match="test_batch"):
        data.cifar10("test", root=tmp_path)


def test_npy_object_array_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "data.npy"
    np.save(path, np.array([Payload(marker), 1], dtype=object), allow_pickle=True)
    _refused(lambda: data.load(str(path)), marker, path)


def test_pt_pickle_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "data.pt"
    torch.save({"x": torch.zeros(4, 2), "y": Payload(marker)}, path)
    _refused(lambda: data.load(str(path)), marker, path)
    # a plain pickle named .pt (not a torch zip file)
    _plant(path, marker)
    _refused(lambda: data.load(str(path)), marker, path)


def test_mnist_legacy_processed_file_is_refused(tmp_path):
    pytest.importorskip("torchvision")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    marker = tmp_path / "ran"
    for name in ("training.pt", "test.pt"):
        path = tmp_path / "MNIST" / "processed" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save((torch.zeros(2, 28, 28, dtype=torch.uint8), Payload(marker)), path)
    _refused(lambda: data.load("mnist", "test", root=tmp_path), marker, tmp_path / "MNIST")


def test_mnist_damaged_gzip_is_named(tmp_path):
    pytest.importorskip("torchvision")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / stem).write_bytes(b"\x00\x00\x08\x03 not an idx file")
        with gzip.open(raw / f"{stem}.gz", "wb") as handle:
            handle.write(b"\x00\x00\x08\x03 not an idx file")
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        data.load("mnist", "test", root=tmp_path)
    assert "MNIST" in str(caught.value)


def test_svhn_planted_file_is_refused(tmp_path):
    pytest.importorskip("scipy")
    marker = tmp_path / "ran"
    path = _plant(tmp_path / "test_32x32.mat", marker)
    _refused(lambda: data.load("svhn", "test", root=tmp_path), marker, path)


def test_image_folder_planted_or_corrupt_image_is_named(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    marker = tmp_path / "ran"
    good = tmp_path / "imgs" / "train" / "a" / "good.png"  # root/train: no held-out split
    good.parent.mkdir(parents=True)
    PIL.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(good)
    bad = _plant(good.parent / "zz.png", marker)
    files = data.image_folder(tmp_path / "imgs", "train")
    assert files.paths == [str(good), str(bad)]
    _refused(lambda: files[1], marker, bad)
    _refused(lambda: data.load(str(tmp_path / "imgs")), marker, bad)
    # a truncated PNG (a real header, the rest cut off) is named too
    blob = good.read_bytes()
    truncated = tmp_path / "cut" / "train" / "a" / "cut.png"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(blob[: len(blob) // 2])
    _refused(lambda: data.load(str(tmp_path / "cut")), marker, truncated)


def test_celeba_planted_image_is_named(tmp_path):
    pytest.importorskip("PIL.Image")
    marker = tmp_path / "ran"
    folder = tmp_path / "celeba"
    bad = _plant(folder / "img_align_celeba" / "000001.jpg", marker)
    (folder / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    _refused(lambda: data.celeba("train", root=tmp_path), marker, bad)


def test_complex_arrays_are_refused(tmp_path):
    path = tmp_path / "complex.npy"
    np.save(path, np.ones((4, 2), dtype=np.complex64))
    with pytest.raises(ValueError, match="complex64"):
        data.load(str(path))
    torch.save(torch.ones(4, 2, dtype=torch.complex64), tmp_path / "complex.pt")
    with pytest.raises(ValueError, match="complex64"):
        data.load(str(tmp_path / "complex.pt"))


@pytest.mark.parametrize("labels", [3, 5], ids=["shorter", "longer"])
def test_labels_not_one_per_point_are_refused(tmp_path, labels):
    path = tmp_path / "points.pt"
    torch.save({"x": torch.randn(4, 2), "y": torch.arange(labels)}, path)
    with pytest.raises(ValueError, match="one per point"):
        data.load(str(path))
    with pytest.raises(ValueError, match="y must hold one row per point"):
        data.Dataset(torch.randn(4, 2), torch.arange(labels))
