"""The vectorized PSIS in torch agrees with ArviZ's loop over points (the reference
implementation of Vehtari et al.) on many sets of weights, light- to heavy-tailed."""

import math
import warnings

import pytest
import torch

from probae import evaluate
from probae.evaluate import _pareto


def _arviz_psis(log_weights):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz

        smoothed, khat = arviz.psislw(log_weights.T.cpu().numpy().copy(), normalize=False)
    return torch.as_tensor(khat), torch.as_tensor(smoothed).logsumexp(-1)


def _weight_sets(num_samples, generator):
    n = 40
    normal = torch.randn(num_samples, n, generator=generator, dtype=torch.float64)
    # exact generalized Pareto draws of shapes k in [0, 1.5): log w = log F^-1(u)
    k = torch.rand(n, generator=generator, dtype=torch.float64) * 1.5 + 1e-3
    u = torch.rand(num_samples, n, generator=generator, dtype=torch.float64)
    pareto = torch.log(torch.expm1(-k * torch.log(u)) / k)
    ties = torch.randint(0, 6, (num_samples, n), generator=generator).double()
    return {
        "normal": normal,
        "wide normal": 5 * normal,
        "lognormal": normal.exp(),
        "pareto": pareto,
        "many ties": ties,
    }


@pytest.mark.parametrize("num_samples", [25, 101, 1000, 5000])
def test_khat_and_smoothed_estimate_agree_with_arviz(num_samples, device):
    generator = torch.Generator().manual_seed(num_samples)
    for name, log_weights in _weight_sets(num_samples, generator).items():
        expected_k, expected_sum = _arviz_psis(log_weights)
        khat, smoothed = _pareto.psis(log_weights.to(device))
        assert khat.device == smoothed.device == log_weights.to(device).device
        khat, total = khat.cpu(), smoothed.logsumexp(0).cpu()
        same = torch.isfinite(expected_k)
        assert torch.equal(same, torch.isfinite(khat)), name
        torch.testing.assert_close(khat[same], expected_k[same], rtol=0, atol=1e-9, msg=name)
        fitted = torch.isfinite(expected_sum)
        torch.testing.assert_close(total[fitted], expected_sum[fitted], rtol=0, atol=1e-9)


def test_khat_recovers_the_shape_of_exact_pareto_weights(device):
    """The tail of generalized Pareto weights of shape k is fitted with shape k, within
    three standard errors of the maximum-likelihood fit, (1 + k) / sqrt(M)."""
    generator = torch.Generator().manual_seed(1)
    u = torch.rand(20000, 8, generator=generator, dtype=torch.float64)
    k = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5], dtype=torch.float64)
    log_weights = torch.log(torch.expm1(-k * torch.log(u)) / k)
    khat, _ = _pareto.psis(log_weights.to(device))
    stderr = (1 + k) / math.sqrt(_pareto.tail_size(20000))
    assert ((khat.cpu() - k).abs() < 3 * stderr).all()


def test_psis_diagnostic_stays_on_the_device_in_the_weights_dtype(device):
    log_weights = 3 * torch.randn(200, 30, device=device)
    khat, estimate = evaluate.psis_diagnostic(log_weights)
    assert khat.device == estimate.device == log_weights.device
    assert khat.dtype == estimate.dtype == log_weights.dtype
    expected_k, expected = _arviz_psis(log_weights.double())
    torch.testing.assert_close(khat.cpu().double(), expected_k, rtol=1e-5, atol=1e-5)
    expected = expected - math.log(200)  # the estimate is the mean of the smoothed weights
    torch.testing.assert_close(estimate.cpu().double(), expected, rtol=1e-5, atol=1e-5)
