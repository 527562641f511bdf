"""Pictures of a trained model, written as PNG files a person can open.

Every function draws one figure on matplotlib's Agg canvas (no display and no
pyplot state needed), writes it to ``path`` (creating missing folders) and
returns that path as a :class:`pathlib.Path`. The model runs under
:func:`torch.no_grad` on its own device; inputs are moved there.

A data point is drawn as a picture of shape ``image_shape = (C, H, W)`` with
C = 1 (grey) or 3 (colour). When ``image_shape`` is not given it is read, in
this order, from the :class:`~probae.data.Dataset` passed in, from the model's
``x_shape`` when that is already ``(C, H, W)``, and from a flat ``x_shape = (D,)``
with D a perfect square, drawn as ``(1, sqrt(D), sqrt(D))`` (the 64 pixels of
``digits`` as 8x8, the 784 of MNIST as 28x28). Values in [0, 1] are drawn as
they are (0 black, 1 white); other values are rescaled to [0, 1] over the
whole figure.

The pictures live in one module per subject, and every one is importable from
here (``viz.sample_grid``):

- :mod:`probae.viz.images`: :func:`image_grid`, :func:`sample_grid` and
  :func:`reconstructions`.
- :mod:`probae.viz.latent`: :func:`traversal`, :func:`interpolation`,
  :func:`latent_scatter` and :func:`aggregate_posterior`.
- :mod:`probae.viz.autoencoders`: :func:`vector_field`, :func:`filters` and
  :func:`first_layer_weights`, for deterministic autoencoders.
- :mod:`probae.viz.conditional`: :func:`quadrant_completions` and
  :func:`class_samples`, for conditional models.
- :mod:`probae.viz.training`: :func:`history_plot`, :func:`rate_distortion` and
  :func:`kl_per_dimension`.
- :mod:`probae.viz.disentanglement`: :func:`factor_vs_latent`, codes against known
  factors.
- :mod:`probae.viz.draw`: :func:`draw_canvas`, a DRAW model's canvas at every step.
"""

from .autoencoders import filters, first_layer_weights, vector_field
from .conditional import class_samples, quadrant_completions
from .disentanglement import factor_vs_latent
from .draw import draw_canvas
from .images import image_grid, reconstructions, sample_grid
from .latent import aggregate_posterior, interpolation, latent_scatter, traversal
from .training import history_plot, kl_per_dimension, rate_distortion

__all__ = [
    "factor_vs_latent",
    "image_grid",
    "sample_grid",
    "reconstructions",
    "traversal",
    "interpolation",
    "latent_scatter",
    "history_plot",
    "rate_distortion",
    "kl_per_dimension",
    "vector_field",
    "filters",
    "first_layer_weights",
    "class_samples",
    "quadrant_completions",
    "aggregate_posterior",
    "draw_canvas",
]
