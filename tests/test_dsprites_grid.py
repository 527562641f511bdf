"""The whole dSprites set as a grid rendered on demand: the same images as the
in-memory renderer, little memory, streamed training, metric batches drawn from the
factor grid. No test renders more than a few thousand images."""

import hashlib
import math
import os
import subprocess
import sys
import textwrap

import pyro
import pytest
import torch

import probae
from probae import VAE, batches, data, dsprites, evaluate
from probae.evaluate import disentangle


def _reference_render(classes):
    """The renderer as first written (every shape tested for every image, then one
    kept), kept here to pin the images: the library's renderer must equal it."""
    values = dsprites.factor_values(classes).float()
    shape, scale, theta, px, py = values.unbind(-1)
    centers = torch.arange(64, dtype=torch.float32) + 0.5
    dx = centers.view(1, 1, -1) - (12.0 + 40.0 * px).view(-1, 1, 1)
    dy = centers.view(1, -1, 1) - (12.0 + 40.0 * py).view(-1, 1, 1)
    cos, sin = theta.cos().view(-1, 1, 1), theta.sin().view(-1, 1, 1)
    unit = (scale * 8.0).view(-1, 1, 1)
    u = (dx * cos + dy * sin) / unit
    v = (-dx * sin + dy * cos) / unit
    square = torch.maximum(u.abs(), v.abs()) <= 1
    ellipse = u**2 + (2 * v) ** 2 <= 1
    w = v - (0.5 + math.sqrt(0.5) - 1.0) / 2.0
    heart = ((u.abs() + w.abs()) <= 1) | ((u.abs() - 0.5) ** 2 + (w + 0.5) ** 2 <= 0.5)
    kind = shape.view(-1, 1, 1)
    out = torch.where(kind == 1, square, torch.where(kind == 2, ellipse, heart))
    return out.float().unsqueeze(1)


def test_images_by_index_equal_the_renderer_bit_for_bit():
    generator = torch.Generator().manual_seed(23)
    index = torch.randint(dsprites.NUM_IMAGES, (256,), generator=generator)
    index = torch.cat([index, torch.tensor([0, 1, 31, 32, 737_279, 368_640])])
    grid = dsprites.Grid("all")
    x = grid.images(index)
    # the digest of these images as the renderer drew them when it was first written
    digest = hashlib.sha256(x.to(torch.uint8).numpy().tobytes()).hexdigest()
    assert digest == "d8604387b036973348b7f68f4d8862b122bb7b9ef4c6b08a49ee570f63ddee0f"
    many = torch.randint(dsprites.NUM_IMAGES, (1500,), generator=generator)
    assert torch.equal(grid.images(many), _reference_render(dsprites.index_to_classes(many)))
    # one item, a batch of items, and the images method agree
    assert torch.equal(grid[int(index[3])][0], x[3])
    items = grid.__getitems__(index[:5].tolist())
    assert all(torch.equal(item[0], x[i]) for i, item in enumerate(items))
    assert [int(item[1]) for item in items] == grid.factors_of(index[:5])[:, 0].tolist()


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_split_grid_holds_the_in_memory_split(split):
    grid = data.load("dsprites", split=split, size=None)
    assert isinstance(grid, dsprites.Grid)
    assert len(grid) == {"train": 663_552, "test": 73_728}[split]
    held = data.load("dsprites", split=split, size=200)  # flat, as data.load gives it
    rows = torch.arange(200)
    assert torch.equal(grid.images(rows), held.x) and grid.images(rows).shape == (200, 4096)
    assert torch.equal(grid.factors_of(rows), held.factors)
    x, y = grid[199]
    assert torch.equal(x, held.x[199]) and int(y) == int(held.y[199])
    assert torch.equal(grid[-1][0], grid.images(torch.tensor([len(grid) - 1]))[0])


