"""Mixture (marginal and enumerated), VampPrior and flow priors, and a user's own prior."""

import math

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch import nn

from probae import VAE, evaluate, fit, importance, likelihoods, nets, priors
from probae.objectives import IWAE, make_elbo
from probae.viz import aggregate_posterior

X_DIM, Z_DIM = 6, 2


def _binary(n, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, X_DIM), 0.4), generator=generator).to(device)


def _gmm_pair(device, components=3):
    """Two VAEs with the same weights: GMM prior summed out in its density, and enumerated."""
    marginal = VAE((X_DIM,), Z_DIM, prior=priors.GaussianMixture(Z_DIM, components), hidden=(8,))
    enumerated = VAE(
        (X_DIM,),
        Z_DIM,
        prior=priors.GaussianMixture(Z_DIM, components, enumerate=True),
        hidden=(8,),
    )
    with torch.no_grad():  # weights away from the initial symmetric logits
        marginal.prior.logits.copy_(torch.tensor([0.3, -0.5, 0.1])[:components])
    enumerated.load_state_dict(marginal.state_dict())
    return marginal.to(device), enumerated.to(device)


# -- Gaussian mixture: marginal and enumerated ------------------------------------------


def test_enumerated_model_has_a_parallel_enumerated_component_site(device):
    _, enumerated = _gmm_pair(device)
    x = _binary(4, device)
    assert importance.enumerated_sites(enumerated.model, enumerated.guide, (x,)) == ["component"]
    trace = pyro.poutine.trace(enumerated.model).get_trace(x)
    site = trace.nodes["component"]
    assert site["infer"] == {"enumerate": "parallel"}
    assert [f.name for f in site["cond_indep_stack"]] == ["data"]


@pytest.mark.parametrize("num_particles", [1, 4])
def test_enumerated_and_marginal_mixture_give_the_same_elbo_and_gradients(device, num_particles):
    """TraceEnum_ELBO sums the component out exactly: sum_k pi_k N(z; mu_k, s_k) is the
    mixture density, so on the same draws of z the two losses and gradients agree."""
    marginal, enumerated = _gmm_pair(device)
    x = _binary(16, device)
    vectorize = num_particles > 1
    pyro.set_rng_seed(3)
    trace_elbo = Trace_ELBO(num_particles, max_plate_nesting=1, vectorize_particles=vectorize)
    loss_m = trace_elbo.differentiable_loss(marginal.model, marginal.guide, x)
    pyro.set_rng_seed(3)
    elbo = make_elbo("elbo", num_particles, max_plate_nesting=1, enumerate=True)
    assert isinstance(elbo, TraceEnum_ELBO)
    loss_e = elbo.differentiable_loss(enumerated.model, enumerated.guide, x)
    assert torch.allclose(loss_m, loss_e, rtol=1e-5)
    grads_m = torch.autograd.grad(loss_m, list(marginal.parameters()))
    grads_e = torch.autograd.grad(loss_e, list(enumerated.parameters()))
    for gm, ge in zip(grads_m, grads_e, strict=True):
        assert torch.allclose(gm, ge, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_enumerated_iwae_bound_equals_the_marginal_one(device, beta):
    marginal, enumerated = _gmm_pair(device)
    marginal.beta = enumerated.beta = beta
    x = _binary(16, device)
    pyro.set_rng_seed(5)
    loss_m = IWAE(5, max_plate_nesting=1).differentiable_loss(marginal.model, marginal.guide, x)
    pyro.set_rng_seed(5)
    loss_e = make_elbo("iwae", 5, max_plate_nesting=1, enumerate=True).differentiable_loss(
        enumerated.model, enumerated.guide, x
    )
    assert torch.allclose(loss_m, loss_e, rtol=1e-5)


def test_evaluate_sums_the_enumerated_component_out(device):
    marginal, enumerated = _gmm_pair(device)
    x = _binary(20, device)
    results = []
    for model in (marginal, enumerated):
        pyro.set_rng_seed(11)
        results.append(
            (evaluate.elbo(model, x, 3), evaluate.log_likelihood(model, x, 30, psis=False).values)
        )
    assert torch.allclose(results[0][0], results[1][0], atol=1e-4)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-4)


