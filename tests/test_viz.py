"""Pictures: the geometry behind them (codes on lines and axes, principal components,
tile layout) and PNG files a person can open."""

import matplotlib.image
import numpy as np
import pytest
import torch

from probae import VAE, data, viz
from probae.train import History
from probae.viz import _common, images, latent


@pytest.fixture
def digits_vae(device):
    return VAE(x_shape=(64,), z_dim=3, hidden=(16,)).to(device)


def _read_png(path):
    assert path.suffix == ".png" and path.is_file()
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].std() > 0.01  # not a blank canvas
    return image


# -- geometry ------------------------------------------------------------------------


def test_traversal_codes_sweep_one_coordinate_and_keep_the_others(device):
    z0 = torch.tensor([0.3, -1.2, 2.0, 0.7], device=device)
    values = torch.linspace(-3, 3, 7, device=device)
    dims = [2, 0]
    codes = latent._traversal_codes(z0, dims, values)
    assert codes.shape == (2, 7, 4)
    for row, d in enumerate(dims):
        assert torch.equal(codes[row, :, d], values)
        others = torch.tensor([k for k in range(4) if k != d], device=device)
        assert torch.equal(codes[row][:, others], z0[others].expand(7, 3))


def test_interpolation_codes_lie_evenly_on_the_segment(device):
    z_a = torch.tensor([[0.0, 1.0, -2.0], [4.0, 4.0, 4.0]], device=device)
    z_b = torch.tensor([[2.0, -1.0, 2.0], [4.0, 0.0, -4.0]], device=device)
    codes = latent._interpolation_codes(z_a, z_b, 5)
    assert codes.shape == (2, 5, 3)
    assert torch.allclose(codes[:, 0], z_a) and torch.allclose(codes[:, -1], z_b)
    assert torch.allclose(codes[:, 2], (z_a + z_b) / 2)
    # equal steps along a straight line: second differences vanish
    assert torch.allclose(codes.diff(n=2, dim=1), z_a.new_zeros(2, 3, 3), atol=1e-6)


def test_principal_components_keep_the_largest_variances(device):
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    codes = torch.randn(400, 5, generator=generator, dtype=torch.float64) @ mixing + 3.0
    codes = codes.to(device)
    plane, explained = latent._principal_components(codes)
    covariance = torch.cov(codes.T)
    eigenvalues = torch.linalg.eigvalsh(covariance).flip(0)
    assert torch.allclose(explained, eigenvalues[:2] / eigenvalues.sum())
    # the projections are uncorrelated, with the two largest eigenvalues as variances
    assert torch.allclose(torch.cov(plane.T), torch.diag(eigenvalues[:2]), atol=1e-8)


def test_mosaic_places_tile_k_at_row_k_div_ncol_column_k_mod_ncol():
    tiles = np.stack([np.full((3, 2, 1), k / 10, dtype=np.float32) for k in range(7)])
    mosaic = _common._mosaic(tiles, ncol=3, pad=1)
    assert mosaic.shape == (3 * 4 + 1, 3 * 3 + 1, 1)
    for k in range(7):
        r, c = divmod(k, 3)
        block = mosaic[1 + 4 * r : 4 + 4 * r, 1 + 3 * c : 3 + 3 * c]
        assert np.all(block == np.float32(k / 10))
    # the two cells after the last tile and every border stay grey
    assert np.all(mosaic[9:12, 4:9] == np.float32(_common._PAD_VALUE))
    assert np.all(mosaic[0] == np.float32(_common._PAD_VALUE))


def test_reconstruction_rows_follow_their_originals():
    top = np.stack([np.full((2, 2, 1), 0.1 * k, dtype=np.float32) for k in range(5)])
    bottom = top + 0.05
    mosaic = images._paired_rows(top, bottom, ncol=3)
    # rows: originals 0-2, reconstructions 0-2, originals 3-4, reconstructions 3-4
    assert mosaic.shape[0] == 4 * 3 + 1
    for k in range(5):
        chunk, c = divmod(k, 3)
        left = 1 + 3 * c
        assert np.all(mosaic[1 + 6 * chunk, left] == top[k, 0, 0])
        assert np.all(mosaic[4 + 6 * chunk, left] == bottom[k, 0, 0])


def test_normalize_keeps_unit_interval_and_rescales_anything_else():
    inside = np.array([0.0, 0.25, 1.0])
    assert np.array_equal(_common._normalize(inside)[0], inside)
    a, b = _common._normalize(np.array([-2.0, 0.0]), np.array([2.0, 1.0]))
    assert np.allclose(a, [0.0, 0.5]) and np.allclose(b, [1.0, 0.75])


