"""Each data set loader reads a tiny fake copy written in the real on-disk format."""

import pickle

import numpy as np
import pytest
import torch

from probae import data

PIL = pytest.importorskip("PIL.Image")


def test_cifar10_reads_the_python_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.RandomState(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels = rng.randint(0, 256, size=(3, 3072), dtype=np.uint8)
        labels = rng.randint(0, 10, size=3).tolist()
        batches[name] = (pixels, labels)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": pixels, b"labels": labels, b"batch_label": b"x"}, handle)
    train = data.load("cifar10", "train", root=tmp_path, flatten=False)
    test = data.load("cifar10", "test", root=tmp_path)
    assert train.x.shape == (15, 3, 32, 32) and train.image_shape == (3, 32, 32)
    assert test.x.shape == (3, 3072)
    # the rows are channel planes (R, G, B), each 32x32 row-major, over 255
    pixels, labels = batches["data_batch_2"]
    expected = torch.as_tensor(pixels[1].reshape(3, 32, 32), dtype=torch.float32) / 255
    assert torch.equal(train.x[4], expected)
    assert train.y[3:6].tolist() == labels
    assert torch.equal(test.x.reshape(3, 3, 32, 32)[0] * 255, torch.as_tensor(
        batches["test_batch"][0][0].reshape(3, 32, 32), dtype=torch.float32))  # fmt: skip


def test_svhn_reads_the_matlab_files(tmp_path):
    from scipy.io import savemat

    rng = np.random.RandomState(1)
    x = rng.randint(0, 256, size=(32, 32, 3, 4), dtype=np.uint8)
    y = np.array([[10], [1], [5], [10]], dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    test = data.load("svhn", "test", root=tmp_path, flatten=False)
    assert test.x.shape == (4, 3, 32, 32)
    assert test.y.tolist() == [0, 1, 5, 0]  # label 10 is the digit 0
    assert test.x[2, 1, 7, 9] * 255 == float(x[7, 9, 1, 2])
    with pytest.raises(FileNotFoundError, match="train_32x32"):
        data.load("svhn", "train", root=tmp_path)


def _write_image(path, pixels):
    PIL.fromarray(pixels).save(path)


def test_celeba_crops_the_centre_and_resizes_to_64(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(2)
    lines = []
    for i in range(5):
        pixels = rng.randint(0, 256, size=(218, 178, 3), dtype=np.uint8)
        pixels[:, :15] = 0  # the border a 148 centre crop cuts away
        _write_image(folder / f"{i + 1:06d}.png", pixels)
        lines.append(f"{i + 1:06d}.png {[0, 0, 1, 2, 0][i]}")
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    train = data.open_images("celeba", "train", root=tmp_path)
    assert len(train) == 3 and train.image_shape == (3, 64, 64)
    x, _ = train[0]
    # an independent crop + resize of the same file
    with PIL.open(folder / "000001.png") as image:
        expected = image.crop((15, 35, 163, 183)).resize((64, 64), PIL.BILINEAR)
    assert torch.equal((x * 255).round().to(torch.uint8).permute(1, 2, 0),
                       torch.from_numpy(np.asarray(expected).copy()))  # fmt: skip
    test = data.load("celeba", "test", root=tmp_path)
    assert test.x.shape == (1, 3 * 64 * 64)


def test_image_folder_labels_by_class_folder(tmp_path):
    rng = np.random.RandomState(3)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(5):
            _write_image(tmp_path / name / f"{i}.png", rng.randint(0, 256, (8, 8, 3), np.uint8))
    train = data.load("image-folder", "train", root=tmp_path, flatten=False)
    test = data.load(str(tmp_path), "test")  # a folder by its path, as --data takes it
    assert len(train) == 9 and len(test) == 1  # a seeded tenth is held out
    assert train.x.shape[1:] == (3, 8, 8) and test.x.shape[1:] == (3 * 8 * 8,)
    assert sorted(set(train.y.tolist())) == [0, 1]
    files = data.image_folder(tmp_path, "train")
    x, label = files[0]
    with PIL.open(files.paths[0]) as image:
        assert torch.equal(
            x.permute(1, 2, 0) * 255, torch.as_tensor(np.array(image), dtype=torch.float32)
        )
    assert label == (0 if "cat" in files.paths[0] else 1)


def test_an_image_folder_of_mixed_sizes_is_refused_naming_the_file(tmp_path):
    rng = np.random.RandomState(4)
    (tmp_path / "a").mkdir()
    for i in range(10):  # heights 8 and 9 in turn: any nine of them hold both
        _write_image(tmp_path / "a" / f"{i}.png", rng.randint(0, 256, (8 + i % 2, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\d\.png' .* is 3x[89]x8 .* where the first is 3x[89]x8"):
        data.load(str(tmp_path), "train")
    resized = data.image_folder(tmp_path, "train", size=6)  # one size: read as one set
    assert {resized[i][0].shape for i in range(len(resized))} == {(3, 6, 6)}


def test_npy_and_pt_files(tmp_path):
    x = np.random.RandomState(4).randint(0, 256, size=(20, 1, 4, 4)).astype(np.uint8)
    np.save(tmp_path / "images.npy", x)
    train = data.load(str(tmp_path / "images.npy"), "train")
    test = data.load(str(tmp_path / "images.npy"), "test")
    assert len(train) == 18 and len(test) == 2 and train.image_shape == (1, 4, 4)
    both = torch.cat([train.x, test.x]) * 255
    assert sorted(map(tuple, both.tolist())) == sorted(
        map(tuple, x.reshape(20, -1).astype(np.float32).tolist())
    )
    real = torch.randn(10, 3)
    torch.save({"x": real, "y": torch.arange(10)}, tmp_path / "points.pt")
    points = data.load(tmp_path / "points.pt", "train")
    assert torch.equal(points.x, real[points.y])  # rows keep their labels
    torch.save(real, tmp_path / "bare.pt")
    assert data.load(str(tmp_path / "bare.pt"), "test").x.shape == (1, 3)
    with pytest.raises(ValueError, match="'x'"):
        torch.save({"z": real}, tmp_path / "bad.pt")
        data.load(str(tmp_path / "bad.pt"))
