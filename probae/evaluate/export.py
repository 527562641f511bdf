"""A trained model's draws and importance weights handed to other tools:
:func:`~probae.evaluate.to_inference_data` for ArviZ.

Importable from :mod:`probae.evaluate`.
"""

from __future__ import annotations

import torch

from .. import importance
from .._common import positive_int
from ._util import _arviz, _eval_mode, _latent_site, _per_batch, _setup

__all__ = ["to_inference_data"]


def to_inference_data(model, data, num_samples: int = 1000, c=None, batch_size: int = 100):
    r"""Draws from the guide and their importance log-weights as an
    :class:`arviz.InferenceData`, so ArviZ's plots and diagnostics apply to a
    trained model.

    - ``posterior``: ``z`` with dims ``(chain, draw, point, latent)``, the draws
      :math:`z^{(s)} \sim q(z|x_n)` (one chain);
    - ``sample_stats``: ``log_weight`` with dims ``(chain, draw, point)``, the
      importance log-weights :math:`\log p(x_n, z^{(s)}) - \log q(z^{(s)}|x_n)`;
      resampling the draws in proportion to the weights gives draws from the exact
      posterior p(z|x) as S grows;
    - ``observed_data``: ``x``, flattened to dims ``(point, pixel)``.

    For example::

        idata = evaluate.to_inference_data(vae, test, num_samples=1000)
        lw = idata.sample_stats.log_weight.stack(__sample__=("chain", "draw"))
        _, khat = arviz.psislw(lw, normalize=False)
        arviz.plot_khat(khat)
        arviz.plot_posterior(idata, var_names=["z"], coords={"point": [0]})

    Memory grows with ``num_samples * N * z_dim``.

    :param model: a probae model or a ``(model, guide)`` pair whose guide samples site "z".
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_samples: draws per point.
    :param c: conditions, one row per point, for conditional models.
    :param int batch_size: points evaluated at once.
    """
    num_samples = positive_int("num_samples", num_samples)
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "to_inference_data", True)
    draws, weights = [], []
    with torch.no_grad(), _eval_mode(pair.module):
        for args in _per_batch(x, c, batch_size):
            traces = importance.traces(pair.model, pair.guide, args, num_samples, nesting)
            z = _latent_site(traces[0], "to_inference_data")["value"]
            draws.append(z.reshape(num_samples, z.shape[1], -1))
            weights.append(
                importance.log_weights(
                    pair.model, pair.guide, args, num_samples, nesting, trace_pair=traces
                )
            )
    z = torch.cat(draws, 1).cpu().numpy()[None]
    log_weight = torch.cat(weights, 1).cpu().numpy()[None]
    n, d = z.shape[2], z.shape[3]
    return _arviz().from_dict(
        posterior={"z": z},
        sample_stats={"log_weight": log_weight},
        observed_data={"x": x.reshape(n, -1).cpu().numpy()},
        coords={"point": list(range(n)), "latent": list(range(d))},
        dims={"z": ["point", "latent"], "log_weight": ["point"], "x": ["point", "pixel"]},
    )