def test_image_shape_comes_from_the_data_then_the_model():
    assert _common._image_shape(VAE(x_shape=(64,), z_dim=2)) == (1, 8, 8)
    assert _common._image_shape(VAE(x_shape=(784,), z_dim=2)) == (1, 28, 28)
    assert _common._image_shape(None, x_shape=(3, 32, 32)) == (3, 32, 32)
    flat = data.Dataset(torch.zeros(2, 12), None, (3, 2, 2))
    assert _common._image_shape(VAE(x_shape=(12,), z_dim=2), flat) == (3, 2, 2)
    with pytest.raises(ValueError, match="image_shape"):
        _common._image_shape(VAE(x_shape=(12,), z_dim=2))


# -- files ---------------------------------------------------------------------------


def test_every_picture_is_a_png_written_on_the_models_device(digits_vae, tmp_path, device):
    test = data.load("digits", split="test")
    on_device = test.to(device)  # pictures take the data on either device
    paths = [
        viz.sample_grid(digits_vae, 16, tmp_path / "samples.png", seed=0),
        viz.reconstructions(digits_vae, test[:10], tmp_path / "recon.png"),
        viz.traversal(digits_vae, test[0], dims=[0, 2], steps=5, path=tmp_path / "t.png"),
        viz.traversal(digits_vae, z=torch.zeros(3), path=tmp_path / "t0.png"),
        viz.interpolation(digits_vae, test.x[:3], test.x[3:6], 6, tmp_path / "i.png"),
        viz.latent_scatter(digits_vae, test, tmp_path / "sub" / "latent.png"),
        viz.image_grid(test.x[:12], tmp_path / "grid.png", nrow=4),
        viz.reconstructions(digits_vae, on_device[:10], tmp_path / "recon_d.png"),
        viz.interpolation(digits_vae, on_device.x[:3], on_device.x[3:6], 6, tmp_path / "i_d.png"),
        viz.latent_scatter(digits_vae, on_device, tmp_path / "latent_d.png"),
        viz.image_grid(on_device.x[:12], tmp_path / "grid_d.png", nrow=4),
    ]
    for path in paths:
        _read_png(path)


def test_sample_grid_with_a_seed_leaves_the_global_random_stream_alone(digits_vae, tmp_path):
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    viz.sample_grid(digits_vae, 4, tmp_path / "s.png", seed=11)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("z_dim", [1, 2])
def test_latent_scatter_of_short_codes(z_dim, tmp_path, device):
    vae = VAE(x_shape=(64,), z_dim=z_dim, hidden=(16,)).to(device)
    test = data.load("digits", split="test")
    _read_png(viz.latent_scatter(vae, test, tmp_path / "a.png"))
    _read_png(viz.latent_scatter(vae, test.x, tmp_path / "b.png"))


def test_history_plot_reads_a_history_or_a_mapping(tmp_path):
    history = History()
    for epoch in range(1, 6):
        history.append(epoch=epoch, train_loss=30.0 / epoch, val_loss=31.0 / epoch)
    _read_png(viz.history_plot(history, tmp_path / "h.png"))
    _read_png(viz.history_plot({"epoch": [1, 2, 3], "train_loss": [3, 2, 1.5]}, tmp_path / "d.png"))
    with pytest.raises(ValueError, match="empty"):
        viz.history_plot(History(), tmp_path / "e.png")


def test_bad_arguments_name_themselves(digits_vae, tmp_path):
    x = data.load("digits", split="test").x
    with pytest.raises(ValueError, match="dims"):
        viz.traversal(digits_vae, x[0], dims=[3], path=tmp_path / "t.png")
    with pytest.raises(ValueError, match="x or z"):
        viz.traversal(digits_vae, x[0], z=torch.zeros(3), path=tmp_path / "t.png")
    with pytest.raises(ValueError, match="x_a and x_b"):
        viz.interpolation(digits_vae, x[:2], x[:3], path=tmp_path / "i.png")
    with pytest.raises(ValueError, match="steps"):
        viz.interpolation(digits_vae, x[0], x[1], steps=1, path=tmp_path / "i.png")
    with pytest.raises(ValueError, match="n must be"):
        viz.sample_grid(digits_vae, 0, tmp_path / "s.png")
    with pytest.raises(ValueError, match="image_shape"):
        viz.image_grid(torch.rand(4, 10), tmp_path / "g.png")
