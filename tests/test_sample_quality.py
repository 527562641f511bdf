"""Sample quality: FID against the closed-form Fréchet distance, KID against a direct
double sum and its unbiasedness, precision and recall on sets whose answer is known,
and the classifier feature space trained on digits."""

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch

import probae
from probae import data, evaluate


def _gaussian(n, mean, cov, seed):
    generator = torch.Generator().manual_seed(seed)
    scale = torch.linalg.cholesky(cov)
    return mean + torch.randn(n, len(mean), generator=generator, dtype=torch.float64) @ scale.T


def _frechet_closed_form(mu1, cov1, mu2, cov2):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), with SciPy's general matrix root."""
    root = scipy.linalg.sqrtm(cov1.numpy() @ cov2.numpy()).real
    return float((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * np.trace(root))


@pytest.fixture(scope="module")
def two_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64), torch.tensor([1.0, 0.5, 0.0])
    a = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.5]], dtype=torch.float64)
    cov1 = a @ a.T + 0.1 * torch.eye(3, dtype=torch.float64)
    cov2 = torch.diag(torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64))
    return mu1, cov1, mu2.double(), cov2


def test_fid_of_samples_equals_the_closed_form_of_their_moments(two_gaussians):
    """FID is the Fréchet distance between the Gaussians with the sets' sample moments."""
    mu1, cov1, mu2, cov2 = two_gaussians
    x, y = _gaussian(500, mu1, cov1, 0), _gaussian(700, mu2, cov2, 1)
    expected = _frechet_closed_form(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))
    assert evaluate.frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)


def test_fid_of_large_samples_converges_to_the_frechet_distance_of_the_gaussians(two_gaussians):
    mu1, cov1, mu2, cov2 = two_gaussians
    exact = _frechet_closed_form(mu1, cov1, mu2, cov2)
    x, y = _gaussian(200_000, mu1, cov1, 2), _gaussian(200_000, mu2, cov2, 3)
    assert evaluate.frechet_distance(x, y) == pytest.approx(exact, rel=0.02)
    # the equal-covariance case is the squared distance of the means
    z = _gaussian(200_000, mu2, cov1, 4)
    assert evaluate.frechet_distance(x, z) == pytest.approx(
        float((mu1 - mu2).pow(2).sum()), rel=0.02
    )


def test_a_set_against_itself_has_zero_fid_and_near_zero_kid(two_gaussians):
    mu1, cov1, _, _ = two_gaussians
    x = _gaussian(400, mu1, cov1, 5)
    assert evaluate.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    kid, _ = evaluate.kernel_distance(x, x, subsets=1)
    # with one set twice the unbiased estimate is -2/(m(m-1)) sum_i (k_ii - mean_j k_ij) / ...:
    # small next to the kernel's own scale, against which a shift is large
    shifted_kid, _ = evaluate.kernel_distance(x, x + 1.0, subsets=1)
    assert abs(kid) < 0.01 * shifted_kid


def _kid_by_double_sum(x, y):
    d = len(x[0])

    def k(a, b):
        return (sum(a[t] * b[t] for t in range(d)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_mmd_of_the_polynomial_kernel_by_a_direct_double_sum():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, generator=generator, dtype=torch.float64)
    y = torch.randn(9, 4, generator=generator, dtype=torch.float64) * 1.5 + 0.3
    kid, se = evaluate.kernel_distance(x, y, subsets=1)
    assert kid == pytest.approx(_kid_by_double_sum(x.tolist(), y.tolist()), rel=1e-10)
    assert math.isnan(se)


def test_kid_is_unbiased_its_mean_over_draws_of_one_distribution_is_zero():
    """Over many pairs of sets from one distribution the estimates average to 0 within
    their standard error; a biased (V-statistic) estimate would sit above it by O(1/m)."""
    generator = torch.Generator().manual_seed(1)
    draws = torch.tensor(
        [
            evaluate.kernel_distance(
                torch.randn(20, 3, generator=generator, dtype=torch.float64),
                torch.randn(20, 3, generator=generator, dtype=torch.float64),
                subsets=1,
            )[0]
            for _ in range(2000)
        ]
    )
    se = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean()) < 4 * se
    # and the standard error over blocks describes the spread of the block estimates
    x = torch.randn(2000, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(2000, 3, generator=generator, dtype=torch.float64) + 0.5
    kid, kid_se = evaluate.kernel_distance(x, y, subsets=20)
    assert kid > 10 * kid_se > 0


def test_precision_and_recall_of_identical_sets_are_one_and_of_far_apart_sets_zero():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(300, 5, generator=generator, dtype=torch.float64)
    assert evaluate.precision_recall(x, x) == (1.0, 1.0)
    assert evaluate.precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_a_shifted_set_loses_precision_and_a_narrow_one_loses_recall():
    generator = torch.Generator().manual_seed(3)
    real = torch.randn(1000, 2, generator=generator, dtype=torch.float64)
    same = torch.randn(1000, 2, generator=generator, dtype=torch.float64)
    precision, recall = evaluate.precision_recall(real, same)
    assert precision > 0.9 and recall > 0.9
    shifted = [evaluate.precision_recall(real, same + shift)[0] for shift in (1.0, 2.0, 3.0)]
    assert precision > shifted[0] > shifted[1] > shifted[2]
    assert shifted[2] < 0.5
    # samples collapsed near the mode are all plausible but cover little of the data
    narrow_precision, narrow_recall = evaluate.precision_recall(real, 0.2 * same)
    assert narrow_precision > 0.95 and narrow_recall < 0.5


def test_bad_feature_sets_are_refused_by_name():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="feature size"):
        evaluate.frechet_distance(x, torch.randn(10, 4))
    with pytest.raises(TypeError, match="real"):
        evaluate.kernel_distance(x.numpy(), x)
    with pytest.raises(ValueError, match="subsets"):
        evaluate.kernel_distance(x, x, subsets=6)
    with pytest.raises(ValueError, match="k=3"):
        evaluate.precision_recall(x[:3], x)
    with pytest.raises(ValueError, match="NaN"):
        evaluate.frechet_distance(x, torch.full((10, 3), float("nan")))


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train"), data.load("digits", "test")


