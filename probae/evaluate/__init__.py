r"""Estimates of how well a trained model explains data, per data point.

Every function takes a probae model or a user's own ``(model, guide)`` pair, and
a :class:`probae.data.Dataset` or a plain tensor. They live in four modules, one
concern each, and every one is importable from here (``evaluate.elbo``):

- :mod:`probae.evaluate.estimators`, the estimates themselves.

  - :func:`elbo`: the evidence lower bound of each point (beta = 1, whatever beta
    the model was trained with), :math:`\frac1S\sum_s \log w^{(s)}`.
  - :func:`log_likelihood`: the importance-weighted estimate of :math:`\log p(x)`
    (Burda et al., 2016),

    .. math:: \log \hat p(x) = \log \frac1S \sum_{s=1}^S \frac{p(x, z^{(s)})}{q(z^{(s)}|x)},
              \quad z^{(s)} \sim q(z|x),

    a lower bound in expectation that rises to :math:`\log p(x)` as S grows.
    Samples are drawn in vectorized chunks and combined with a running
    log-sum-exp, so memory is bounded by ``chunk_size * batch_size`` draws
    however large ``num_samples`` is.
  - :func:`reconstruction_error`: squared error of E[x|z] at the code of x.
  - :func:`bits_per_dim`, and for conditional models
    :func:`conditional_log_likelihood` and :func:`conditional_elbo`.

- :mod:`probae.evaluate.ais`: annealed importance sampling of :math:`\log p(x)`,
  :func:`ais_log_likelihood` (also ``log_likelihood(method="ais")``), and bidirectional Monte
  Carlo bounds on simulated data, :func:`bdmc` (Neal 2001; Grosse et al. 2015;
  Wu et al. 2017).
- :mod:`probae.evaluate.diagnostics`: the Pareto-smoothed importance sampling
  k-hat of every point (inside :func:`log_likelihood`, or
  :func:`psis_diagnostic` on any log-weights), :func:`active_units` and
  :func:`elbo_surgery`.
- :mod:`probae.evaluate.representation`: what the codes hold, :func:`cluster`
  with :func:`clustering_accuracy`, and :func:`linear_probe`.
- :mod:`probae.evaluate.disentangle`: metrics against known factors of
  variation (:func:`disentanglement` computes them all: BetaVAE and FactorVAE
  scores, MIG, SAP, DCI, modularity and explicitness), and
  :func:`total_correlation` with :func:`kl_decomposition`.
- :mod:`probae.evaluate.gaps`: :func:`inference_gaps`, the approximation and
  amortization gaps of each point (Cremer et al. 2018).
- :mod:`probae.evaluate.export`: :func:`to_inference_data` for ArviZ.
- :mod:`probae.evaluate.discrete`: :func:`code_log_likelihood`, the bound of a
  model with discrete codes (VQ-VAE) through its code prior.
- :mod:`probae.evaluate.sample_quality`: how good samples are, :func:`sample_quality`
  (FID, KID, precision and recall) on features from any module or from
  :func:`probae.evaluate.features.classifier`, a classifier trained on the labelled data.

**References**

[1] `Importance Weighted Autoencoders`, Yuri Burda, Roger Grosse, Ruslan
Salakhutdinov (ICLR 2016)

[2] `Pareto Smoothed Importance Sampling`, Aki Vehtari, Daniel Simpson, Andrew
Gelman, Yuling Yao, Jonah Gabry (JMLR 2024)

[3] `ELBO surgery: yet another way to carve up the variational evidence lower
bound`, Matthew D. Hoffman, Matthew J. Johnson (NIPS 2016 Workshop on Advances
in Approximate Bayesian Inference)
"""

from . import features
from .ais import AISLogLikelihood, ais_log_likelihood, bdmc
from .bits import bits_per_dim
from .diagnostics import (
    ActiveUnits,
    ElboSurgery,
    active_units,
    elbo_surgery,
    khat_threshold,
    psis_diagnostic,
)
from .discrete import code_log_likelihood
from .disentangle import (
    Disentanglement,
    KLDecomposition,
    beta_vae_score,
    dci,
    disentanglement,
    factor_vae_score,
    kl_decomposition,
    mig,
    modularity_explicitness,
    mutual_information_matrix,
    sap,
    total_correlation,
)
from .estimators import (
    LogLikelihood,
    conditional_elbo,
    conditional_log_likelihood,
    elbo,
    log_likelihood,
    pass_sizes,
    reconstruction_error,
)
from .export import to_inference_data
from .gaps import InferenceGaps, inference_gaps
from .representation import cluster, clustering_accuracy, linear_probe
from .sample_quality import (
    SampleQuality,
    frechet_distance,
    kernel_distance,
    precision_recall,
    sample_quality,
)

__all__ = [
    "LogLikelihood",
    "pass_sizes",
    "conditional_elbo",
    "conditional_log_likelihood",
    "elbo",
    "linear_probe",
    "log_likelihood",
    "reconstruction_error",
    "psis_diagnostic",
    "khat_threshold",
    "cluster",
    "clustering_accuracy",
    "ActiveUnits",
    "active_units",
    "ElboSurgery",
    "elbo_surgery",
    "bits_per_dim",
    "code_log_likelihood",
    "to_inference_data",
    "Disentanglement",
    "KLDecomposition",
    "beta_vae_score",
    "dci",
    "disentanglement",
    "factor_vae_score",
    "kl_decomposition",
    "mig",
    "modularity_explicitness",
    "mutual_information_matrix",
    "sap",
    "total_correlation",
    "AISLogLikelihood",
    "ais_log_likelihood",
    "bdmc",
    "SampleQuality",
    "features",
    "frechet_distance",
    "kernel_distance",
    "precision_recall",
    "sample_quality",
    "InferenceGaps",
    "inference_gaps",
]
