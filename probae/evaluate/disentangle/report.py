r"""Every metric of a model at once: :func:`encode_factors` encodes a seeded sample of
the data (a table, or a factor grid rendered batch by batch) into the codes the
metrics read, and :func:`disentanglement` computes them all into a
:class:`Disentanglement`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from pyro import poutine

from ... import _progress
from ..._common import as_pair, device_of, positive_int
from .._util import _eval_mode, _latent_site
from ._votes import _is_grid
from .classifiers import beta_vae_score, factor_vae_score, sap
from .information import mig, modularity_explicitness, mutual_information_matrix
from .lasso import dci


@dataclass
class Disentanglement:
    """Every metric of :mod:`probae.evaluate.disentangle` on one set of codes.

    :ivar float beta_vae: BetaVAE score.
    :ivar float factor_vae: FactorVAE score.
    :ivar float mig: mutual information gap.
    :ivar float sap: separated attribute predictability.
    :ivar float dci_disentanglement: DCI D.
    :ivar float dci_completeness: DCI C.
    :ivar float dci_informativeness: DCI I (held-out :math:`R^2`).
    :ivar float modularity: Ridgeway & Mozer's modularity.
    :ivar float explicitness: Ridgeway & Mozer's explicitness (ROC AUC).
    :ivar torch.Tensor mutual_information: the ``(D, K)`` MI matrix in nats.
    :ivar int num_points: points the codes come from.
    """

    beta_vae: float
    factor_vae: float
    mig: float
    sap: float
    dci_disentanglement: float
    dci_completeness: float
    dci_informativeness: float
    modularity: float
    explicitness: float
    mutual_information: torch.Tensor
    num_points: int

    def as_dict(self) -> dict:
        """The scalar metrics by name."""
        out = asdict(self)
        out.pop("mutual_information")
        return out

    def __str__(self) -> str:
        rows = [
            f"{key:>20s}  {value:.4f}"
            for key, value in self.as_dict().items()
            if key != "num_points"
        ]
        return "\n".join([f"disentanglement on {self.num_points} points", *rows])


def _scores(codes, factors, num_bins, seed, votes=None, vote_sizes=(), bar=None):
    """Every metric; the BetaVAE and FactorVAE scores read ``votes``, a pair
    ``(codes, factors)`` of their own (a grid's), where given. ``bar`` counts the
    metrics done."""
    vote_codes, vote_factors = (codes, factors) if votes is None else votes
    sizes = dict(zip(("batch_size", "num_train", "num_eval"), vote_sizes, strict=False))
    metrics = {  # in the order the seeded draws were always made
        "dci": lambda: dci(codes, factors, seed=seed),
        "modularity": lambda: modularity_explicitness(codes, factors, num_bins, seed=seed),
        "beta_vae": lambda: beta_vae_score(
            vote_codes, vote_factors, num_bins=num_bins, seed=seed, **sizes
        ),
        "factor_vae": lambda: factor_vae_score(
            vote_codes, vote_factors, num_bins=num_bins, seed=seed, **sizes
        ),
        "mig": lambda: mig(codes, factors, num_bins),
        "sap": lambda: sap(codes, factors),
        "mutual_information": lambda: mutual_information_matrix(codes, factors, num_bins),
    }
    values = {}
    for name, compute in metrics.items():
        values[name] = compute()
        if bar is not None:
            bar.update(1)
    d, me = values.pop("dci"), values.pop("modularity")
    return Disentanglement(
        **values,
        dci_disentanglement=d["disentanglement"],
        dci_completeness=d["completeness"],
        dci_informativeness=d["informativeness"],
        modularity=me["modularity"],
        explicitness=me["explicitness"],
        num_points=codes.shape[0],
    )


def _representation(model):
    """A function x -> codes: the model's ``encode``, the mean of a pair's guide at
    site "z", or a callable itself."""
    encode = getattr(model, "encode", None)
    if callable(encode):
        return encode
    if isinstance(model, (tuple, list)):
        pair = as_pair(model)

        def guide_mean(x):
            with poutine.block():
                site = _latent_site(poutine.trace(pair.guide).get_trace(x), "disentanglement")
            return site["fn"].mean

        return guide_mean
    if callable(model):
        return model
    raise TypeError(
        "model must have .encode(x), be a (model, guide) pair, or be a callable x -> codes"
    )


def encode_factors(
    model, data, factors=None, num_points: int = 10_000, batch_size: int = 256, seed: int = 0
):
    """Codes and factors of a seeded sample of ``num_points`` points (all of them if
    fewer), encoded in batches under :func:`torch.no_grad`: ``(codes, factors)`` on
    the CPU.

    :param model: a model with ``encode(x)`` (the posterior mean), a ``(model, guide)``
        pair (the mean of its guide at site "z") or a callable ``x -> codes``.
    :param data: a :class:`~probae.data.Dataset` with ``factors``, a tensor of x, or a
        factor grid (:class:`probae.dsprites.Grid`), whose sampled images are rendered
        batch by batch.
    :param factors: the factors ``(N, K)`` when ``data`` carries none.
    """
    from ...data import Dataset, as_tensor

    if _is_grid(data):
        if factors is not None:
            raise ValueError("a factor grid carries its own factors: leave factors= out")
        num_points = positive_int("num_points", num_points)
        batch_size = positive_int("batch_size", batch_size)
        generator = torch.Generator().manual_seed(seed)
        rows = torch.randperm(len(data), generator=generator)[:num_points].sort().values
        return _encode_items(model, data, rows, batch_size), data.factors_of(rows)
    x = as_tensor(data)
    if factors is None:
        factors = data.factors if isinstance(data, Dataset) else None
    if factors is None:
        raise ValueError(
            "disentanglement needs ground-truth factors: data with .factors "
            "(data.load('dsprites'), Dataset(x=..., factors=...)) or factors="
        )
    if not isinstance(factors, torch.Tensor) or factors.dim() != 2:
        raise TypeError("factors must be a 2-D tensor (N, K)")
    if factors.shape[0] != x.shape[0]:
        raise ValueError(
            f"factors must have one row per point: data has {x.shape[0]}, factors "
            f"{factors.shape[0]}"
        )
    num_points = positive_int("num_points", num_points)
    batch_size = positive_int("batch_size", batch_size)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(x.shape[0], generator=generator)[:num_points]
    rows = rows.sort().values
    encode = _representation(model)
    module = model if isinstance(model, torch.nn.Module) else None
    device = device_of(module, x.device)
    codes = []
    with torch.no_grad(), _eval_mode(module):
        for start in range(0, rows.numel(), batch_size):
            xb = x[rows[start : start + batch_size].to(x.device)].to(device)
            codes.append(encode(xb).detach().reshape(xb.shape[0], -1).cpu())
    return torch.cat(codes), factors[rows.to(factors.device)].cpu()


def _encode_items(model, grid, items, batch_size: int) -> torch.Tensor:
    """Codes (CPU) of a grid's items, rendered and encoded ``batch_size`` at a time."""
    encode = _representation(model)
    module = model if isinstance(model, torch.nn.Module) else None
    device = device_of(module, torch.device("cpu"))
    x_shape = getattr(module, "x_shape", None)
    codes = []
    with torch.no_grad(), _eval_mode(module):
        for chunk in items.split(batch_size):
            xb = grid.images(chunk).to(device)
            if x_shape is not None and xb[0].numel() == torch.Size(x_shape).numel():
                xb = xb.reshape(xb.shape[0], *x_shape)
            codes.append(encode(xb).detach().reshape(xb.shape[0], -1).cpu())
    return torch.cat(codes)


def disentanglement(
    model,
    data,
    factors=None,
    num_points: int = 10_000,
    num_bins: int = 20,
    batch_size: int = 256,
    seed: int = 0,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    group_size: int = 64,
    progress: bool | None = None,
) -> Disentanglement:
    """Every disentanglement metric of a model on data with known factors.

    A seeded sample of ``num_points`` points is encoded once (posterior means, in
    batches of ``batch_size``); all metrics are computed from those codes and the
    points' factors (see :mod:`probae.evaluate.disentangle` and each metric). Same seed, same
    numbers.

    On a factor grid (:class:`probae.dsprites.Grid`, e.g.
    ``data.load("dsprites", size=None)``) nothing is held but the codes: the sample's
    images are rendered batch by batch, and the BetaVAE and FactorVAE scores draw their
    points from the grid itself, fixing a factor by index and drawing the others anew
    (the sampling of their papers), rendering and encoding each distinct drawn point
    once: up to ``(3 * group_size) * (num_train + num_eval)`` points, 2.9 million at
    the defaults (the papers' numbers); lower ``num_train``, ``num_eval`` or
    ``group_size`` for a quicker estimate.

    :param model: a probae model, a ``(model, guide)`` pair or a callable ``x -> codes``.
    :param data: a :class:`~probae.data.Dataset` with ``factors`` (or a tensor with
        ``factors=``), or a factor grid.
    :param factors: ``(N, K)`` factor classes or values, if ``data`` has none.
    :param int num_points: points to encode.
    :param int num_bins: bins of the mutual information estimator.
    :param int batch_size: points encoded at once.
    :param int seed: seeds the sample and every metric's draws.
    :param int num_train: votes the BetaVAE and FactorVAE classifiers are fitted on.
    :param int num_eval: votes they are scored on.
    :param int group_size: points of one vote (pairs for BetaVAE, the points sharing
        the fixed factor for FactorVAE).
    :param bool progress: show progress over the encoding and the seven metrics (True
        or None): a bar in a terminal or a notebook, elsewhere a plain line every 10 s
        once it runs that long; False shows nothing.
    :rtype: Disentanglement
    """
    _progress.check(progress)
    vote_sizes = tuple(
        positive_int(name, value)
        for name, value in (
            ("group_size", group_size),
            ("num_train", num_train),
            ("num_eval", num_eval),
        )
    )
    with _progress.counter(8, "probae disentanglement", "stage", progress) as bar:
        codes, factors = encode_factors(model, data, factors, num_points, batch_size, seed)
        bar.update(1)
        votes = None
        if _is_grid(data):
            votes = (lambda items: _encode_items(model, data, items, batch_size), data)
        return _scores(codes, factors, num_bins, seed, votes, vote_sizes, bar)