def test_the_splits_make_up_the_whole_set():
    train, test = dsprites.Grid("train"), dsprites.Grid("test")
    whole = dsprites.load("all", size=None)
    assert len(whole) == len(train) + len(test) == dsprites.NUM_IMAGES == 737_280
    index = torch.cat(
        [train.indices(torch.arange(len(train))), test.indices(torch.arange(len(test)))]
    )
    assert torch.equal(index.sort().values, torch.arange(dsprites.NUM_IMAGES))
    # the whole set is in index order; its factors are the grid's
    assert torch.equal(whole.indices(torch.tensor([0, 5, 737_279])), torch.tensor([0, 5, 737_279]))
    assert whole.factors.shape == (737_280, 5) and whole.y.shape == (737_280,)
    # today's default sample is unchanged
    assert len(data.load("dsprites", split="test", size=64)) == 64


def test_bad_input_is_refused():
    grid = dsprites.Grid("test")
    with pytest.raises(ValueError, match="split"):
        dsprites.Grid("validation")
    with pytest.raises(ValueError, match="size"):
        data.load("digits", size=None)
    with pytest.raises(IndexError, match="items"):
        grid.images(torch.tensor([len(grid)]))
    with pytest.raises(TypeError, match="integer"):
        grid[1.5]
    with pytest.raises(ValueError, match="k must"):
        grid.draw_sharing(5, torch.tensor([0]), (2,))


