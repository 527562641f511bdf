"""dSprites as generated here matches its definition: the factor grid, hand-checked
images, and shape areas."""

import math

import pytest
import torch

from probae import data, dsprites


def test_the_grid_holds_every_combination_once():
    index = torch.arange(dsprites.NUM_IMAGES)
    classes = dsprites.index_to_classes(index)
    assert dsprites.NUM_IMAGES == 737_280
    for j, size in enumerate(dsprites.FACTOR_SIZES):
        counts = torch.bincount(classes[:, j], minlength=size)
        assert counts.tolist() == [dsprites.NUM_IMAGES // size] * size
    assert torch.equal(dsprites.classes_to_index(classes), index)
    # position y runs fastest, shape slowest (the original file's order)
    assert dsprites.index_to_classes(torch.tensor([1, 32, 737_279])).tolist() == [
        [0, 0, 0, 0, 1],
        [0, 0, 0, 1, 0],
        [2, 5, 39, 31, 31],
    ]


def test_factor_values():
    values = dsprites.factor_values(torch.tensor([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31]]))
    assert values[0].tolist() == pytest.approx([1, 0.5, 0, 0, 0])
    assert values[1].tolist() == pytest.approx([3, 1.0, 2 * math.pi, 1, 1])


def _image(shape, scale, orientation, px, py):
    return dsprites.render(torch.tensor([[shape, scale, orientation, px, py]]))[0, 0]


def test_square_at_the_top_left_is_the_sixteen_pixel_block():
    # center (12, 12), half-side 8: pixel centers 4.5 .. 19.5
    image = _image(0, 5, 0, 0, 0)
    expected = torch.zeros(64, 64)
    expected[4:20, 4:20] = 1
    assert torch.equal(image, expected)
    # position x moves columns, position y rows: 40 pixels from first to last
    assert torch.equal(_image(0, 5, 0, 31, 0), torch.roll(expected, 40, dims=1))
    assert torch.equal(_image(0, 5, 0, 0, 31), torch.roll(expected, 40, dims=0))


def test_ellipse_is_long_along_x_at_orientation_zero():
    # semi-axes 8 (columns) and 4 (rows) around (12, 12)
    rows, cols = _image(1, 5, 0, 0, 0).nonzero().T
    assert (rows.min().item(), rows.max().item()) == (8, 15)
    assert (cols.min().item(), cols.max().item()) == (4, 19)


def test_heart_is_mirror_symmetric_with_a_notch_on_top():
    image = _image(2, 5, 0, 0, 0)
    # pixel columns j and 23 - j lie symmetrically about the center column 12
    assert torch.equal(image[:, :24], image[:, :24].flip(1))
    top = image.nonzero()[:, 0].min()
    assert image[top, 11] == 0 and image[top, 12] == 0  # between the lobes
    assert image[top].sum() > 0


def test_images_are_binary_and_inside_the_frame():
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(dsprites.NUM_IMAGES, (500,), generator=generator)
    images = dsprites.render(dsprites.index_to_classes(index))
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    # the border rows and columns stay black: no shape is cut by the frame
    border = torch.cat(
        [images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]]
    )
    assert border.sum() == 0


@pytest.mark.parametrize("shape", range(3))
def test_mean_pixel_count_is_the_shape_area(shape):
    """Over orientations and positions, the pixels whose centers fall inside a shape
    average to its area (the sub-pixel offsets are spread evenly)."""
    generator = torch.Generator().manual_seed(shape)
    for scale in (0, 5):
        n = 300
        classes = torch.stack(
            [
                torch.full((n,), shape),
                torch.full((n,), scale),
                torch.randint(40, (n,), generator=generator),
                torch.randint(32, (n,), generator=generator),
                torch.randint(32, (n,), generator=generator),
            ],
            -1,
        )
        counts = dsprites.render(classes).sum((1, 2, 3))
        exact = dsprites.area(dsprites.SHAPES[shape], 0.5 + scale / 10)
        assert counts.mean().item() == pytest.approx(exact, rel=0.02)
        assert (counts.std() / math.sqrt(n)).item() < 0.01 * exact  # the test can tell


def test_load_returns_images_with_their_factors():
    ds = dsprites.load("test", size=64)
    assert ds.x.shape == (64, 1, 64, 64) and ds.factors.shape == (64, 5)
    assert torch.equal(ds.x, dsprites.render(ds.factors))
    assert torch.equal(ds.y, ds.factors[:, 0])
    train = dsprites.load("train", size=64, flatten=True)
    assert train.x.shape == (64, 4096)
    # the splits are disjoint
    a = set(dsprites.classes_to_index(ds.factors).tolist())
    b = set(dsprites.classes_to_index(train.factors).tolist())
    assert not a & b
    # slicing a Dataset keeps the factors aligned
    assert torch.equal(ds[10:20].factors, ds.factors[10:20])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="classes"):
        dsprites.render(torch.tensor([[3, 0, 0, 0, 0]]))
    with pytest.raises(TypeError, match="classes"):
        dsprites.render(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="split"):
        dsprites.load("validation")
    with pytest.raises(ValueError, match="size"):
        dsprites.load("test", size=0)


@pytest.mark.slow
def test_data_load_dsprites():
    ds = data.load("dsprites", split="test", flatten=False)
    assert ds.x.shape == (10_000, 1, 64, 64) and ds.factors.shape == (10_000, 5)
    assert data.load("dsprites", split="test").x.shape == (10_000, 4096)


def test_factors_follow_slicing_and_devices(device):
    x, factors = torch.rand(6, 2), torch.arange(6).reshape(6, 1)
    for ds in (
        data.Dataset(x=x, factors=factors),
        data.ConditionalDataset(x=x, c=torch.zeros(6, 1), factors=factors),
    ):
        assert torch.equal(ds[2:4].factors, factors[2:4])
        assert ds.to(device).factors.device.type == device.type
