"""Reading a factorized site coordinate by coordinate: the scalar distribution under
Pyro's and torch's wrappers, and the closed-form KL of each coordinate against the
Gaussian formula."""

import math

import pyro.distributions as dist
import pytest
import torch

from probae._factorized import closed_form_kl, coordinates, innermost, unmasked


def gaussians(device):
    g = torch.Generator().manual_seed(0)
    loc_q, loc_p = torch.randn(2, 5, 3, generator=g, dtype=torch.float64).to(device)
    scale_q, scale_p = torch.rand(2, 5, 3, generator=g, dtype=torch.float64).add(0.2).to(device)
    return (loc_q, scale_q), (loc_p, scale_p)


def test_closed_form_kl_is_the_gaussian_formula_per_coordinate(device):
    (mq, sq), (mp, sp) = gaussians(device)
    kl = closed_form_kl(dist.Normal(mq, sq), dist.Normal(mp, sp))
    # KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2
    expected = [
        math.log(b / a) + (a * a + (m - n) ** 2) / (2 * b * b) - 0.5
        for m, a, n, b in zip(
            mq.flatten().cpu().tolist(),
            sq.flatten().cpu().tolist(),
            mp.flatten().cpu().tolist(),
            sp.flatten().cpu().tolist(),
            strict=True,
        )
    ]
    assert kl.shape == (5, 3) and kl.device == mq.device
    torch.testing.assert_close(kl.flatten().cpu(), torch.tensor(expected, dtype=torch.float64))


def test_coordinates_of_a_masked_vector_site_sum_to_its_kl(device):
    (mq, sq), (mp, sp) = gaussians(device)
    mask = torch.tensor([True, False, True, True, False], device=device)
    q = dist.Normal(mq, sq).to_event(1).mask(mask)
    p = dist.Normal(mp, sp).to_event(1)
    q_j, p_j = coordinates(q), coordinates(p)
    assert isinstance(q_j, dist.Normal) and isinstance(p_j, dist.Normal)
    assert torch.equal(q_j.loc, mq) and torch.equal(p_j.scale, sp)
    per_coordinate = closed_form_kl(q_j, p_j)
    whole = torch.distributions.kl_divergence(unmasked(q), p)  # the vector's KL, unmasked
    torch.testing.assert_close(per_coordinate.sum(-1), whole)


def test_only_a_one_dimensional_factorized_event_has_coordinates(device):
    loc, scale = torch.zeros(4, 2, 3, device=device), torch.ones(4, 2, 3, device=device)
    assert coordinates(dist.Normal(loc, scale).to_event(2)) is None
    assert coordinates(dist.Normal(loc, scale)) is None  # no event: nothing to split
    full = dist.MultivariateNormal(loc, torch.eye(3, device=device))
    assert coordinates(full) is None
    # innermost goes through every wrapper, whatever the event's rank
    wrapped = dist.Normal(loc, scale).to_event(2).mask(False)
    assert isinstance(innermost(wrapped), dist.Normal)
    assert innermost(wrapped).event_shape == ()


def test_closed_form_kl_is_none_without_a_closed_form(device):
    loc, scale = torch.zeros(3, device=device), torch.ones(3, device=device)
    student = dist.StudentT(torch.full((3,), 4.0, device=device), loc, scale)
    assert closed_form_kl(dist.Normal(loc, scale), student) is None
    with pytest.raises(NotImplementedError):
        torch.distributions.kl_divergence(dist.Normal(loc, scale), student)


def test_a_transformed_coordinate_is_scored_as_its_own_law(device):
    from probae.terms import _per_dimension

    (mq, sq), (mp, sp) = gaussians(device)
    log_normal = dist.LogNormal(mq, sq).to_event(1)
    # a LogNormal is not its base Normal: against a Normal prior no closed form is known
    assert innermost(log_normal) is log_normal.base_dist
    assert isinstance(innermost(log_normal), dist.LogNormal)
    assert _per_dimension(log_normal, dist.Normal(mp, sp).to_event(1)) is None
    # two LogNormals: the same bijection on both sides leaves the KL of the Normals
    kl = _per_dimension(log_normal, dist.LogNormal(mp, sp).to_event(1))
    torch.testing.assert_close(kl, closed_form_kl(dist.Normal(mq, sq), dist.Normal(mp, sp)))