@pytest.fixture(scope="module")
def digit_features(digits, tmp_path_factory):
    train, test = digits
    return evaluate.features.classifier(
        train, test, epochs=8, cache=tmp_path_factory.mktemp("features")
    )


def test_the_classifier_feature_space_separates_digits_and_is_cached(digits, tmp_path):
    train, test = digits
    first = evaluate.features.classifier(train, test, epochs=8, cache=tmp_path)
    assert first.accuracy > 0.9
    assert first(test.x[:5]).shape == (5, 128)
    (stored,) = tmp_path.glob("classifier-*.pt")
    torch.load(stored, weights_only=True)  # plain tensors and numbers only
    again = evaluate.features.classifier(train, test, epochs=8, cache=tmp_path)
    assert again.accuracy == first.accuracy
    torch.testing.assert_close(again(test.x), first(test.x))
    # other options are another classifier, another file
    evaluate.features.classifier(train, test, epochs=1, cache=tmp_path)
    assert len(list(tmp_path.glob("classifier-*.pt"))) == 2
    with pytest.raises(ValueError, match="labels"):
        evaluate.features.classifier(data.Dataset(train.x, None, (1, 8, 8)), cache=False)
    with pytest.raises(TypeError, match="train"):
        evaluate.features.classifier(train.x, cache=False)


def test_data_itself_scores_better_than_an_untrained_model(digits, digit_features, device):
    train, test = digits
    vae = probae.VAE((64,), 4).to(device)
    untrained = evaluate.sample_quality(vae, test, features=digit_features, num_samples=720)
    features = digit_features.to(device)

    def resample(n):  # training points, a "model" whose samples are real digits
        return train.x[torch.randint(len(train), (n,))].to(device)

    real = evaluate.sample_quality(resample, test.to(device), features=features, num_samples=720)
    assert real.fid < 0.2 * untrained.fid
    assert real.kid < untrained.kid - 3 * untrained.kid_se
    assert real.precision > untrained.precision and real.recall > untrained.recall
    assert real.num_samples == 720 and real.num_real == len(test)
    assert "FID" in str(real)


def test_sample_quality_checks_its_arguments(digits):
    _, test = digits
    vae = probae.VAE((64,), 4)
    with pytest.raises(ValueError, match="num_samples"):
        evaluate.sample_quality(vae, test, num_samples=0)
    with pytest.raises(TypeError, match="features"):
        evaluate.sample_quality(vae, test, features="inception", num_samples=50)
    with pytest.raises(ValueError, match="shape"):
        evaluate.sample_quality(probae.VAE((16,), 2), test, num_samples=50)
    with pytest.raises(TypeError, match="sample"):
        evaluate.sample_quality(object(), test, num_samples=50)


@pytest.mark.parametrize("name", ["vae", "draw", "ae", "wae"])
def test_families_of_every_kind_are_measured_through_their_sample(name, digits, device):
    from probae.models import families

    train, test = digits
    model = families.build({"model": name, "x_shape": [64]}).to(device)
    if name == "ae":  # no prior: a mixture fitted to its codes first
        probae.fit_latent_density(model, train.to(device), components=3)
    quality = evaluate.sample_quality(model, test, num_samples=80, kid_subsets=2)
    assert quality.num_samples == 80 and math.isfinite(quality.fid)
    assert 0 <= quality.precision <= 1 and 0 <= quality.recall <= 1
