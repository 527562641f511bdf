"""Data sets: the fixed digits split, the MNIST family from local files, binarization."""

import pytest
import torch

from probae import data


def test_digits_split_is_fixed_disjoint_and_complete():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert train.x.shape == (1437, 64) and test.x.shape == (360, 64)
    assert train.image_shape == (1, 8, 8)
    assert 0 <= train.x.min() and train.x.max() <= 1
    assert set(train.y.tolist()) == set(range(10))
    # no image is in both splits (digits has a few exact duplicates; compare indices instead)
    from sklearn.datasets import load_digits

    everything = torch.as_tensor(load_digits().data / 16.0, dtype=torch.float32)
    assert train.x.shape[0] + test.x.shape[0] == everything.shape[0]
    again = data.load("digits", "train")
    assert torch.equal(again.x, train.x)


def test_unflattened_images():
    assert data.load("digits", "test", flatten=False).x.shape == (360, 1, 8, 8)


def test_static_binarization_is_seeded_and_unbiased():
    test = data.load("digits", "test")
    a, b = data.binarize(test, seed=0), data.binarize(test, seed=0)
    assert torch.equal(a.x, b.x)
    assert set(a.x.unique().tolist()) <= {0.0, 1.0}
    # E[binarize(x)] = x: 360 * 64 Bernoulli draws, standard error below 0.003
    assert abs(a.x.mean().item() - test.x.mean().item()) < 0.01
    assert not torch.equal(a.x, data.binarize(test, seed=1).x)


def test_toy_sets_are_standardized():
    for name in ("moons", "spiral"):
        ds = data.load(name)
        assert ds.x.shape[1] == 2
        torch.testing.assert_close(ds.x.mean(0), torch.zeros(2), atol=1e-5, rtol=0)


def test_unknown_names_and_missing_folders_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown data set name='cifar'"):
        data.load("cifar")
    with pytest.raises(ValueError, match="split must be one of"):
        data.load("digits", "validation")
    with pytest.raises(ValueError, match="needs root="):
        data.load("mnist")
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw"):
        data.load("mnist", root=tmp_path)
    with pytest.raises(ValueError, match=r"binarize needs data in \[0, 1\]"):
        data.binarize(torch.tensor([[2.0]]))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_family_reads_the_original_gzip_files(name, mnist_root):
    folder = "MNIST" if name == "mnist" else "FashionMNIST"
    if not (mnist_root / folder / "raw").is_dir():
        pytest.skip(f"{folder} files absent")
    test = data.load(name, "test", root=mnist_root)
    assert test.x.shape == (10000, 784) and test.y.shape == (10000,)
    assert test.image_shape == (1, 28, 28)
    assert 0 <= test.x.min() and test.x.max() <= 1