def test_fit_trains_enumerated_and_marginal_mixtures_identically(device):
    """fit picks TraceEnum_ELBO for the enumerated model; equal gradients from equal
    draws make the two runs the same run."""
    marginal, enumerated = _gmm_pair(device)
    x = _binary(64, device, seed=1)
    histories = [
        fit(model, x, epochs=2, batch_size=32, seed=7, progress=False)
        for model in (marginal, enumerated)
    ]
    assert histories[0].train_loss == pytest.approx(histories[1].train_loss, rel=1e-5)
    for pm, pe in zip(marginal.parameters(), enumerated.parameters(), strict=True):
        assert torch.allclose(pm, pe, atol=1e-5)


def test_iwae_training_steps_on_the_enumerated_mixture_equal_the_marginal_ones(device):
    marginal, enumerated = _gmm_pair(device)
    x = _binary(32, device, seed=2)
    objectives = (IWAE(3, max_plate_nesting=1), make_elbo("iwae", 3, 1, enumerate=True))
    for model, objective in zip((marginal, enumerated), objectives, strict=True):
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for step in range(3):
            pyro.set_rng_seed(step)
            optimizer.zero_grad()
            objective.differentiable_loss(model.model, model.guide, x).backward()
            optimizer.step()
    for pm, pe in zip(marginal.parameters(), enumerated.parameters(), strict=True):
        assert torch.allclose(pm, pe, atol=1e-5)


def test_meanfield_loss_refuses_an_enumerated_model(device):
    _, enumerated = _gmm_pair(device)
    with pytest.raises(ValueError, match="meanfield"):
        fit(enumerated, _binary(8, device), epochs=1, loss="meanfield", progress=False)


def _far_apart_mixture_data(device, enumerate, n=300):
    """Three components 20 apart in z, a linear-Gaussian decoder, data drawn from it."""
    prior = priors.GaussianMixture(2, 3, enumerate=enumerate)
    with torch.no_grad():
        prior.locs.copy_(torch.tensor([[-10.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
        prior.raw_scales.fill_(math.log(math.expm1(0.5)))  # softplus^-1(0.5)
        prior.logits.zero_()
    generator = torch.Generator().manual_seed(0)
    k = torch.randint(0, 3, (n,), generator=generator)
    z = prior.locs.detach()[k] + 0.5 * torch.randn(n, 2, generator=generator)
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0], [0.5, 2.0]])
    x = z @ weight.T + 0.1 * torch.randn(n, 5, generator=generator)
    return prior, weight, x.to(device), k.to(device)


class _LinearEncoder(nn.Module):
    """q(z|x) = N(W^+ x, 0.1^2 I): the least-squares inverse of a linear decoder."""

    def __init__(self, weight):
        super().__init__()
        self.register_buffer("pinv", torch.linalg.pinv(weight).T.contiguous())

    def forward(self, x):
        loc = x @ self.pinv
        return loc, torch.full_like(loc, 0.1)


@pytest.mark.parametrize("enumerate", [False, True])
def test_cluster_recovers_far_apart_components(device, enumerate):
    prior, weight, x, k = _far_apart_mixture_data(device, enumerate)
    decoder = nn.Linear(2, 5, bias=False)
    with torch.no_grad():
        decoder.weight.copy_(weight)
    vae = VAE(
        (5,),
        2,
        prior=prior,
        likelihood=likelihoods.Gaussian(0.1),
        encoder=_LinearEncoder(weight),
        decoder=decoder,
    ).to(device)
    assignments = evaluate.cluster(vae, x, num_samples=20)
    assert assignments.dtype == torch.long
    assert torch.equal(assignments, k)
    shuffled = (assignments + 1) % 3  # component names are arbitrary
    assert evaluate.clustering_accuracy(shuffled, k) == 1.0


def test_cluster_of_a_user_pair_with_an_enumerated_component(device):
    prior, weight, x, k = _far_apart_mixture_data(device, True)
    prior, weight = prior.to(device), weight.to(device)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior.model((x.shape[0],)))
            pyro.sample("x", dist.Normal(z @ weight.T, 0.1).to_event(1), obs=x)

    pinv = torch.linalg.pinv(weight).T

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ pinv, 0.1).to_event(1))

    assert torch.equal(evaluate.cluster((model, guide), x, num_samples=10), k)


def test_cluster_refuses_a_prior_without_components(device):
    vae = VAE((X_DIM,), Z_DIM, hidden=(8,)).to(device)
    with pytest.raises(TypeError, match="mixture prior"):
        evaluate.cluster(vae, _binary(4, device))


