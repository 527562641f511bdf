"""The disentanglement metrics against their definitions: maximal on codes that are
the ground-truth factors, lower on a rotation of them, at chance on codes that
ignore the factors; the KL decomposition against closed forms."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from probae import VAE, data, dsprites, evaluate, likelihoods
from probae.evaluate import disentangle

SIZES = (3, 4, 5, 8)
FAST = {"num_train": 2000, "num_eval": 1000, "batch_size": 32}


@pytest.fixture(scope="module")
def factors():
    return dsprites.synthetic(2000, sizes=SIZES, seed=0)


def ground_truth(x):
    """One code per factor, each a different strictly monotone transform."""
    return torch.stack([x[:, 0] ** 3, torch.exp(2 * x[:, 1]), -x[:, 2], torch.atan(3 * x[:, 3])], 1)


def rotated(x):
    rotation = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))[0]
    return ground_truth(x) @ rotation.T


def independent(x):
    return torch.randn(x.shape[0], 6, generator=torch.Generator().manual_seed(2))


def test_mi_estimator_is_the_plug_in_mi_and_ignores_monotone_transforms(factors):
    codes = ground_truth(factors.x)
    assert torch.equal(disentangle.discretize(codes), disentangle.discretize(torch.sinh(codes)))
    info = disentangle.mutual_information_matrix(codes, factors.factors)
    # a code that is a function of its factor separates all its classes: I = H(v)
    for k, size in enumerate(SIZES):
        p = np.bincount(factors.factors[:, k].numpy(), minlength=size) / len(factors)
        assert info[k, k].item() == pytest.approx(-(p * np.log(p)).sum(), abs=1e-9)
    # an independent computation of the plug-in MI: H(a) + H(b) - H(a, b)
    noise = independent(factors.x)
    bins = disentangle.discretize(noise)[:, 0].numpy()
    labels = factors.factors[:, 3].numpy()

    def entropy(values):
        _, counts = np.unique(values, return_counts=True, axis=0)
        p = counts / counts.sum()
        return -(p * np.log(p)).sum()

    expected = entropy(bins) + entropy(labels) - entropy(np.stack([bins, labels], 1))
    got = disentangle.mutual_information_matrix(noise, factors.factors)[0, 3].item()
    assert got == pytest.approx(expected, abs=1e-12)
    # the plug-in bias for independent variables, (B - 1)(|v| - 1) / 2N
    assert got < 3 * 19 * 7 / (2 * len(factors))


def test_ground_truth_codes_score_the_maximum(factors):
    codes, truth = ground_truth(factors.x), factors.factors
    assert disentangle.beta_vae_score(codes, truth, **FAST) == 1.0
    assert disentangle.factor_vae_score(codes, truth, **FAST) == 1.0
    assert disentangle.mig(codes, truth) > 0.99
    dci = disentangle.dci(codes, truth)
    assert dci["disentanglement"] > 0.95 and dci["completeness"] > 0.95
    assert disentangle.modularity_explicitness(codes, truth)["modularity"] > 0.99
    # SAP's regression form reaches its maximum on affine codes
    affine = factors.x * torch.tensor([2.0, -1.0, 0.5, 3.0]) + 1
    assert disentangle.sap(affine, truth) > 0.98
    # one extra code of pure noise changes none of the gaps
    padded = torch.cat([codes, independent(factors.x)[:, :1]], 1)
    assert disentangle.mig(padded, truth) > 0.98
    assert disentangle.factor_vae_score(padded, truth, **FAST) == 1.0


def test_a_rotation_of_the_ground_truth_scores_lower(factors):
    truth = factors.factors
    codes, mixed = ground_truth(factors.x), rotated(factors.x)
    assert disentangle.mig(mixed, truth) < 0.5 * disentangle.mig(codes, truth)
    assert disentangle.sap(mixed, truth) < 0.5
    assert disentangle.dci(mixed, truth)["disentanglement"] < 0.7
    assert disentangle.modularity_explicitness(mixed, truth)["modularity"] < 0.95
    # a rotation keeps the information: the lasso still predicts as well
    assert disentangle.dci(mixed, truth)["informativeness"] == pytest.approx(
        disentangle.dci(codes, truth)["informativeness"], abs=0.02
    )
    # no code is stilled by fixing a factor any more, so FactorVAE's vote drops below
    # 1; BetaVAE's linear classifier still reads the rotated pattern (Kim & Mnih's
    # criticism of it), so it stays above FactorVAE's
    factor_vae = disentangle.factor_vae_score(mixed, truth, **FAST)
    assert factor_vae < 0.9
    assert disentangle.beta_vae_score(mixed, truth, **FAST) > factor_vae


def test_codes_independent_of_the_factors_score_chance(factors):
    codes, truth = independent(factors.x), factors.factors
    chance = 1 / len(SIZES)
    assert disentangle.beta_vae_score(codes, truth, **FAST) == pytest.approx(chance, abs=0.05)
    assert disentangle.factor_vae_score(codes, truth, **FAST) < chance + 0.15
    assert disentangle.mig(codes, truth) < 0.02
    assert disentangle.sap(codes, truth) < 0.02
    assert disentangle.dci(codes, truth)["informativeness"] < 0.02
    assert disentangle.modularity_explicitness(codes, truth)["explicitness"] == pytest.approx(
        0.5, abs=0.03
    )


def test_disentanglement_runs_every_metric_on_a_users_data_set(factors):
    scores = evaluate.disentanglement(ground_truth, factors, num_points=1500, seed=3)
    assert scores.num_points == 1500 and scores.mutual_information.shape == (4, 4)
    assert scores.mig > 0.98 and scores.beta_vae == 1.0 and scores.factor_vae == 1.0
    again = evaluate.disentanglement(ground_truth, factors, num_points=1500, seed=3)
    assert again.as_dict() == scores.as_dict()  # seeded
    assert "mig" in str(scores)
    # real-valued factors are binned like the codes: a monotone code of each is ideal
    real = torch.rand(2000, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    codes = torch.stack([real[:, 0] ** 3, -real[:, 1], real[:, 2].exp()], 1)
    assert evaluate.mig(codes, real) > 0.93  # less the bias of the second-best code
    # two codes holding the same factor leave it no gap: MIG is (0 + 1) / 2
    twice = torch.stack([real[:, 0] ** 3, real[:, 0].exp(), real[:, 2]], 1)
    assert evaluate.mig(twice, real[:, [0, 2]]) == pytest.approx(0.5, abs=0.05)


def test_a_model_is_encoded_in_batches(factors, device):
    vae = VAE((4,), 2, hidden=(8,)).to(device)
    ds = data.Dataset(x=factors.x.to(device), factors=factors.factors.to(device))
    scores = evaluate.disentanglement(vae, ds, num_points=300, batch_size=64)
    codes, _ = disentangle.encode_factors(vae, ds, num_points=300, batch_size=64)
    assert scores.mig == pytest.approx(disentangle.mig(codes, _), abs=1e-12)
    # a (model, guide) pair is read at the mean of its guide's "z": the same codes
    pair_codes, _ = disentangle.encode_factors((vae.model, vae.guide), ds, num_points=300)
    torch.testing.assert_close(pair_codes, codes)


def test_bad_input(factors):
    with pytest.raises(ValueError, match="factors"):
        evaluate.disentanglement(ground_truth, factors.x)
    with pytest.raises(ValueError, match="one row per point"):
        evaluate.disentanglement(ground_truth, factors.x, factors=factors.factors[:10])
    with pytest.raises(ValueError, match="single value"):
        evaluate.mig(factors.x, torch.zeros(len(factors), 1, dtype=torch.long))
    with pytest.raises(ValueError, match="num_bins"):
        evaluate.mig(factors.x, factors.factors, num_bins=0)


# -- total correlation and the KL decomposition ------------------------------------------


class LinearGaussianEncoder(nn.Module):
    """q(z|x) = N(A x, sigma^2 I)."""

    def __init__(self, matrix, sigma):
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.sigma = sigma

    def forward(self, x):
        loc = x @ self.matrix.T
        return loc, torch.full_like(loc, self.sigma)


def _linear_gaussian(device, n=1500):
    matrix = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.5, 0.8]])
    sigma = 0.6
    vae = VAE(
        (3,), 3, likelihood=likelihoods.Gaussian(), encoder=LinearGaussianEncoder(matrix, sigma)
    ).to(device)
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0)).to(device)
    return vae, x, matrix, sigma


def test_total_correlation_of_a_gaussian_aggregate_posterior(device):
    """x ~ N(0, I) and q(z|x) = N(Ax, s^2 I) make q(z) = N(0, AA' + s^2 I), whose
    total correlation is -1/2 log det of its correlation matrix."""
    vae, x, matrix, sigma = _linear_gaussian(device)
    torch.manual_seed(0)
    result = evaluate.kl_decomposition(vae, x, num_samples=4)
    cov = matrix @ matrix.T + sigma**2 * torch.eye(3)
    std = cov.diagonal().sqrt()
    exact = -0.5 * torch.logdet(cov / std[:, None] / std[None, :]).item()
    # Monte Carlo error, and the finite-N mixture's own small deviation from N(0, cov)
    assert result.total_correlation == pytest.approx(
        exact, abs=4 * result.total_correlation_stderr + 0.03
    )
    assert evaluate.total_correlation(vae, x[:200]) > 0


def test_decomposition_sums_to_the_average_kl(device):
    vae, x, matrix, sigma = _linear_gaussian(device, n=400)
    torch.manual_seed(1)
    r = evaluate.kl_decomposition(vae, x, num_samples=3, batch_size=64)
    assert r.mutual_information + r.total_correlation + r.dimension_wise_kl == pytest.approx(
        r.average_kl, abs=1e-4
    )
    # and the average KL is the closed-form KL(N(Ax, s^2 I) || N(0, I)), averaged
    loc = x.cpu() @ matrix.T
    closed = 0.5 * (3 * sigma**2 + loc.pow(2).sum(1) - 3 - 3 * math.log(sigma**2))
    assert r.average_kl == pytest.approx(closed.mean().item(), abs=4 * r.average_kl_stderr)
    # the index-code MI is at most log N
    assert 0 < r.mutual_information <= math.log(400)
