"""Pictures of how codes line up with known factors of variation:
:func:`factor_vs_latent`, the mutual information between every code and every
factor as a heat map."""

from __future__ import annotations

from matplotlib.figure import Figure

from ._common import _save

__all__ = ["factor_vs_latent"]


def factor_vs_latent(
    model,
    data,
    path="factor_vs_latent.png",
    factors=None,
    factor_names=None,
    num_points: int = 10_000,
    num_bins: int = 20,
    seed: int = 0,
):
    r"""The mutual information :math:`\hat I(c_d; v_k)` between every code d and every
    factor k as a heat map, each column divided by the factor's entropy
    :math:`H(v_k)` (so 1 means the code determines the factor), from
    :func:`probae.evaluate.mutual_information_matrix`. A disentangled model shows one
    bright cell per column, each in a row of its own; the MIG is the mean gap between
    the two brightest cells of each column.

    :param model: a probae model, a ``(model, guide)`` pair or a callable ``x -> codes``.
    :param data: a :class:`~probae.data.Dataset` with ``factors`` (or a tensor with
        ``factors=``).
    :param path: PNG file to write.
    :param factors: ``(N, K)`` factor classes or values, if ``data`` has none.
    :param factor_names: a name per factor (default: dSprites' names for five
        factors of a data set called ``"dsprites"``, else v1, v2, ...).
    :param int num_points: points encoded (a seeded sample).
    :param int num_bins: bins of the MI estimator.
    :param int seed: seeds the sample.
    :returns: the path written.
    """
    from .. import dsprites
    from ..evaluate import disentangle
    from ..evaluate.disentangle.information import _factor_entropies

    codes, truth = disentangle.encode_factors(model, data, factors, num_points, seed=seed)
    info = disentangle.mutual_information_matrix(codes, truth, num_bins)
    entropy = _factor_entropies(truth, num_bins)
    normalized = (info / entropy).numpy()
    num_codes, num_factors = normalized.shape
    if factor_names is None:
        if getattr(data, "name", None) == "dsprites" and num_factors == len(dsprites.FACTOR_NAMES):
            factor_names = list(dsprites.FACTOR_NAMES)
        else:
            factor_names = [f"v{k + 1}" for k in range(num_factors)]
    if len(factor_names) != num_factors:
        raise ValueError(f"factor_names has {len(factor_names)} names for {num_factors} factors")
    fig = Figure(figsize=(1.1 * num_factors + 2.2, 0.45 * num_codes + 1.6))
    ax = fig.add_subplot()
    image = ax.imshow(normalized, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for d in range(num_codes):
        for k in range(num_factors):
            value = normalized[d, k]
            ax.text(
                k,
                d,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if value > 0.6 else "white",
            )
    ax.set_xticks(range(num_factors), factor_names, rotation=30, ha="right")
    ax.set_yticks(range(num_codes), [f"z{d}" for d in range(num_codes)])  # as viz.traversal
    ax.set_xlabel("factor")
    ax.set_ylabel("code")
    ax.set_title("I(code; factor) / H(factor)")
    fig.colorbar(image, ax=ax, fraction=0.05)
    return _save(fig, path)
