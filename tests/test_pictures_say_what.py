"""The training pictures say what they show: titles with the data and the epochs,
legends that name the held-out split and the classes, a rate-distortion picture that
is not degenerate for a deterministic autoencoder."""

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from probae import VAE, History, viz
from probae.viz import latent, training


@pytest.fixture
def drawn(monkeypatch):
    """The figures the training pictures write, kept for inspection."""
    figures = []
    real = training._save

    def keep(fig, path):
        figures.append(fig)
        return real(fig, path)

    monkeypatch.setattr(training, "_save", keep)
    return figures


def _history(rate=(3.0, 2.0, 1.5), val_rate=(3.2, 2.1, 1.7)):
    h = History()
    for e, (r, vr) in enumerate(zip(rate, val_rate, strict=True), start=1):
        h.append(
            epoch=e, train_loss=40.0 - e + r, val_loss=41.0 - e + vr, distortion=40.0 - e,
            rate=r, penalty=0.0, val_distortion=41.0 - e, val_rate=vr, val_penalty=0.0,
            kl_per_dim=[0.5 * e, 0.25 * e, 0.0], seconds=0.1, beta=1.0, lr=1e-3,
        )  # fmt: skip
    return h


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_history_names_the_held_out_split_and_the_epochs(drawn, tmp_path):
    viz.history_plot(_history(), tmp_path / "h.png", validation="test")
    ax = drawn[-1].axes[0]
    assert ax.get_title() == "Loss per epoch, train and test data, epochs 1-3"
    assert _legend(ax) == ["train", "test"]
    viz.history_plot({"epoch": [1, 2], "train_loss": [3, 2]}, tmp_path / "d.png")
    assert drawn[-1].axes[0].get_title() == "Loss per epoch, train data, epochs 1-2"


def test_rate_distortion_title_and_labels_that_do_not_overlap(drawn, tmp_path):
    # both curves start at the same point: their epoch labels must still be apart
    viz.rate_distortion(_history(val_rate=(3.0, 2.2, 1.6)), tmp_path / "rd.png", validation="test")
    fig = drawn[-1]
    ax = fig.axes[0]
    assert ax.get_title() == "Rate and distortion per epoch, train and test data, epochs 1-3"
    assert _legend(ax) == ["train", "test"]
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == 4
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)


def test_a_deterministic_autoencoder_gets_its_distortion_per_epoch(drawn, tmp_path):
    history = _history(rate=(0.0, 0.0, 0.0), val_rate=(0.0, 0.0, 0.0))
    viz.rate_distortion(history, tmp_path / "rd.png", validation="test")
    ax = drawn[-1].axes[0]
    assert ax.get_xlabel() == "epoch" and "rate is 0" in ax.get_title()
    train_line = ax.get_lines()[0]
    assert list(train_line.get_xdata()) == [1, 2, 3]
    assert list(train_line.get_ydata()) == pytest.approx(history.distortion)
    lo, hi = ax.get_xlim()
    assert hi - lo > 1  # epochs across, not a degenerate rate axis around 0


def test_kl_per_dimension_names_the_split_the_epoch_and_the_total(drawn, tmp_path):
    viz.kl_per_dimension(_history(), tmp_path / "kl.png", validation="test")
    assert drawn[-1].axes[0].get_title() == (
        "KL per latent dimension, test data, epoch 3: total 2.25 nats"
    )
    viz.kl_per_dimension(_history(), tmp_path / "kl1.png", epoch=0)
    assert drawn[-1].axes[0].get_title() == (
        "KL per latent dimension, validation data, epoch 1: total 0.75 nats"
    )


def test_aggregate_posterior_has_a_legend_of_the_classes(monkeypatch, tmp_path, device):
    figures = []

    class Kept(latent.Figure):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            figures.append(self)

    monkeypatch.setattr(latent, "Figure", Kept)
    vae = VAE((4,), 2, hidden=(8,)).to(device)
    x = torch.rand(30, 4, device=device)
    labels = torch.arange(30) % 3
    viz.aggregate_posterior({"a": vae, "b": vae}, x, tmp_path / "agg.png", labels=labels)
    for ax in figures[-1].axes:
        assert _legend(ax) == ["0", "1", "2"]