def test_clustering_accuracy_takes_the_best_one_to_one_matching():
    # clusters 0 -> label 1 (2 points), 1 -> 0 (2), 2 -> 2 (1): 5 of 6
    assert evaluate.clustering_accuracy([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2]) == pytest.approx(
        5 / 6
    )
    # four clusters, two labels: two clusters stay unmatched and count as errors
    assert evaluate.clustering_accuracy([0, 1, 2, 3], [0, 0, 1, 1]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one entry per point"):
        evaluate.clustering_accuracy([0, 1], [0])


def test_gaussian_mixture_checks_its_arguments():
    with pytest.raises(TypeError, match="enumerate"):
        priors.GaussianMixture(2, 3, enumerate="yes")
    with pytest.raises(ValueError, match="components"):
        priors.GaussianMixture(2, 0)


# -- VampPrior --------------------------------------------------------------------------


def test_vampprior_density_is_the_average_of_the_encoder_gaussians(device):
    """p(z) = (1/K) sum_k N(z; mu(u_k), diag sigma(u_k)^2), computed by hand."""
    encoder = nets.MLPEncoder((X_DIM,), 3, hidden=(16,))
    prior = priors.VampPrior(encoder, pseudo_inputs=7).to(device)
    z = torch.randn(5, 3, device=device)
    loc, scale = encoder(prior.pseudo_inputs)
    per_component = []
    for k in range(7):
        log_normal = (
            -0.5 * ((z - loc[k]) / scale[k]) ** 2 - scale[k].log() - 0.5 * math.log(2 * math.pi)
        )
        per_component.append(log_normal.sum(-1))
    expected = torch.stack(per_component).logsumexp(0) - math.log(7)
    assert torch.allclose(prior((5,)).log_prob(z), expected, atol=1e-5)
    assert prior.z_dim == 3 and prior.num_pseudo_inputs == 7
    # the pseudo-inputs and the shared encoder both receive gradients
    prior((5,)).log_prob(z).sum().backward()
    assert prior.pseudo_inputs.grad.abs().sum() > 0
    assert all(p.grad is not None for p in encoder.parameters())


def test_vampprior_trains_with_the_vae_that_shares_its_encoder(device):
    encoder = nets.MLPEncoder((X_DIM,), Z_DIM, hidden=(8,))
    data = _binary(40, device)
    prior = priors.VampPrior(encoder, pseudo_inputs=data[:5].cpu())
    vae = VAE((X_DIM,), Z_DIM, prior=prior, encoder=encoder, hidden=(8,)).to(device)
    assert vae.prior.encoder is vae.encoder
    before = vae.prior.pseudo_inputs.detach().clone()
    history = fit(vae, data, epochs=2, batch_size=20, progress=False)
    assert all(math.isfinite(v) for v in history.train_loss)
    assert not torch.equal(before, vae.prior.pseudo_inputs.detach())
    assert vae.sample(3).shape == (3, X_DIM)


def test_vampprior_checks_its_arguments():
    encoder = nets.MLPEncoder((X_DIM,), Z_DIM, hidden=(8,))
    with pytest.raises(TypeError, match="encoder"):
        priors.VampPrior(lambda x: x, pseudo_inputs=3)
    with pytest.raises(ValueError, match="pseudo_inputs"):
        priors.VampPrior(encoder, pseudo_inputs=torch.zeros(3, X_DIM + 1))
    with pytest.raises(ValueError, match="pseudo_inputs"):
        priors.VampPrior(encoder, pseudo_inputs=0)
    with pytest.raises(ValueError, match="c="):
        priors.VampPrior(encoder, pseudo_inputs=3)((2,), c=torch.zeros(2, 1))


# -- Flow -------------------------------------------------------------------------------


def test_flow_density_matches_the_change_of_variables_formula(device):
    """log p(z) = log N(f^{-1}(z); 0, I) + log |det d f^{-1}/dz|, the Jacobian by autograd."""
    prior = priors.Flow(3, transforms=3).to(device)
    with torch.no_grad():  # move the flow away from its initialization
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    transforms = prior.transforms()

    def inverse(z):
        for t in reversed(transforms):
            z = t.inv(z)
        return z

    z = torch.randn(4, 3, device=device)
    expected = []
    for zi in z:
        jacobian = torch.autograd.functional.jacobian(inverse, zi)
        u = inverse(zi)
        log_base = -0.5 * (u**2).sum() - 1.5 * math.log(2 * math.pi)
        expected.append(log_base + torch.linalg.slogdet(jacobian)[1])
    assert torch.allclose(prior((4,)).log_prob(z), torch.stack(expected), atol=1e-4)


def test_flow_with_a_hand_built_affine_map_is_that_gaussian(device):
    """z = m + L u with u ~ N(0, I) is N(m, L L^T)."""
    m = torch.tensor([1.0, -2.0], device=device)
    tril = torch.tensor([[2.0, 0.0], [0.7, 0.5]], device=device)
    prior = priors.Flow(2, transforms=[T.LowerCholeskyAffine(m, tril)]).to(device)
    z = torch.randn(6, 2, device=device) * 3
    expected = dist.MultivariateNormal(m, scale_tril=tril).log_prob(z)
    assert torch.allclose(prior((6,)).log_prob(z), expected, atol=1e-5)


def test_flow_registers_learnable_transforms_and_trains(device):
    spline = T.spline_coupling(Z_DIM, count_bins=4)
    prior = priors.Flow(Z_DIM, transforms=[spline, T.affine_autoregressive(Z_DIM)])
    assert sum(p.numel() for p in prior.parameters()) > sum(p.numel() for p in spline.parameters())
    default = priors.Flow(Z_DIM)
    vae = VAE((X_DIM,), Z_DIM, prior=default, hidden=(8,)).to(device)
    before = [p.detach().clone() for p in vae.prior.parameters()]
    fit(vae, _binary(40, device), epochs=1, batch_size=20, progress=False)
    assert any(not torch.equal(b, p) for b, p in zip(before, vae.prior.parameters(), strict=True))
    assert vae.sample(3).shape == (3, X_DIM)
    assert isinstance(priors.get("flow", z_dim=3), priors.Flow)


def test_flow_checks_its_arguments():
    with pytest.raises(ValueError, match="transforms"):
        priors.Flow(2, transforms=0)
    with pytest.raises(TypeError, match="transforms"):
        priors.Flow(2, transforms=["not a transform"])
    with pytest.raises(ValueError, match="hidden"):
        priors.Flow(4, hidden=(2,))


# -- a user's own prior -----------------------------------------------------------------


class StudentT(nn.Module):
    """A heavy-tailed prior written from scratch: independent Student-t coordinates."""

    def __init__(self, z_dim, df=3.0):
        super().__init__()
        self.z_dim = z_dim
        self.register_buffer("df", torch.tensor(df))
        self.register_buffer("loc", torch.zeros(z_dim))

    def forward(self, batch_shape=()):
        base = dist.StudentT(self.df, self.loc, torch.ones_like(self.loc))
        return base.to_event(1).expand(torch.Size(batch_shape))


def test_a_users_own_prior_plugs_into_the_vae(device):
    vae = VAE((X_DIM,), Z_DIM, prior=StudentT(Z_DIM), hidden=(8,)).to(device)
    x = _binary(10, device)
    guide_trace = pyro.poutine.trace(vae.guide).get_trace(x)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    z = model_trace.nodes["z"]["value"]
    expected = torch.distributions.StudentT(3.0, 0.0, 1.0).log_prob(z.cpu()).sum(-1)
    assert torch.allclose(model_trace.nodes["z"]["fn"].log_prob(z).cpu(), expected, atol=1e-5)
    history = fit(vae, x, epochs=1, batch_size=5, progress=False)
    assert math.isfinite(history.train_loss[0])
    assert evaluate.active_units(vae, x).kl is not None


# -- the aggregate-posterior picture ----------------------------------------------------


def test_aggregate_posterior_picture_is_a_png(device, tmp_path):
    x = _binary(50, device)
    labels = torch.arange(50) % 3
    models = {
        "N(0, I)": VAE((X_DIM,), 2, hidden=(8,)).to(device),
        "mixture": VAE((X_DIM,), 2, prior=priors.GaussianMixture(2, 3), hidden=(8,)).to(device),
    }
    path = aggregate_posterior(models, x, tmp_path / "q_z.png", labels=labels)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="2-D latent"):
        aggregate_posterior(VAE((X_DIM,), 3, hidden=(8,)).to(device), x, tmp_path / "no.png")
