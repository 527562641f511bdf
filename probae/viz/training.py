"""Pictures of a training run: the loss per epoch."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ._common import _save

__all__ = ["history_plot"]


def history_plot(history, path="history.png") -> Path:
    """Training and validation loss per epoch.

    :param history: a :class:`probae.History` or a mapping with ``epoch``,
        ``train_loss`` and optionally ``val_loss`` lists.
    :param path: the PNG file to write.
    :returns: ``path``.
    """
    rows = history.as_dict() if hasattr(history, "as_dict") else dict(history)
    if "epoch" not in rows or "train_loss" not in rows:
        raise ValueError("history must have 'epoch' and 'train_loss' entries")
    epochs = [float(e) for e in rows["epoch"]]
    if not epochs:
        raise ValueError("history is empty: nothing to plot")
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot()
    ax.plot(epochs, [float(v) for v in rows["train_loss"]], label="train")
    val = [
        (e, v)
        for e, v in zip(epochs, rows.get("val_loss") or [], strict=False)
        if v not in (None, "")
    ]
    if val:
        ax.plot([e for e, _ in val], [float(v) for _, v in val], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per point)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)
