"""Pictures of a training run: the loss per epoch, the path in the rate-distortion
plane, and the KL per latent dimension."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ._common import _save

__all__ = ["history_plot", "rate_distortion", "kl_per_dimension"]


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


def _rows(history) -> dict:
    return history.as_dict() if hasattr(history, "as_dict") else dict(history)


def _pairs(rows, x_key, y_key):
    return [
        (float(e), float(x), float(y))
        for e, x, y in zip(
            rows.get("epoch", []), rows.get(x_key) or [], rows.get(y_key) or [], strict=False
        )  # fmt: skip
        if x not in (None, "") and y not in (None, "")
    ]


def rate_distortion(history, path="rate_distortion.png") -> Path:
    """The run's path in the rate-distortion plane (Alemi et al. 2018): one point per
    epoch, rate (the loss's KL term, nats per point) across, distortion (negative
    log-likelihood of the reconstruction) up, for training and validation data.
    Lines of equal loss, rate + distortion = constant, are the diagonals.

    :param history: a :class:`probae.History` or a mapping with ``epoch``, ``rate``,
        ``distortion`` (and optionally ``val_rate``, ``val_distortion``) lists.
    :param path: the PNG file to write.
    :returns: ``path``.

    **References**

    - Alemi et al. (2018), *Fixing a Broken ELBO*, ICML.
    """
    rows = _rows(history)
    train = _pairs(rows, "rate", "distortion")
    if not train:
        raise ValueError(
            "history has no rate and distortion: train with an ELBO-type loss (elbo, "
            "meanfield) to record them"
        )
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot()
    for points, label in (
        (train, "train"),
        (_pairs(rows, "val_rate", "val_distortion"), "validation"),
    ):
        if not points:
            continue
        epochs, rate, distortion = zip(*points, strict=True)
        line = ax.plot(rate, distortion, marker="o", markersize=3, label=label)[0]
        ax.annotate(f"epoch {int(epochs[0])}", (rate[0], distortion[0]), fontsize=7,
                    color=line.get_color())  # fmt: skip
        ax.annotate(f"epoch {int(epochs[-1])}", (rate[-1], distortion[-1]), fontsize=7,
                    color=line.get_color())  # fmt: skip
    ax.set_xlabel("rate R (nats per point)")
    ax.set_ylabel("distortion D (nats per point)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def kl_per_dimension(history, path="kl_per_dimension.png", epoch: int = -1) -> Path:
    """Bars of the validation KL(q(z_j|x) || p(z_j)) per latent dimension j at one
    epoch, sorted from largest: dimensions near zero carry no information (inactive
    units, posterior collapse).

    :param history: a :class:`probae.History` or a mapping with ``kl_per_dim``.
    :param path: the PNG file to write.
    :param int epoch: which epoch's row (default: the last).
    :returns: ``path``.
    """
    rows = _rows(history)
    values = [v for v in rows.get("kl_per_dim") or [] if v not in (None, "")]
    if not values:
        raise ValueError(
            "history has no KL per dimension: train with validation= data and a factorized "
            "guide and prior (a closed-form KL per dimension)"
        )
    kl = [float(v) for v in values[epoch]]
    order = sorted(range(len(kl)), key=lambda j: -kl[j])
    fig = Figure(figsize=(max(4.0, 0.35 * len(kl) + 1.5), 3.5))
    ax = fig.add_subplot()
    ax.bar(range(len(kl)), [kl[j] for j in order], color="tab:blue")
    ax.set_xticks(range(len(kl)), [str(j) for j in order], fontsize=7)
    ax.set_xlabel("latent dimension (sorted)")
    ax.set_ylabel("KL (nats per point)")
    ax.set_title(f"total {sum(kl):.2f} nats")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
