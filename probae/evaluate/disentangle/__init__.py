r"""Disentanglement: how the codes of a model line up with known factors of variation.

Every metric reads two tables: the codes :math:`c \in \mathbb R^{N\times D}` of N
data points (the posterior mean, :meth:`encode`) and their ground-truth factors
:math:`v \in \mathbb R^{N\times K}` (``Dataset.factors``: integer classes, or real
values). :func:`disentanglement` encodes a seeded sample of the data once, in
batches, and computes every metric from those two tables; each metric is also a
function of ``(codes, factors)`` alone, so a user's own codes work too.

Metrics that need "points that share the value of factor k" (the BetaVAE and
FactorVAE scores) draw them **from the data set itself**: a point, then partners
with the same class of factor k. For a data set that is the full factor grid or a
uniform sample of it (dSprites) this is the sampling process of the papers; no
simulator is needed, nothing is encoded twice, and memory is N x D.

**Mutual information estimator.** Each code is discretized into ``num_bins``
(default 20) equal-mass bins: the bin edges are the code's empirical quantiles at
:math:`1/B, \dots, (B-1)/B` (lower interpolation, so every edge is a value of the
code), a value goes to the bin counting the edges at or below it, and equal values
share a bin. Real-valued factors are discretized the same way; integer factors are
used as classes. The MI is the plug-in (histogram) estimate in nats,

.. math:: \hat I(c_d; v_k) = \sum_{a,b} \hat p(a, b)\log\frac{\hat p(a,b)}{\hat p(a)\hat p(b)}.

Equal-mass bins make the estimate invariant to any strictly increasing transform
of a code (the true MI is invariant to any invertible one; a decreasing transform
moves each edge by at most one tied group), and a factor class holding
at least 1/B of the points never shares a bin with another class, so a code that
is a monotone function of such a factor attains :math:`\hat I = H(v_k)` exactly.
The plug-in estimate is biased upward by about
:math:`(B-1)(|v_k|-1)/2N` for independent variables (Miller-Madow). No third-party
estimator is used: the numbers depend on this module only.

**The metrics** (each function's docstring gives its definition):

- :func:`beta_vae_score` (Higgins et al. 2017), :func:`factor_vae_score` (Kim & Mnih
  2018): accuracies of a classifier predicting which factor was held fixed;
- :func:`mig` (Chen et al. 2018): the mutual information gap;
- :func:`sap` (Kumar et al. 2018): the separated attribute predictability;
- :func:`dci` (Eastwood & Williams 2018): disentanglement, completeness and
  informativeness from the weights of a lasso regression;
- :func:`modularity_explicitness` (Ridgeway & Mozer 2018).

The classifiers and regressions are written in this package (multinomial logistic
regression by Newton's method, lasso by coordinate descent, in float64): deterministic
given the seed, and independent of scikit-learn's version.

Diagnostics of a model's aggregate posterior :math:`q(z) = \frac1N\sum_n q(z|x_n)`:
:func:`total_correlation` and :func:`kl_decomposition` (index-code mutual
information, total correlation and dimension-wise KL; Chen et al. 2018).

**Where each part lives.** Every name above is importable from here and from
:mod:`probae.evaluate`; the package holds one module per family of metrics:

- ``information``: the mutual information estimator, :func:`mig` and
  :func:`modularity_explicitness`;
- ``classifiers``: :func:`beta_vae_score`, :func:`factor_vae_score` and :func:`sap`;
- ``lasso``: :func:`dci` and its lasso regression;
- ``report``: :func:`encode_factors` and :func:`disentanglement`, every metric at once;
- ``aggregate``: :func:`kl_decomposition` and :func:`total_correlation`;

and three private ones they share: ``_tables`` (checking the two tables, the
equal-mass bins, the factor classes), ``_linear`` (the fitted linear models) and
``_votes`` (drawing the points of a vote from a table or a factor grid).

**References**

[1] `beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
Framework`, Irina Higgins et al. (ICLR 2017)

[2] `Disentangling by Factorising`, Hyunjik Kim, Andriy Mnih (ICML 2018)

[3] `Isolating Sources of Disentanglement in Variational Autoencoders`, Ricky T. Q.
Chen, Xuechen Li, Roger Grosse, David Duvenaud (NeurIPS 2018)

[4] `Variational Inference of Disentangled Latent Concepts from Unlabeled
Observations`, Abhishek Kumar, Prasanna Sattigeri, Avinash Balakrishnan (ICLR 2018)

[5] `A Framework for the Quantitative Evaluation of Disentangled Representations`,
Cian Eastwood, Christopher K. I. Williams (ICLR 2018)

[6] `Learning Deep Disentangled Embeddings with the F-Statistic Loss`, Karl
Ridgeway, Michael C. Mozer (NeurIPS 2018)

[7] `Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations`, Francesco Locatello et al. (ICML 2019)
"""

from ._tables import discretize
from .aggregate import KLDecomposition, kl_decomposition, total_correlation
from .classifiers import beta_vae_score, factor_vae_score, sap
from .information import mig, modularity_explicitness, mutual_information_matrix
from .lasso import dci
from .report import Disentanglement, disentanglement, encode_factors

__all__ = [
    "Disentanglement",
    "KLDecomposition",
    "beta_vae_score",
    "dci",
    "discretize",
    "disentanglement",
    "encode_factors",
    "factor_vae_score",
    "kl_decomposition",
    "mig",
    "modularity_explicitness",
    "mutual_information_matrix",
    "sap",
    "total_correlation",
]
