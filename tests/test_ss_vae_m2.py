"""The semi-supervised M2 model (examples/ss_vae_m2_digits.py) trains through fit with
labelled and unlabelled points in one run, on TraceEnum_ELBO's objective."""

import importlib.util
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.poutine.messenger import Messenger

import probae
from probae import objectives
from probae._common import Pair

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ss_vae_m2_digits.py"


@pytest.fixture(scope="module")
def m2_module():
    spec = importlib.util.spec_from_file_location("ss_vae_m2_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def batch(device, m2_module):
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((12, 16), 0.4), generator=gen)
    labels = torch.arange(12) % 4
    y = torch.nn.functional.one_hot(labels, 4).float()
    y[6:] = 0  # the last six points are unlabelled
    m2 = m2_module.M2(x_dim=16, num_classes=4, z_dim=3, hidden=8).to(device)
    return m2, x.to(device), y.to(device)


def _grads(loss, module):
    return torch.autograd.grad(loss, list(module.parameters()), allow_unused=True)


def test_fit_trains_m2_on_traceenum_elbo_one_run_equals_the_three_losses(batch):
    """fit's objective on a mixed batch is TraceEnum_ELBO's, with the guide's class site
    summed out; on the same draws it is the sum of the labelled batch's loss (ELBO and
    auxiliary term) and the unlabelled batch's loss, which Pyro's recipe steps in turn."""
    m2, x, y = batch
    elbo, pair = objectives.for_pair("elbo", 1, Pair(m2.model, m2.guide, m2), (x, y))
    assert isinstance(elbo.elbo, TraceEnum_ELBO) and elbo.max_plate_nesting == 1

    pyro.set_rng_seed(5)
    ours = elbo.differentiable_loss(pair.model, pair.guide, x, y)
    grads = _grads(ours, m2)
    reference = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False)
    pyro.set_rng_seed(5)
    theirs = reference.differentiable_loss(m2.model, m2.guide, x, y)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    for mine, expected in zip(grads, _grads(theirs, m2), strict=True):
        torch.testing.assert_close(mine, expected)

    # the labelled part draws first, then the unlabelled part: the same draws split in two
    pyro.set_rng_seed(5)
    labelled = reference.differentiable_loss(m2.model, m2.guide, x[:6], y[:6])
    unlabelled = reference.differentiable_loss(m2.model, m2.guide, x[6:], y[6:])
    assert ours.item() == pytest.approx((labelled + unlabelled).item(), rel=1e-5)


class _StyleAtItsMean(Messenger):
    """Puts every style site z at its guide mean: the losses are then deterministic."""

    def _pyro_sample(self, msg):
        if msg["name"].startswith("z") and not msg["is_observed"]:
            msg["value"] = msg["fn"].mean


def test_the_enumerated_unlabelled_loss_is_the_sum_over_classes(batch):
    """Summing out y by hand: for each class k, the labelled loss of (x, k) (auxiliary
    term left out), weighted by q(k|x), less the entropy of q(y|x)."""
    m2, x, _ = batch
    xu = x[6:]

    def guide(*args):
        with _StyleAtItsMean():
            m2.guide(*args)

    reference = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False)
    m2.alpha = 0.0  # the auxiliary term only concerns labelled points
    enumerated = reference.loss(m2.model, guide, xu, torch.zeros(6, 4, device=x.device))
    q_y = torch.softmax(m2.encoder_y(xu), -1).detach()
    total = 0.0
    for k in range(4):
        yk = torch.nn.functional.one_hot(torch.full((6,), k), 4).float().to(x.device)
        for i in range(6):  # the labelled loss of each point alone, so it can be weighted
            total += q_y[i, k].item() * reference.loss(
                m2.model, guide, xu[i : i + 1], yk[i : i + 1]
            )
    entropy = -(q_y * q_y.log()).sum().item()
    assert enumerated == pytest.approx(total - entropy, rel=1e-5)


def test_trace_elbo_on_the_enumerated_guide_is_a_different_gradient(batch):
    """What fit did before reading the enumeration mark: Trace_ELBO samples y and its
    score-function gradient for q(y|x) differs from the exact one."""
    m2, x, y = batch
    pyro.set_rng_seed(5)
    exact = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False)
    g_exact = _grads(exact.differentiable_loss(m2.model, m2.guide, x, y), m2.encoder_y)
    pyro.set_rng_seed(5)
    g_sampled = _grads(Trace_ELBO().differentiable_loss(m2.model, m2.guide, x, y), m2.encoder_y)
    assert not torch.allclose(g_exact[0], g_sampled[0])


def test_m2_learns_to_classify_digits_from_few_labels(m2_module):
    from probae import data

    train, test = data.load("digits", split="train"), data.load("digits", split="test")
    x = data.binarize(train, seed=0).x
    y = m2_module.semi_supervised_labels(train.y, 100)
    m2 = m2_module.M2(x_dim=64, hidden=64)
    history = probae.fit(
        m2,
        x,
        c=y,
        epochs=3,
        batch_size=100,
        lr=3e-3,
        seed=0,
        validation=x[:200],
        validation_c=y[:200],
    )
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.val_loss[-1] < history.val_loss[0]
    accuracy = (m2.classify(test.x) == test.y).double().mean().item()
    assert accuracy > 0.4  # chance is 0.1
