"""Pictures of a training run: the loss per epoch, the path in the rate-distortion
plane, and the KL per latent dimension."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ._common import _save

__all__ = ["history_plot", "rate_distortion", "kl_per_dimension"]


def _span(epochs) -> str:
    first, last = int(epochs[0]), int(epochs[-1])
    return f"epoch {last}" if first == last else f"epochs {first}-{last}"


def history_plot(history, path="history.png", validation: str = "validation", title=None) -> Path:
    """Training and held-out loss per epoch.

    :param history: a :class:`probae.History` or a mapping with ``epoch``,
        ``train_loss`` and optionally ``val_loss`` lists.
    :param path: the PNG file to write.
    :param str validation: what the held-out data is called in the legend and title
        (``"test"`` where the test split stands in for validation data).
    :param str title: the title (default: what is drawn, of which data, which epochs).
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
        ax.plot([e for e, _ in val], [float(v) for _, v in val], label=validation)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per point)")
    data = f"train and {validation} data" if val else "train data"
    ax.set_title(title or f"Loss per epoch, {data}, {_span(epochs)}", fontsize=10)
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


def rate_distortion(
    history, path="rate_distortion.png", validation: str = "validation", title=None
) -> Path:
    """The run's path in the rate-distortion plane (Alemi et al. 2018): one point per
    epoch, rate (the loss's KL term, nats per point) across, distortion (negative
    log-likelihood of the reconstruction) up, for training and held-out data.
    Lines of equal loss, rate + distortion = constant, are the diagonals.

    A run whose rate is zero throughout (a deterministic autoencoder: its point-mass
    guide has no KL term) has no path in the plane; its distortion is drawn per epoch
    instead.

    :param history: a :class:`probae.History` or a mapping with ``epoch``, ``rate``,
        ``distortion`` (and optionally ``val_rate``, ``val_distortion``) lists.
    :param path: the PNG file to write.
    :param str validation: what the held-out data is called in the legend and title.
    :param str title: the title (default: what is drawn, of which data, which epochs).
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
    curves = [(train, "train")]
    held_out = _pairs(rows, "val_rate", "val_distortion")
    if held_out:
        curves.append((held_out, validation))
    data = " and ".join(label for _, label in curves) + " data"
    span = _span([e for e, _, _ in train])
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot()
    if all(r == 0 for points, _ in curves for _, r, _ in points):
        for points, label in curves:
            epochs, _, distortion = zip(*points, strict=True)
            ax.plot(epochs, distortion, marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("distortion D (nats per point)")
        ax.set_title(
            title or f"Distortion per epoch (the rate is 0: a point-mass guide), {data}, {span}",
            fontsize=9,
        )
        ax.legend()
        ax.grid(alpha=0.3)
        return _save(fig, path)
    for (points, label), (dx, dy, align) in zip(
        curves, [(6, 6, "left"), (-6, -12, "right")], strict=False
    ):  # the two curves' labels on opposite sides, so that they do not overlap
        epochs, rate, distortion = zip(*points, strict=True)
        line = ax.plot(rate, distortion, marker="o", markersize=3, label=label)[0]
        for i in (0, -1):
            ax.annotate(f"epoch {int(epochs[i])}", (rate[i], distortion[i]), fontsize=7,
                        color=line.get_color(), xytext=(dx, dy), textcoords="offset points",
                        ha=align)  # fmt: skip
    ax.set_xlabel("rate R (nats per point)")
    ax.set_ylabel("distortion D (nats per point)")
    ax.set_title(title or f"Rate and distortion per epoch, {data}, {span}", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def kl_per_dimension(
    history, path="kl_per_dimension.png", epoch: int = -1, validation: str = "validation"
) -> Path:
    """Bars of the held-out KL(q(z_j|x) || p(z_j)) per latent dimension j at one
    epoch, sorted from largest: dimensions near zero carry no information (inactive
    units, posterior collapse).

    :param history: a :class:`probae.History` or a mapping with ``kl_per_dim`` (and
        ``epoch``).
    :param path: the PNG file to write.
    :param int epoch: which of the recorded rows (default: the last), as a list index.
    :param str validation: what the held-out data is called in the title.
    :returns: ``path``.
    """
    rows = _rows(history)
    numbers = rows.get("epoch") or []
    recorded = [
        (numbers[i] if i < len(numbers) else None, v)
        for i, v in enumerate(rows.get("kl_per_dim") or [])
        if v not in (None, "")
    ]
    if not recorded:
        raise ValueError(
            "history has no KL per dimension: train with validation= data and a factorized "
            "guide and prior (a closed-form KL per dimension)"
        )
    number, values = recorded[epoch]
    kl = [float(v) for v in values]
    order = sorted(range(len(kl)), key=lambda j: -kl[j])
    fig = Figure(figsize=(max(5.0, 0.35 * len(kl) + 1.5), 3.5))
    ax = fig.add_subplot()
    ax.bar(range(len(kl)), [kl[j] for j in order], color="tab:blue")
    ax.set_xticks(range(len(kl)), [str(j) for j in order], fontsize=7)
    ax.set_xlabel("latent dimension (sorted)")
    ax.set_ylabel("KL (nats per point)")
    when = "" if number is None else f", epoch {int(float(number))}"
    ax.set_title(
        f"KL per latent dimension, {validation} data{when}: total {sum(kl):.2f} nats",
        fontsize=10,
    )
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
