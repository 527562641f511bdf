r"""How good a model's samples are, measured in a feature space: the Fréchet
distance (FID), the kernel distance (KID) and improved precision and recall.

Each compares a set of real feature vectors :math:`\{r_i\}_{i=1}^m` (features of
held-out data) with a set of generated ones :math:`\{g_j\}_{j=1}^n` (features of
``model.sample(n)``):

- **Fréchet distance** (Heusel et al. 2017): Gaussians fitted to each set,
  :math:`\mathcal N(\mu_r, \Sigma_r)` and :math:`\mathcal N(\mu_g, \Sigma_g)`, and the
  2-Wasserstein distance between them,

  .. math:: \mathrm{FID} = \|\mu_r - \mu_g\|^2
            + \operatorname{tr}\big(\Sigma_r + \Sigma_g - 2(\Sigma_r^{1/2}\Sigma_g\Sigma_r^{1/2})^{1/2}\big),

  computed in float64 with symmetric eigendecompositions (the trace of
  :math:`(\Sigma_r\Sigma_g)^{1/2}` equals that of the symmetric
  :math:`(\Sigma_r^{1/2}\Sigma_g\Sigma_r^{1/2})^{1/2}`). It is biased upwards for finite sets:
  compare figures computed from equally many samples.
- **Kernel distance** (Bińkowski et al. 2018): the unbiased estimate of the squared
  maximum mean discrepancy with the polynomial kernel
  :math:`k(a, b) = (a^\top b / d + 1)^3`,

  .. math:: \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)}\sum_{i\ne i'} k(r_i, r_{i'})
            + \frac{1}{n(n-1)}\sum_{j\ne j'} k(g_j, g_{j'})
            - \frac{2}{mn}\sum_{i,j} k(r_i, g_j).

  Both sets are shuffled and cut into ``kid_subsets`` disjoint blocks; KID is the mean of the
  blocks' estimates and its standard error their standard deviation over
  :math:`\sqrt{B}`. The blocks share no points, so their estimates are independent and the
  standard error is honest; KID is unbiased, so it can be negative when the sets agree.
- **Precision and recall** (Kynkäänniemi et al. 2019): each real point gets a ball
  whose radius is the distance to its k-th nearest real neighbour, and the union of
  the balls estimates the support of the data; precision is the fraction of generated
  points inside it. Recall is the same with the roles swapped: the fraction of real
  points inside the balls of the generated set.

The features matter more than the formula. Inception features, the usual choice for
natural images, are the wrong space for digits and often cannot be downloaded; a
classifier trained on the labelled data itself (:func:`probae.evaluate.features.classifier`)
is the usual choice on MNIST-like data. Any :class:`torch.nn.Module` mapping a batch of
points to ``(N, F)`` vectors serves. Figures from different feature extractors are not
comparable; orderings of models often are.

The distances are written here, about a hundred lines, rather than taken from
torchmetrics or torch-fidelity: neither is a dependency of probae, both expect images
(three channels, or an Inception network) where probae models produce flat vectors, and
the formulas are checked against closed forms in the tests.

**References**

[1] `GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium`,
Martin Heusel, Hubert Ramsauer, Thomas Unterthiner, Bernhard Nessler, Sepp Hochreiter
(NeurIPS 2017)

[2] `Demystifying MMD GANs`, Mikołaj Bińkowski, Danica J. Sutherland, Michael Arbel,
Arthur Gretton (ICLR 2018)

[3] `Improved Precision and Recall Metric for Assessing Generative Models`, Tuomas
Kynkäänniemi, Tero Karras, Samuli Laine, Jaakko Lehtinen, Timo Aila (NeurIPS 2019)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .. import data as _data
from .._common import positive_int

__all__ = [
    "SampleQuality",
    "frechet_distance",
    "kernel_distance",
    "precision_recall",
    "sample_quality",
    "extract_features",
]


@dataclass(frozen=True)
class SampleQuality:
    """Sample quality of a model against held-out data.

    :ivar float fid: Fréchet distance between the feature Gaussians.
    :ivar float kid: unbiased squared MMD, polynomial kernel, mean over blocks.
    :ivar float kid_se: standard error of ``kid`` over the disjoint blocks.
    :ivar float precision: fraction of samples inside the estimated data support.
    :ivar float recall: fraction of data inside the estimated sample support.
    :ivar int num_samples: generated points.
    :ivar int num_real: real points.
    """

    fid: float
    kid: float
    kid_se: float
    precision: float
    recall: float
    num_samples: int
    num_real: int

    def __str__(self) -> str:
        return (
            f"FID {self.fid:.3f}, KID {self.kid:.4f} ± {self.kid_se:.4f}, precision "
            f"{self.precision:.3f}, recall {self.recall:.3f} ({self.num_samples} samples, "
            f"{self.num_real} real points)"
        )


def _features_matrix(name: str, f) -> torch.Tensor:
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, F), got {type(f).__name__}")
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, F) with N >= 2, got {tuple(f.shape)}")
    if not torch.is_floating_point(f):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {f.dtype}")
    f = f.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return f


def _pair(real, fake):
    real = _features_matrix("real", real)
    fake = _features_matrix("fake", fake)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake must have the same feature size, got {real.shape[1]} and "
            f"{fake.shape[1]}"
        )
    return real, fake


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    r"""The Fréchet distance between Gaussians fitted to two feature sets,
    :math:`\|\mu_r - \mu_g\|^2 + \operatorname{tr}(\Sigma_r + \Sigma_g
    - 2(\Sigma_r^{1/2}\Sigma_g\Sigma_r^{1/2})^{1/2})` (Heusel et al. 2017), in float64.
    Covariances are the unbiased sample covariances.

    :param torch.Tensor real: ``(m, F)`` features.
    :param torch.Tensor fake: ``(n, F)`` features.
    """
    real, fake = _pair(real, fake)
    mu_r, mu_g = real.mean(0), fake.mean(0)
    cov_r, cov_g = torch.atleast_2d(torch.cov(real.T)), torch.atleast_2d(torch.cov(fake.T))
    root_r = _psd_sqrt(cov_r)
    middle = root_r @ cov_g @ root_r
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_r - mu_g).pow(2).sum() + cov_r.trace() + cov_g.trace() - 2 * trace_root
    return max(float(value), 0.0)


def _kernel(a: torch.Tensor, b: torch.Tensor, degree: int, coef: float) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + coef) ** degree


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int, coef: float) -> float:
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy = _kernel(x, x, degree, coef), _kernel(y, y, degree, coef)
    k_xy = _kernel(x, y, degree, coef)
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2 * k_xy.mean())


def kernel_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    subsets: int = 10,
    degree: int = 3,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    r"""The kernel distance of Bińkowski et al. (2018): the unbiased squared MMD with
    the polynomial kernel :math:`k(a, b) = (a^\top b / F + c)^p`, averaged over
    ``subsets`` disjoint blocks of both sets.

    :param torch.Tensor real: ``(m, F)`` features.
    :param torch.Tensor fake: ``(n, F)`` features.
    :param int subsets: number of disjoint blocks B; each holds ``m // B`` real and
        ``n // B`` generated points, at least 2 of each. With B = 1 it is the estimate on
        the whole sets (and the standard error is NaN).
    :param int degree: the kernel's degree p.
    :param float coef: the kernel's constant c.
    :param int seed: seeds the shuffle into blocks.
    :returns: ``(kid, standard_error)``.
    """
    real, fake = _pair(real, fake)
    subsets = positive_int("subsets", subsets)
    degree = positive_int("degree", degree)
    size_r, size_g = real.shape[0] // subsets, fake.shape[0] // subsets
    if min(size_r, size_g) < 2:
        raise ValueError(
            f"subsets={subsets} leaves fewer than 2 points per block ({real.shape[0]} real, "
            f"{fake.shape[0]} generated points)"
        )
    generator = torch.Generator().manual_seed(int(seed))
    order_r = torch.randperm(real.shape[0], generator=generator)
    order_g = torch.randperm(fake.shape[0], generator=generator)
    if subsets == 1:
        order_r, order_g = torch.arange(real.shape[0]), torch.arange(fake.shape[0])
    estimates = torch.tensor(
        [
            _mmd2_unbiased(
                real[order_r[b * size_r : (b + 1) * size_r]],
                fake[order_g[b * size_g : (b + 1) * size_g]],
                degree,
                float(coef),
            )
            for b in range(subsets)
        ],
        dtype=torch.float64,
    )
    se = float(estimates.std() / math.sqrt(subsets)) if subsets > 1 else math.nan
    return float(estimates.mean()), se


def _kth_neighbour_radii(points: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = []
    for block in points.split(chunk):
        distances = torch.cdist(block, points)
        # the k-th smallest after the point itself (distance 0, first)
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _coverage(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int):
    inside = []
    for block in queries.split(chunk):
        inside.append((torch.cdist(block, centres) <= radii).any(dim=1))
    return float(torch.cat(inside).double().mean())


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1000
) -> tuple[float, float]:
    r"""Improved precision and recall (Kynkäänniemi et al. 2019).

    With :math:`\mathrm{NN}_k(a, A)` the distance from :math:`a` to its k-th nearest
    neighbour in :math:`A \setminus \{a\}` and
    :math:`f(b, A) = 1` if :math:`\|b - a\| \le \mathrm{NN}_k(a, A)` for some
    :math:`a \in A`,

    .. math:: \mathrm{precision} = \frac1n\sum_j f(g_j, R), \qquad
              \mathrm{recall} = \frac1m\sum_i f(r_i, G).

    :param torch.Tensor real: ``(m, F)`` features, m > k.
    :param torch.Tensor fake: ``(n, F)`` features, n > k.
    :param int k: the neighbour that sets each radius (3 in the paper).
    :param int chunk: rows of the distance matrix held at once.
    :returns: ``(precision, recall)``.
    """
    real, fake = _pair(real, fake)
    k = positive_int("k", k)
    chunk = positive_int("chunk", chunk)
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(
            f"k={k} needs more than k points in each set, got {real.shape[0]} real and "
            f"{fake.shape[0]} generated"
        )
    radii_r = _kth_neighbour_radii(real, k, chunk)
    radii_g = _kth_neighbour_radii(fake, k, chunk)
    return _coverage(fake, real, radii_r, chunk), _coverage(real, fake, radii_g, chunk)


@torch.no_grad()
def extract_features(features, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``features`` applied to ``x`` in batches, in eval mode, on the module's device;
    ``None`` flattens the points themselves. Returns ``(N, F)`` float64 on the CPU.

    :param features: a :class:`torch.nn.Module` (or any callable) mapping ``(B, ...)`` to
        ``(B, F)``, or None for raw values.
    :param torch.Tensor x: points, shape ``(N, ...)``.
    :param int batch_size: points at once.
    """
    batch_size = positive_int("batch_size", batch_size)
    if features is None:
        return x.reshape(x.shape[0], -1).detach().to(device="cpu", dtype=torch.float64)
    if not callable(features):
        raise TypeError(
            f"features must be a torch.nn.Module (or callable) mapping points to (N, F) "
            f"vectors, or None, got {type(features).__name__}"
        )
    device = dtype = None
    if isinstance(features, nn.Module):
        for tensor in features.parameters():
            device, dtype = tensor.device, tensor.dtype
            break
        was_training = features.training
        features.eval()
    out = []
    try:
        for xb in x.split(batch_size):
            if device is not None:
                xb = xb.to(device=device, dtype=dtype)
            f = features(xb)
            if not isinstance(f, torch.Tensor) or f.dim() < 1 or f.shape[0] != xb.shape[0]:
                raise ValueError(
                    "features must return a tensor with one row per point, got "
                    f"{getattr(f, 'shape', type(f).__name__)} for {xb.shape[0]} points"
                )
            out.append(f.reshape(f.shape[0], -1).to(device="cpu", dtype=torch.float64))
    finally:
        if isinstance(features, nn.Module):
            features.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def _generate(model, n: int, batch_size: int, sampler) -> torch.Tensor:
    draw = model.sample if hasattr(model, "sample") else model
    if not callable(draw):
        raise TypeError(
            "model must have a sample(n) method (every probae family) or be a callable "
            f"returning n samples, got {type(model).__name__}"
        )
    kwargs = {} if sampler is None else {"sampler": sampler}
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        chunks = []
        done = 0
        while done < n:
            size = min(batch_size, n - done)
            chunks.append(draw(size, **kwargs))
            done += size
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
    return torch.cat(chunks)


