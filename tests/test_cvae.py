"""The conditional VAE: its learned prior, its conditional likelihood estimates, and the
quadrant-completion task."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.nn.functional import softplus

import probae
from probae import CVAE, VAE, ConditionalBaseline, data, evaluate, likelihoods, nets, priors


def _inverse_softplus(y):
    return y + math.log(-math.expm1(-y))


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train"), data.load("digits", "test")


# -- the conditional prior -------------------------------------------------------------


def test_conditional_normal_starts_as_standard_normal_for_every_c(device):
    prior = priors.ConditionalNormal(c_dim=3, z_dim=4).to(device)
    c = torch.randn(5, 3, device=device) * 10
    z = torch.randn(5, 4, device=device)
    p = prior((5,), c)
    assert p.batch_shape == (5,) and p.event_shape == (4,)
    expected = -0.5 * z.pow(2).sum(-1) - 2 * math.log(2 * math.pi)
    torch.testing.assert_close(p.log_prob(z), expected, atol=1e-5, rtol=0)


def test_conditional_normal_is_a_function_of_c(device):
    prior = priors.ConditionalNormal(c_dim=2, z_dim=3, hidden=()).to(device)
    with torch.no_grad():
        prior.net[-1].weight.normal_()
    c = torch.randn(4, 2, device=device)
    loc, scale = prior.loc_scale(c)
    weight, bias = prior.net[-1].weight, prior.net[-1].bias
    torch.testing.assert_close(loc, c @ weight[:3].T + bias[:3])
    torch.testing.assert_close(scale, softplus(c @ weight[3:].T + bias[3:]) + nets.MIN_SCALE)


def test_conditional_normal_refuses_missing_or_misshapen_c():
    prior = priors.ConditionalNormal(c_dim=3, z_dim=2)
    with pytest.raises(ValueError, match="needs c="):
        prior((4,))
    with pytest.raises(ValueError, match=r"c must have shape \(\.\.\., 3\)"):
        prior((4,), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="does not fit batch_shape"):
        prior((4,), torch.zeros(3, 3))
    assert isinstance(priors.get("conditional-normal", 2, c_dim=3), priors.ConditionalNormal)


# -- a CVAE with p(z|c) = N(0, I) is a VAE whose networks read c ------------------------


def _standard_normal_conditional_prior(c_dim, z_dim):
    prior = priors.ConditionalNormal(c_dim, z_dim, hidden=(7,))
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_()  # a network that is anything but the identity ...
        prior.net[-1].weight.zero_()  # ... whose output ignores c:
        prior.net[-1].bias[:z_dim] = 0.0  # loc = 0
        prior.net[-1].bias[z_dim:] = _inverse_softplus(1.0 - nets.MIN_SCALE)  # scale = 1
    return prior


@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_cvae_with_standard_normal_prior_is_a_vae_reading_c(device, elbo_cls):
    x_dim, c_dim, z_dim, n = 12, 4, 3, 16
    cvae = CVAE((x_dim,), (c_dim,), z_dim, prior=_standard_normal_conditional_prior(c_dim, z_dim))
    cvae = cvae.to(device)
    x = torch.bernoulli(torch.full((n, x_dim), 0.3, device=device))
    c = torch.randn(n, c_dim, device=device)

    def vae_model(x, c):
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(x.new_zeros(n, z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=cvae.decoder(z, c)).to_event(1), obs=x)

    def vae_guide(x, c):
        with pyro.plate("data", n):
            loc, scale = cvae.encoder(x, c)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    losses, grads = [], []
    for model, guide in [(cvae.model, cvae.guide), (vae_model, vae_guide)]:
        pyro.set_rng_seed(3)
        loss = elbo_cls(num_particles=4, vectorize_particles=True).differentiable_loss(
            model, guide, x, c
        )
        losses.append(loss)
        params = [*cvae.encoder.parameters(), *cvae.decoder.parameters()]
        grads.append(torch.autograd.grad(loss, params))
    torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_beta_scales_the_kl_to_the_learned_prior(device):
    """TraceMeanField_ELBO with beta: loss(beta) - loss(1) = (beta - 1) KL(q(z|x,c) || p(z|c))."""
    cvae = CVAE((10,), (3,), 2).to(device)
    with torch.no_grad():
        for p in cvae.prior.parameters():
            p.normal_(0, 0.5)
    x = torch.bernoulli(torch.full((8, 10), 0.5, device=device))
    c = torch.randn(8, 3, device=device)
    losses = []
    for beta in (1.0, 3.0):
        cvae.beta = beta
        pyro.set_rng_seed(0)
        losses.append(TraceMeanField_ELBO().differentiable_loss(cvae.model, cvae.guide, x, c))
    loc_q, scale_q = cvae.encoder(x, c)
    loc_p, scale_p = cvae.prior.loc_scale(c)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(loc_q, scale_q), torch.distributions.Normal(loc_p, scale_p)
    ).sum()
    torch.testing.assert_close(losses[1] - losses[0], 2.0 * kl, rtol=1e-4, atol=1e-4)


# -- training ------------------------------------------------------------------------


def test_the_conditional_prior_is_trained_to_the_class_posteriors_moment_match(digits, device):
    r"""With the encoder and decoder frozen, the prior's part of the ELBO is
    :math:`-\sum_n \mathrm{KL}(q(z|x_n, c_n) \,\|\, p(z|c_n))`, minimized in closed form
    per class k and dimension by the moments of that class's posteriors:
    :math:`\mu_k = \overline{m_n}`, :math:`\sigma_k^2 = \overline{s_n^2 + (m_n - \mu_k)^2}`.
    TraceMeanField_ELBO computes that KL exactly, so full-batch training of the prior
    alone converges there, whatever the random stream."""
    train, _ = digits
    x = data.binarize(train.x[:500], seed=0).to(device)
    c = data.resolve_condition(train[:500], "label", c_shape=(10,)).to(device)
    cvae = CVAE((64,), (10,), z_dim=4, hidden=(64,), prior_hidden=(32,)).to(device)
    for net in (cvae.encoder, cvae.decoder):
        net.requires_grad_(False)
    probae.fit(cvae, x, c=c, epochs=200, batch_size=500, loss="meanfield", lr=3e-2, seed=0)

    with torch.no_grad():
        m, s = cvae.encoder(x, c)
        labels = c.argmax(-1)
        mu = torch.stack([m[labels == k].mean(0) for k in range(10)])
        var = torch.stack(
            [(s[labels == k] ** 2 + (m[labels == k] - mu[k]) ** 2).mean(0) for k in range(10)]
        )
        loc, scale = cvae.prior.loc_scale(torch.eye(10, device=device))
    # the targets differ between classes by far more than the tolerance
    assert mu.std(0).max() > 0.02
    torch.testing.assert_close(loc, mu, atol=1e-3, rtol=0)
    torch.testing.assert_close(scale**2, var, atol=1e-3, rtol=1e-3)


def test_fit_reads_the_condition_of_a_task_and_a_user_tensor_alike(device):
    task = data.quadrants("digits", observed=3)
    cvae = CVAE.for_task(task, z_dim=2, hidden=(32,)).to(device)
    history = probae.fit(cvae, task.train, epochs=2, validation=task.test, seed=0)
    assert len(history) == 2 and all(math.isfinite(v) for v in history.val_loss)
    history = probae.fit(cvae, task.train.x, c=task.train.c, epochs=1, seed=0)
    assert math.isfinite(history.train_loss[0])
    with pytest.raises(ValueError, match="not both"):
        probae.fit(cvae, task.train, c=task.train.c, condition="c", epochs=1)


def test_vectorized_particles_and_iwae_run_through_the_learned_prior(device):
    task = data.quadrants("digits", observed=2)
    cvae = CVAE.for_task(task, z_dim=3, hidden=(32,)).to(device)
    for loss in ("elbo", "meanfield", "iwae"):
        history = probae.fit(cvae, task.train[:200], epochs=1, loss=loss, num_particles=3)
        assert math.isfinite(history.train_loss[0])


# -- log p(x|c) of a linear-Gaussian conditional model --------------------------------


def _linear_gaussian(device, guide_shrink=1.0, guide_widen=1.0):
    r"""z|c ~ N(Ac, I), x|z,c ~ N(Wz + Bc, s^2 I) as a CVAE of single linear layers, and
    the exact log p(x|c) = log N(x; (WA + B)c, WW^T + s^2 I).

    W has orthogonal columns, so the exact posterior
    N(S(Ac + W^T(x - Bc)/s^2), S), S = (I + W^T W / s^2)^-1, is diagonal and the
    encoder can represent it; ``guide_shrink``/``guide_widen`` spoil it.
    """
    torch.manual_seed(1)
    x_dim, z_dim, c_dim, n, s = 5, 2, 3, 20, 0.7
    dtype = torch.float64
    q, _ = torch.linalg.qr(torch.randn(x_dim, z_dim, dtype=dtype))
    W = q * torch.tensor([1.5, 0.8], dtype=dtype)
    A = torch.randn(z_dim, c_dim, dtype=dtype)
    B = torch.randn(x_dim, c_dim, dtype=dtype)
    S = torch.linalg.inv(torch.eye(z_dim, dtype=dtype) + W.T @ W / s**2)
    assert torch.allclose(S, torch.diag(torch.diagonal(S)))

    cvae = CVAE(
        (x_dim,),
        (c_dim,),
        z_dim,
        prior=priors.ConditionalNormal(c_dim, z_dim, hidden=()),
        likelihood=likelihoods.Gaussian(scale=s),
        encoder=nets.MLPEncoder((x_dim,), z_dim, hidden=(), c_dim=c_dim),
        decoder=nets.MLPDecoder(z_dim, (x_dim,), hidden=(), c_dim=c_dim),
    ).double()
    with torch.no_grad():
        prior = cvae.prior.net[-1]
        prior.weight[:z_dim] = A
        prior.bias[z_dim:] = _inverse_softplus(1.0 - nets.MIN_SCALE)  # sigma = 1 in float64
        cvae.likelihood.log_scale.fill_(math.log(s))
        decoder = cvae.decoder.net[-1]
        decoder.weight.copy_(torch.cat([W, B], 1))
        decoder.bias.zero_()
        encoder = cvae.encoder.net[-1]
        encoder.weight.zero_()
        exact_loc = torch.cat([S @ W.T / s**2, S @ (A - W.T @ B / s**2)], 1)
        encoder.weight[:z_dim] = guide_shrink * exact_loc
        encoder.bias.zero_()
        scale = guide_widen * torch.diagonal(S).sqrt()
        raw_scale = [_inverse_softplus(v - nets.MIN_SCALE) for v in scale.tolist()]
        encoder.bias[z_dim:] = torch.tensor(raw_scale)
    c = torch.randn(n, c_dim, dtype=dtype)
    x = (c @ (W @ A + B).T) + torch.randn(n, x_dim, dtype=dtype) * 1.3
    covariance = W @ W.T + s**2 * torch.eye(x_dim, dtype=dtype)
    marginal = dist.MultivariateNormal(c @ (W @ A + B).T, covariance)
    cvae, x, c = cvae.to(device), x.to(device), c.to(device)
    return cvae, x, c, marginal.log_prob(x.cpu()).to(device)


def test_conditional_log_likelihood_is_exact_with_the_exact_posterior(device):
    cvae, x, c, exact = _linear_gaussian(device)
    ll = evaluate.conditional_log_likelihood(cvae, x, c=c, num_samples=3)
    torch.testing.assert_close(ll.values, exact, atol=1e-6, rtol=0)
    elbo = evaluate.conditional_elbo(cvae, x, c=c, num_particles=3)
    torch.testing.assert_close(elbo, exact, atol=1e-6, rtol=0)


def test_conditional_log_likelihood_converges_with_a_poor_guide(device):
    cvae, x, c, exact = _linear_gaussian(device, guide_shrink=0.5, guide_widen=1.8)
    elbo = evaluate.conditional_elbo(cvae, x, c=c, num_particles=2000)
    assert (exact - elbo).min() > 0.5  # the guide is poor: its ELBO is far below log p(x|c)
    few = evaluate.conditional_log_likelihood(cvae, x, c=c, num_samples=10)
    many = evaluate.conditional_log_likelihood(cvae, x, c=c, num_samples=20000, chunk_size=5000)
    error_few, error_many = (few.values - exact).abs(), (many.values - exact).abs()
    assert error_many.mean() < 0.03 and error_many.max() < 0.15
    assert abs(many.mean - exact.mean().item()) < 0.02
    assert error_many.mean() < error_few.mean() / 10


# -- conditional generation ---------------------------------------------------------


def test_class_conditional_samples_are_the_requested_digits(digits, device):
    """A logistic regression trained on the real digits reads the requested class in the
    CVAE's samples. Chance is 10%; the classifier itself gets about 96% of the real test
    digits right. We require 80%: a model that ignored its condition would score near 10%
    (with 300 samples the binomial standard deviation there is 1.7 points), and one that
    followed it only for some classes would lose 10 points per ignored class."""
    from sklearn.linear_model import LogisticRegression

    train, test = digits
    classifier = LogisticRegression().fit(train.x.numpy(), train.y.numpy())
    assert classifier.score(test.x.numpy(), test.y.numpy()) > 0.9

    cvae = CVAE((64,), (10,), z_dim=8).to(device)
    probae.fit(cvae, train, epochs=20, condition="label", binarize="dynamic", seed=0)
    labels = torch.arange(10).repeat_interleave(30)
    samples = cvae.sample(len(labels), c=labels.to(device))
    assert samples.shape == (300, 64)
    accuracy = (classifier.predict(samples.cpu().numpy()) == labels.numpy()).mean()
    assert accuracy > 0.8, accuracy
    # sixteen threes
    threes = cvae.sample(16, c=3)
    assert (classifier.predict(threes.cpu().numpy()) == 3).mean() > 0.8


def test_model_without_x_generates_from_the_conditional_prior(device):
    cvae = CVAE((6,), (2,), 3).to(device)
    with torch.no_grad():
        cvae.prior.net[-1].bias[:3] = torch.tensor([5.0, -5.0, 0.0])
    c = torch.zeros(4000, 2, device=device)
    trace = pyro.poutine.trace(cvae.model).get_trace(None, c)
    z, x = trace.nodes["z"]["value"], trace.nodes["x"]["value"]
    assert x.shape == (4000, 6) and set(x.unique().tolist()) <= {0.0, 1.0}
    loc = torch.tensor([5.0, -5.0, 0.0], device=device)
    torch.testing.assert_close(z.mean(0), loc, atol=0.1, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(3, device=device), atol=0.05, rtol=0)


# -- the quadrant task and the baseline ----------------------------------------------


@pytest.mark.parametrize("observed, pixels", [(1, 16), (2, 32), (3, 48)])
def test_quadrants_split_and_assemble_digits(observed, pixels, device):
    task = data.quadrants("digits", observed=observed, binarize=False)
    images = data.load("digits", "test").x.to(device)
    assert task.c_shape == (pixels,) and task.x_shape == (64 - pixels,)
    test = task.test.to(device)
    torch.testing.assert_close(task.assemble(test.c, test.x), images)
    c, x = task.split(images)
    assert torch.equal(c, test.c) and torch.equal(x, test.x)
    grid = task.mask.reshape(8, 8)
    assert grid[4:, :4].all()  # the bottom-left quadrant is always observed
    assert grid[:4, :4].all() == (observed >= 2)
    assert grid[:4, 4:].all() == (observed == 3)
    assert not grid[4:, 4:].any()
    binary = data.quadrants("digits", observed=observed)
    assert set(binary.train.x.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(binary.train.c, task.train.c)  # the condition keeps grey levels


def test_quadrants_refuses_bad_arguments():
    with pytest.raises(ValueError, match="observed"):
        data.quadrants("digits", observed=4)
    with pytest.raises(ValueError, match="name"):
        data.quadrants("moons")


def test_baseline_log_likelihood_is_its_cross_entropy(device):
    task = data.quadrants("digits", observed=1)
    baseline = ConditionalBaseline.for_task(task, hidden=(32,)).to(device)
    probae.fit(baseline, task.train, epochs=2, seed=0)
    test = task.test.to(device)
    p = baseline.predict(test.c)
    cross_entropy = -(test.x * p.log() + (1 - test.x) * (1 - p).log()).sum(-1)
    ll = evaluate.conditional_log_likelihood(baseline, test, num_samples=4)
    torch.testing.assert_close(-ll.values, cross_entropy, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(evaluate.conditional_elbo(baseline, test), ll.values)


def test_predict_draws_completions_from_the_prior(device):
    task = data.quadrants("digits", observed=2)
    cvae = CVAE.for_task(task, z_dim=4, hidden=(32,)).to(device)
    with torch.no_grad():
        cvae.prior.net[-1].bias[4:] = _inverse_softplus(2.0)  # wide p(z|c): draws differ
    c = task.test.c[:5].to(device)
    completions = cvae.predict(c, num_samples=7)
    assert completions.shape == (7, 5, 32)
    assert ((completions >= 0) & (completions <= 1)).all()
    assert completions.std(0).mean() > 1e-3


# -- bad conditions --------------------------------------------------------------------


def test_bad_conditions_raise_clear_errors(digits):
    train, _ = digits
    cvae = CVAE((64,), (10,), z_dim=2, hidden=(16,))
    x = train.x[:4].round()
    with pytest.raises(ValueError, match=r"c must have shape \(N, 10\)"):
        cvae.model(x, torch.zeros(4, 9))
    with pytest.raises(ValueError, match="one row per data point"):
        cvae.guide(x, torch.zeros(3, 10))
    with pytest.raises(ValueError, match="needs a condition c="):
        cvae.guide(x)
    with pytest.raises(ValueError, match="label out of range"):
        cvae.sample(3, c=10)
    with pytest.raises(ValueError, match="label out of range"):
        cvae.sample(2, c=torch.tensor([1, -1]))
    with pytest.raises(TypeError, match="c must be a torch.Tensor"):
        cvae.model(x, [[0.0] * 10] * 4)
    # the labels of the digits run to 9: a five-class model cannot take them
    with pytest.raises(ValueError, match="label out of range"):
        probae.fit(CVAE((64,), (5,), 2), train, condition="label", binarize="dynamic", epochs=1)
    with pytest.raises(ValueError, match="c_shape"):
        probae.fit(CVAE((64,), (2, 5), 2), train, condition="label", binarize="dynamic", epochs=1)
    with pytest.raises(ValueError, match="labels"):
        probae.fit(cvae, train.x, condition="label", binarize="dynamic", epochs=1)
    with pytest.raises(ValueError, match="tensor field"):
        probae.fit(cvae, train, condition="colour", binarize="dynamic", epochs=1)
    with pytest.raises(ValueError, match="needs a condition"):
        evaluate.conditional_log_likelihood(cvae, train, num_samples=2)
    # a model built without a condition refuses one
    vae = VAE((64,), 2, hidden=(16,))
    with pytest.raises(ValueError, match="not a conditional prior"):
        probae.fit(vae, train, condition="label", binarize="dynamic", epochs=1)
    with pytest.raises(ValueError, match="not a conditional prior"):
        evaluate.elbo(vae, data.binarize(train), c=torch.zeros(len(train), 10))
    with pytest.raises(ValueError, match="c_shape is required"):
        CVAE((64,), None, 2)


def test_one_hot():
    torch.testing.assert_close(data.one_hot([2, 0], 3), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    with pytest.raises(ValueError, match="label out of range"):
        data.one_hot([3], 3)
    with pytest.raises(TypeError, match="integers"):
        data.one_hot(torch.tensor([0.5]), 3)


# -- pictures --------------------------------------------------------------------------


def test_pictures_are_pngs(tmp_path, device):
    import matplotlib.image

    from probae import viz

    task = data.quadrants("digits", observed=1)
    cvae = CVAE.for_task(task, z_dim=2, hidden=(16,)).to(device)
    baseline = ConditionalBaseline.for_task(task, hidden=(16,)).to(device)
    path = viz.quadrant_completions(
        cvae, task, num_images=5, num_samples=3, baseline=baseline, path=tmp_path / "q.png"
    )
    assert matplotlib.image.imread(path).ndim == 3
    labels = CVAE((64,), (10,), 2, hidden=(16,)).to(device)
    path = viz.class_samples(labels, num_per_class=4, path=tmp_path / "k.png")
    assert matplotlib.image.imread(path).ndim == 3
    with pytest.raises(ValueError, match="class-conditional"):
        viz.class_samples(CVAE((64,), (2, 5), 2), path=tmp_path / "no.png")


@pytest.mark.data
def test_mnist_quadrants_have_the_tutorials_layout(mnist_root):
    task = data.quadrants("mnist", observed=1, root=mnist_root)
    assert task.c_shape == (196,) and task.x_shape == (588,)
    assert len(task.train) == 60000 and len(task.test) == 10000
    grid = task.mask.reshape(28, 28)
    assert grid[14:, :14].all() and grid.sum() == 196
    assert set(task.test.x[:100].unique().tolist()) == {0.0, 1.0}
