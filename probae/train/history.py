"""The record of a training run: :class:`History`, one row per epoch."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["History"]


@dataclass
class History:
    """Per-epoch record of a training run (losses are per data point, in nats).

    ``distortion + rate + penalty`` is the training loss (see :mod:`probae.terms`;
    None where the objective does not split); the ``val_`` entries are the same on
    the validation data, ``kl_per_dim`` its closed-form KL per latent dimension
    (None without a closed form) and ``active_units`` its number of dimensions
    whose posterior mean varies across points by more than 0.01.
    """

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    beta: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    # the loss's terms per point (probae.terms): training means, then validation
    distortion: list = field(default_factory=list)
    rate: list = field(default_factory=list)
    penalty: list = field(default_factory=list)
    val_distortion: list = field(default_factory=list)
    val_rate: list = field(default_factory=list)
    val_penalty: list = field(default_factory=list)
    kl_per_dim: list = field(default_factory=list)  # validation, per latent dimension
    active_units: list = field(default_factory=list)  # validation, Burda et al. (2016)
    lr: list = field(default_factory=list)
    #: per-epoch figures a model reports of itself (``model.epoch_metrics()``, e.g. a
    #: VQ-VAE's codebook perplexity), by name
    metrics: dict = field(default_factory=dict)

    def append(self, **row) -> None:
        for key, value in row.items():
            getattr(self, key).append(value)

    def __len__(self) -> int:
        return len(self.epoch)

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=1))

    def to_csv(self, path) -> None:
        rows = self.as_dict()
        rows.update(rows.pop("metrics"))
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(rows))
            # a checkpoint of an older run may lack the newer columns
            columns = [v if len(v) == len(self) else [None] * len(self) for v in rows.values()]
            writer.writerows(zip(*columns, strict=True))
