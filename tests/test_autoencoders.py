"""Deterministic autoencoders as Delta-guide pairs: their losses against closed forms,
their codes and Jacobians against autograd, and their training on digits."""

import math

import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import Bernoulli, kl_divergence

import probae
from probae import corruption, data, evaluate, likelihoods
from probae.models.autoencoders import CodeEncoder, TiedDecoder, jacobian_squared_norm, top_k
from probae.viz import filters, first_layer_weights, vector_field

D = 64


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train"), data.load("digits", "test")


def _loss(model, x):
    return Trace_ELBO().differentiable_loss(model.model, model.guide, x)


def _copy_networks(source, target):
    target.encoder.load_state_dict(source.encoder.state_dict())
    target.decoder.load_state_dict(source.decoder.state_dict())
    return target


def _batch(digits, device, n=40, dtype=torch.float64):
    return digits[0].x[:n].to(device=device, dtype=dtype)


# -- the losses are closed forms ------------------------------------------------------


def test_ae_with_a_gaussian_likelihood_is_the_squared_error(digits, device):
    """-log p(x|z) at z = f(x) is ||x - g(f(x))||^2 / 2s^2 + D/2 log(2 pi s^2), exactly."""
    model = probae.AE((D,), 8, likelihood=likelihoods.Gaussian(scale=0.3)).to(device).double()
    # The scale is stored as a float32 log: read back the s the likelihood really uses.
    s = model.likelihood.scale.item()
    assert s == pytest.approx(0.3)
    x = _batch(digits, device)
    with torch.no_grad():
        reconstruction = model.decoder(model.encoder(x))
    per_point = (x - reconstruction).pow(2).sum(-1) / (2 * s**2) + D / 2 * math.log(
        2 * math.pi * s**2
    )
    torch.testing.assert_close(_loss(model, x), per_point.sum(), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(evaluate.elbo(model, x), -per_point, rtol=1e-12, atol=1e-9)
    # The mean-field ELBO has no KL to take for a point mass and gives the same loss.
    mean_field = TraceMeanField_ELBO().differentiable_loss(model.model, model.guide, x)
    torch.testing.assert_close(mean_field, per_point.sum(), rtol=1e-12, atol=1e-9)


def test_sparse_l1_adds_lambda_l1_minus_the_laplace_normalizer(digits, device):
    """-log Laplace(z; 0, 1/lambda) = lambda ||z||_1 - z_dim log(lambda / 2)."""
    lam, z_dim = 0.5, 12  # the prior stores its scale 1/lambda in float32: 2 is exact
    sparse = probae.SparseAE((D,), z_dim, penalty="l1", weight=lam).to(device).double()
    plain = probae.AE((D,), z_dim, activation="relu").to(device).double()
    _copy_networks(sparse, plain)
    x = _batch(digits, device)
    with torch.no_grad():
        z = sparse.encode(x)
    assert (z == 0).any() and (z > 0).any()  # ReLU codes: some units exactly off
    per_point = lam * z.abs().sum(-1) - z_dim * math.log(lam / 2)
    torch.testing.assert_close(
        evaluate.elbo(plain, x) - evaluate.elbo(sparse, x), per_point, rtol=1e-10, atol=1e-9
    )
    torch.testing.assert_close(_loss(sparse, x) - _loss(plain, x), per_point.sum())
    # beta scales the prior term, and both ELBOs agree on it (the guide's z site carries
    # the same scale, which is the one TraceMeanField_ELBO reads).
    sparse.beta = 0.5
    mean_field = TraceMeanField_ELBO().differentiable_loss(sparse.model, sparse.guide, x)
    torch.testing.assert_close(_loss(sparse, x) - _loss(plain, x), 0.5 * per_point.sum())
    torch.testing.assert_close(mean_field, _loss(sparse, x))


def test_sparse_kl_penalty_is_the_bernoulli_kl_at_the_batch_mean(digits, device):
    beta, rho, z_dim = 2.5, 0.1, 10
    model = probae.SparseAE((D,), z_dim, penalty="kl", weight=beta, rho=rho)
    model = model.to(device).double()
    x = _batch(digits, device)
    with torch.no_grad():
        rho_hat = model.encode(x).mean(0)
        expected = beta * kl_divergence(Bernoulli(probs=x.new_tensor(rho)), Bernoulli(rho_hat))
        trace = poutine.trace(model.guide).get_trace(x)
    shares = trace.nodes["sparsity"]["fn"].log_factor
    assert shares.shape == (x.shape[0],)  # one share per point, inside the data plate
    assert [f.name for f in trace.nodes["sparsity"]["cond_indep_stack"]] == ["data"]
    torch.testing.assert_close(shares, expected.sum().div(x.shape[0]).expand_as(shares))
    # Against the flat-prior autoencoder on the same networks, the loss grows by the penalty.
    plain = _copy_networks(model, probae.AE((D,), z_dim, activation="sigmoid").to(device).double())
    torch.testing.assert_close(_loss(model, x) - _loss(plain, x), expected.sum())


def test_k_sparse_codes_have_exactly_k_nonzeros_the_k_largest(digits, device):
    k, z_dim = 5, 40
    model = probae.KSparseAE((D,), z_dim, k=k).to(device)
    x = _batch(digits, device, dtype=torch.float32)
    with torch.no_grad():
        h = model.encoder(x)
        z = model.encode(x)
    kept = z != 0
    assert (kept.sum(-1) == k).all()
    assert torch.equal(z[kept], h[kept])
    smallest_kept = h.masked_fill(~kept, math.inf).min(-1).values
    largest_dropped = h.masked_fill(kept, -math.inf).max(-1).values
    assert (smallest_kept > largest_dropped).all()


def test_k_sparse_gradient_of_a_dropped_unit_is_zero(digits, device):
    model = probae.KSparseAE((D,), 30, k=4).to(device)
    x = _batch(digits, device, dtype=torch.float32)
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["h"] = output

    handle = model.encoder.register_forward_hook(keep)
    try:
        _loss(model, x).backward()
    finally:
        handle.remove()
    h = captured["h"]
    kept = top_k(h.detach(), 4) != 0
    assert (h.grad[~kept] == 0).all()
    assert (h.grad[kept] != 0).float().mean() > 0.99  # kept units do get gradient


def test_alpha_k_features(digits, device):
    model = probae.KSparseAE((D,), 30, k=4, alpha=2.5).to(device)
    with torch.no_grad():
        assert ((model.encode(digits[1].x.to(device)) != 0).sum(-1) == 10).all()


def _autograd_squared_norms(encoder, x):
    """||J||_F^2 point by point with torch.autograd.functional.jacobian."""
    out = []
    for point in x:
        jacobian = torch.autograd.functional.jacobian(lambda v: encoder(v.unsqueeze(0))[0], point)
        out.append(jacobian.pow(2).sum())
    return torch.stack(out)


@pytest.mark.parametrize("hidden, activation", [((16,), "tanh"), ((16, 8), "sigmoid"), ((), None)])
def test_contractive_penalty_is_the_jacobian_frobenius_norm(digits, device, hidden, activation):
    model = probae.ContractiveAE((D,), 6, weight=0.3, hidden=hidden, activation=activation)
    model = model.to(device).double()
    assert not model.has_closed_form
    x = torch.randn(12, D, device=device, dtype=torch.float64)
    expected = _autograd_squared_norms(model.encoder, x)
    torch.testing.assert_close(model.contraction(x), expected)
    with torch.no_grad():
        trace = poutine.trace(model.guide).get_trace(x)
    torch.testing.assert_close(trace.nodes["contraction"]["fn"].log_factor, 0.3 * expected)
    plain = probae.AE((D,), 6, hidden=hidden, activation=activation).to(device).double()
    _copy_networks(model, plain)
    torch.testing.assert_close(_loss(model, x) - _loss(plain, x), 0.3 * expected.sum())


def test_contractive_closed_form_agrees_with_autograd_for_the_sigmoid_encoder(device):
    model = probae.ContractiveAE((D,), 9).to(device).double()
    assert model.has_closed_form and model.method == "auto"
    x = torch.randn(15, D, device=device, dtype=torch.float64)
    closed = model.contraction(x, method="closed-form")
    torch.testing.assert_close(closed, _autograd_squared_norms(model.encoder, x))
    torch.testing.assert_close(model.contraction(x, method="autograd"), closed)
    # Both forms give the same parameter gradients, so training does not depend on the form.
    grads = []
    for method in ("closed-form", "autograd"):
        model.zero_grad()
        model.contraction(x, method=method).sum().backward()
        grads.append([p.grad.clone() for p in model.encoder.parameters()])
    for closed_grad, autograd_grad in zip(*grads, strict=True):
        torch.testing.assert_close(closed_grad, autograd_grad)


def test_jacobian_norm_of_a_linear_map_is_its_frobenius_norm(device):
    layer = torch.nn.Linear(5, 3).to(device).double()
    x = torch.randn(4, 5, dtype=torch.float64, device=device)
    norms = jacobian_squared_norm(layer, x, 1)
    torch.testing.assert_close(norms, layer.weight.pow(2).sum().expand(4))


def test_denoising_guide_encodes_the_corrupted_copy_and_the_model_scores_the_clean_x(
    digits, device
):
    model = probae.DenoisingAE((D,), 8, corruption=corruption.MaskingNoise(0.5)).to(device)
    x = _batch(digits, device, dtype=torch.float32) + 0.01  # no natural zeros
    with torch.no_grad():
        guide_trace = poutine.trace(model.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    x_tilde = guide_trace.nodes["x_tilde"]["value"]
    assert ((x_tilde == 0).sum(-1) == D // 2).all()
    torch.testing.assert_close(guide_trace.nodes["z"]["value"], model.encoder(x_tilde))
    assert torch.equal(model_trace.nodes["x"]["value"], x)
    # The recorded corrupted copy carries no density.
    assert (guide_trace.nodes["x_tilde"]["fn"].log_prob(x_tilde) == 0).all()


# -- the evaluator ---------------------------------------------------------------------

CLASSES = {
    "AE": lambda: probae.AE((D,), 16),
    "DenoisingAE": lambda: probae.DenoisingAE((D,), 16),
    "SparseAE-l1": lambda: probae.SparseAE((D,), 16, penalty="l1"),
    "SparseAE-kl": lambda: probae.SparseAE((D,), 16, penalty="kl"),
    "KSparseAE": lambda: probae.KSparseAE((D,), 48, k=8),
    "ContractiveAE": lambda: probae.ContractiveAE((D,), 32),
}


@pytest.mark.parametrize("name", list(CLASSES))
def test_log_likelihood_refuses_a_delta_guide(digits, name):
    model = CLASSES[name]()
    with pytest.raises(ValueError, match="Delta .*point mass"):
        evaluate.log_likelihood(model, digits[1], num_samples=2)


@pytest.mark.parametrize("name", [n for n in CLASSES if n != "DenoisingAE"])
def test_elbo_is_the_negative_loss_per_point(digits, name, device):
    model = CLASSES[name]().to(device)
    x = digits[1].x.to(device)
    with torch.no_grad():
        loss = _loss(model, x)
    torch.testing.assert_close(-evaluate.elbo(model, x).sum(), loss)


@pytest.mark.parametrize("name", list(CLASSES))
def test_training_on_digits_cuts_the_reconstruction_error(digits, device, name):
    """The threshold: half the error of the best constant prediction (the mean training
    image, about 4.7 per test image). A network that ignores its input cannot beat the
    mean, so clearing half of it shows the code carries most of each digit."""
    train, test = digits
    model = CLASSES[name]().to(device)
    before = evaluate.reconstruction_error(model, test).mean().item()
    history = probae.fit(model, train.to(device), epochs=25, batch_size=64, lr=2e-3, seed=0)
    after = evaluate.reconstruction_error(model, test.to(device)).mean().item()
    mean_error = (test.x - train.x.mean(0)).pow(2).sum(-1).mean().item()
    assert after < 0.5 * mean_error < before
    assert history.train_loss[-1] < history.train_loss[0]


# -- generation and feature quality ----------------------------------------------------


def test_sample_says_how_to_generate(digits):
    model = probae.SparseAE((D,), 4)
    with pytest.raises(RuntimeError, match="fit_latent_density"):
        model.sample(3)


def test_one_component_density_is_the_gaussian_fit_to_the_codes(digits, device):
    """With K = 1, maximum likelihood gives the codes' mean and (biased) covariance."""
    train = digits[0]
    model = probae.AE((D,), 5).to(device)
    density = probae.fit_latent_density(model, train.to(device), components=1)
    with torch.no_grad():
        codes = model.encode(train.x.to(device)).double()
    mean = codes.mean(0)
    covariance = (codes - mean).T @ (codes - mean) / codes.shape[0]
    scale_tril = density.scale_tril[0].double()
    torch.testing.assert_close(density.locs[0].double(), mean, rtol=1e-5, atol=1e-5)
    # scikit-learn adds reg_covar = 1e-6 to the diagonal.
    torch.testing.assert_close(
        scale_tril @ scale_tril.T,
        covariance + 1e-6 * torch.eye(5, device=device, dtype=torch.float64),
        rtol=1e-4,
        atol=1e-5,
    )
    samples = model.sample(7)
    assert samples.shape == (7, D) and samples.device.type == device.type


def test_fitted_density_is_saved_with_the_model(digits, device):
    model = probae.KSparseAE((D,), 20, k=3).to(device)
    probae.fit_latent_density(model, digits[0].to(device), components=3)
    fresh = probae.KSparseAE((D,), 20, k=3).to(device)
    fresh.load_state_dict(model.state_dict())
    for name in ("logits", "locs", "scale_tril"):
        assert getattr(model.latent_density, name).device.type == device.type
        assert torch.equal(getattr(fresh.latent_density, name), getattr(model.latent_density, name))
    samples = fresh.sample(2)
    assert samples.shape == (2, D) and samples.device.type == device.type


def test_linear_probe_is_perfect_on_label_features_and_majority_on_constants(digits, device):
    train, test = digits[0].to(device), digits[1].to(device)
    labels_train = torch.nn.functional.one_hot(train.y, 10).float()
    labels_test = torch.nn.functional.one_hot(test.y, 10).float()
    accuracy = evaluate.linear_probe(
        lambda x: x, labels_train, labels_test, train_y=train.y, test_y=test.y
    )
    assert accuracy == 1.0
    # Constant features: the classifier can only predict the most frequent training class.
    majority = torch.bincount(train.y).argmax()
    expected = (test.y == majority).double().mean().item()
    constant = evaluate.linear_probe(lambda x: x.new_ones(x.shape[0], 3), train, test)
    assert constant == pytest.approx(expected)


def test_linear_probe_names_missing_labels(digits):
    with pytest.raises(ValueError, match="train_y"):
        evaluate.linear_probe(lambda x: x, digits[0].x, digits[1])
    with pytest.raises(TypeError, match="model must be"):
        evaluate.linear_probe(3, digits[0], digits[1])


# -- tied weights, pictures, bad input --------------------------------------------------


def test_tied_decoder_is_the_transposed_encoder(device):
    model = probae.KSparseAE((D,), 20, k=3).to(device)
    assert isinstance(model.decoder, TiedDecoder) and model.tied
    z = torch.randn(4, 20, device=device)
    expected = z @ model.encoder.first_layer.weight + model.decoder.bias
    torch.testing.assert_close(model.decoder(z), expected)
    assert not any(
        key.startswith("decoder.") and key != "decoder.bias" for key in model.state_dict()
    )
    assert not probae.KSparseAE((D,), 20, k=3, hidden=(32,)).tied


def test_denoising_field_points_back_to_the_moons(tmp_path, device):
    """Alain & Bengio: r(x) - x is sigma^2 times the score, so near the data the arrows
    point to the nearest data point. A field unrelated to the data would point there
    half of the time; we ask for 85%."""
    moons = data.load("moons").to(device)
    model = probae.DenoisingAE((2,), 32, corruption=corruption.GaussianNoise(0.2), hidden=(64,))
    model = model.to(device)
    probae.fit(model, moons, epochs=20, batch_size=64, seed=0)
    grid = torch.rand(2000, 2, generator=torch.Generator().manual_seed(1)).to(device) * 5 - 2.5
    distance, nearest = torch.cdist(grid, moons.x).min(1)
    near = (distance > 0.3) & (distance < 1.0)
    field = model.reconstruct(grid) - grid
    cosine = torch.nn.functional.cosine_similarity(field, moons.x[nearest] - grid, dim=1)
    assert (cosine[near] > 0).double().mean() > 0.85
    path = vector_field(model, tmp_path / "field.png", data=moons, grid=12)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_filters_show_the_first_layer(tmp_path, device):
    import matplotlib.image

    model = probae.KSparseAE((D,), 20, k=3).to(device)
    assert torch.equal(first_layer_weights(model), model.encoder.first_layer.weight)
    path = filters(model, tmp_path / "filters.png")
    assert matplotlib.image.imread(path).ndim == 3
    with pytest.raises(ValueError, match="image_shape"):
        filters(probae.AE((10,), 3), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="x_shape == \\(2,\\)"):
        vector_field(model, tmp_path / "bad.png")


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: probae.SparseAE((D,), 4, penalty="l2"), ValueError, "penalty must be"),
        (lambda: probae.SparseAE((D,), 4, weight=-1.0), ValueError, "weight must be"),
        (lambda: probae.SparseAE((D,), 4, penalty="kl", rho=1.5), ValueError, "rho must be"),
        (lambda: probae.SparseAE((D,), 4, penalty="kl", activation="relu"), ValueError, "sigmoid"),
        (lambda: probae.KSparseAE((D,), 4, k=5), ValueError, "k must be"),
        (lambda: probae.KSparseAE((D,), 4, k=2, alpha=0.5), ValueError, "alpha must be"),
        (lambda: probae.KSparseAE((D,), 4, k=2, hidden=(8,), tied=True), ValueError, "tied"),
        (
            lambda: probae.ContractiveAE((D,), 4, hidden=(8,), method="closed-form"),
            ValueError,
            "closed-form",
        ),
        (lambda: probae.ContractiveAE((D,), 4, method="numeric"), ValueError, "method must be"),
        (lambda: probae.AE((D,), 4, activation="softmax"), ValueError, "activation must be"),
        (lambda: probae.DenoisingAE((D,), 4, corruption=0.3), TypeError, "corruption must be"),
    ],
)
def test_bad_arguments_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_conditions_and_bad_shapes_are_refused(digits):
    model = probae.AE((D,), 4)
    x = digits[1].x[:3]
    with pytest.raises(ValueError, match="not a conditional model"):
        model.guide(x, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="must have shape"):
        model.encode(x[:, :10])
    with pytest.raises(TypeError, match="deterministic autoencoder"):
        probae.fit_latent_density(probae.VAE((D,), 4), digits[0])
    with pytest.raises(ValueError, match="components"):
        probae.fit_latent_density(model, x, components=5)


def test_code_encoder_flattens_images():
    encoder = CodeEncoder((1, 8, 8), 5, hidden=(7,), activation="tanh")
    assert encoder(torch.rand(2, 3, 1, 8, 8)).shape == (2, 3, 5)