def test_building_the_whole_grid_takes_little_memory():
    """Peak resident memory of the process grows by a few MiB, not the 11 GiB of the
    images as float32 (measured in a fresh process)."""
    code = textwrap.dedent(
        """
        import resource
        import probae
        from probae import data
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        grids = [data.load("dsprites", split=s, size=None) for s in ("train", "test", "all")]
        assert sum(len(g) for g in grids) == 2 * 737_280
        x = grids[0].images(list(range(256)))  # and a batch rendered
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    grown_kib = int(out.stdout.split()[-1])
    assert grown_kib < 96 * 1024, f"building the grids grew the peak by {grown_kib} KiB"
    # what the grid object holds: one int64 index per image of a split, none for "all"
    assert dsprites.Grid("all")._index is None
    assert dsprites.Grid("test")._index.numel() == 73_728


def test_a_data_loader_batch_is_one_render(monkeypatch):
    grid = dsprites.Grid("test", flatten=True)
    calls = {"single": 0, "batch": 0}
    getitem, getitems = dsprites.Grid.__getitem__, dsprites.Grid.__getitems__

    def single(self, item):
        calls["single"] += 1
        return getitem(self, item)

    def batch(self, items):
        calls["batch"] += 1
        return getitems(self, items)

    monkeypatch.setattr(dsprites.Grid, "__getitem__", single)
    monkeypatch.setattr(dsprites.Grid, "__getitems__", batch)
    subset = torch.utils.data.Subset(grid, list(range(100, 164)))
    loader = torch.utils.data.DataLoader(batches._Indexed(subset, True), batch_size=16)
    out = list(loader)
    assert calls == {"single": 0, "batch": 4}
    index, x, y = out[1]
    assert torch.equal(index, torch.arange(16, 32))
    assert torch.equal(x, grid.images(torch.arange(116, 132)))
    assert torch.equal(y, grid.factors_of(torch.arange(116, 132))[:, 0])


def test_fit_streams_a_grid_and_trains_as_in_memory(device):
    """The whole grid is streamed, never read into memory; a Subset of it trains the
    parameters the same images held in memory train."""
    assert batches.materialize(dsprites.Grid("train")).__class__ is dsprites.Grid
    grid = dsprites.Grid("train", flatten=True)
    held = dsprites.load("train", size=96, flatten=True)
    subset = torch.utils.data.Subset(grid, range(96))
    assert batches.source(subset, VAE((4096,), 2, hidden=(8,)), in_memory=False).streamed
    runs = []
    for train_data in (held, subset):
        pyro.set_rng_seed(0)
        vae = VAE((4096,), 2, hidden=(8,)).to(device)
        history = probae.fit(
            vae, train_data, epochs=2, batch_size=32, seed=1, lr=3e-3, in_memory=False
        )
        runs.append((vae, history))
    (memory, h_memory), (streamed, h_streamed) = runs
    assert all(math.isfinite(v) for v in h_streamed.train_loss)
    if device.type == "cpu":  # bitwise equality is promised on CPU
        for key, value in memory.state_dict().items():
            assert torch.equal(value, streamed.state_dict()[key]), key
    assert h_streamed.train_loss == pytest.approx(h_memory.train_loss, rel=1e-5)


def test_draws_sharing_a_factor_stay_in_the_split_and_spread_evenly():
    grid = dsprites.Grid("test")
    generator = torch.Generator().manual_seed(0)
    anchors = grid.draw((3,), generator)
    assert anchors.max() < len(grid)
    for k in range(5):
        partners = grid.draw_sharing(k, anchors, (4000,), generator)
        assert partners.shape == (3, 4000) and partners.min() >= 0
        assert partners.max() < len(grid)  # items of the test split only
        classes = grid.factors_of(partners.reshape(-1)).view(3, 4000, 5)
        assert torch.equal(classes[..., k], grid.factors_of(anchors)[:, k, None].expand(3, 4000))
        # every other factor is spread evenly over its classes
        other = (k + 1) % 5
        size = dsprites.FACTOR_SIZES[other]
        counts = torch.bincount(classes[..., other].reshape(-1), minlength=size).double()
        expected = 12_000 / size
        assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()


def test_metric_batches_are_drawn_from_the_grid():
    grid = dsprites.Grid("test", flatten=True)
    noise = torch.Generator().manual_seed(1)

    def truth(items):  # each code one factor's class, slightly blurred
        return grid.factors_of(items).double() + 0.01 * torch.randn(len(items), 5, generator=noise)

    def unrelated(items):
        return torch.randn(len(items), 5, generator=noise, dtype=torch.float64)

    fast = {"batch_size": 8, "num_train": 300, "num_eval": 300}
    assert disentangle.beta_vae_score(truth, grid, **fast) == 1.0
    assert disentangle.factor_vae_score(truth, grid, **fast) == 1.0
    assert disentangle.beta_vae_score(unrelated, grid, **fast) == pytest.approx(0.2, abs=0.07)
    with pytest.raises(TypeError, match="codes must be a function"):
        disentangle.beta_vae_score(torch.zeros(10, 2), grid)


def test_disentanglement_of_a_model_on_a_grid(device):
    grid = data.load("dsprites", split="test", size=None)
    vae = VAE((4096,), 3, hidden=(16,)).to(device)
    kwargs = {"num_points": 400, "batch_size": 128, "num_train": 100, "num_eval": 60}
    scores = evaluate.disentanglement(vae, grid, group_size=8, **kwargs)
    assert scores.num_points == 400 and scores.mutual_information.shape == (3, 5)
    assert 0 <= scores.beta_vae <= 1 and 0 <= scores.factor_vae <= 1
    again = evaluate.disentanglement(vae, grid, group_size=8, **kwargs)
    assert again.as_dict() == scores.as_dict()  # seeded
    # the table metrics read the sample's codes: the grid's rows rendered and encoded
    codes, factors = disentangle.encode_factors(vae, grid, num_points=400, batch_size=128)
    rows = torch.randperm(len(grid), generator=torch.Generator().manual_seed(0))[:400]
    rows = rows.sort().values
    assert torch.equal(factors, grid.factors_of(rows))
    with torch.no_grad():
        direct = vae.encode(grid.images(rows).to(device)).cpu()
    torch.testing.assert_close(codes, direct)
    assert scores.mig == pytest.approx(disentangle.mig(codes, factors), abs=1e-12)
    with pytest.raises(ValueError, match="own factors"):
        evaluate.disentanglement(vae, grid, factors=factors)