def sample_quality(
    model,
    data,
    features=None,
    num_samples: int = 10_000,
    sampler=None,
    k: int = 3,
    kid_subsets: int = 10,
    batch_size: int = 1000,
    seed: int = 0,
) -> SampleQuality:
    r"""FID, KID, precision and recall of ``model``'s samples against ``data``.

    Draws ``num_samples`` points from ``model.sample`` (every probae family: a VAE
    from its prior, a deterministic autoencoder from its fitted code density, a VQ-VAE
    through its code prior, DRAW step by step; with ``sampler=`` a density fitted to the
    codes after training, :mod:`probae.samplers`), maps them and ``data`` through
    ``features``, and compares the two feature sets (:func:`frechet_distance`,
    :func:`kernel_distance`, :func:`precision_recall`).

    :param model: a probae model, or any object with ``sample(n)`` (or a callable
        ``n -> (n, ...)`` samples).
    :param data: held-out real data: a :class:`~probae.data.Dataset` or a tensor.
    :param features: a :class:`torch.nn.Module` mapping points to ``(N, F)`` features
        (:func:`probae.evaluate.features.classifier` builds one from labelled data), or
        None to compare raw values.
    :param int num_samples: generated points. FID is biased by the set sizes: compare
        models at equal ``num_samples`` and equal ``data``.
    :param sampler: passed to ``model.sample(n, sampler=...)`` when given.
    :param int k: the neighbour of precision and recall.
    :param int kid_subsets: the disjoint blocks of KID.
    :param int batch_size: points sampled and featurized at once.
    :param int seed: seeds KID's blocks.
    :rtype: SampleQuality
    """
    num_samples = positive_int("num_samples", num_samples)
    batch_size = positive_int("batch_size", batch_size)
    real_x = _data.as_tensor(data, "data")
    if not torch.is_floating_point(real_x) or real_x.dim() < 2:
        raise ValueError(
            f"data must hold floating-point points of shape (N, ...), got {real_x.dtype} "
            f"{tuple(real_x.shape)}"
        )
    fake_x = _generate(model, num_samples, batch_size, sampler)
    if tuple(fake_x.shape[1:]) != tuple(real_x.shape[1:]):
        raise ValueError(
            f"the model's samples have shape {tuple(fake_x.shape[1:])} per point but data "
            f"has {tuple(real_x.shape[1:])}"
        )
    real = extract_features(features, real_x, batch_size)
    fake = extract_features(features, fake_x, batch_size)
    kid, kid_se = kernel_distance(real, fake, subsets=kid_subsets, seed=seed)
    precision, recall = precision_recall(real, fake, k=k)
    return SampleQuality(
        fid=frechet_distance(real, fake),
        kid=kid,
        kid_se=kid_se,
        precision=precision,
        recall=recall,
        num_samples=num_samples,
        num_real=real.shape[0],
    )
