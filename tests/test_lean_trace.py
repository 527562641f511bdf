"""The device-resident ELBOs' traces against Pyro's own Trace_ELBO and
TraceMeanField_ELBO: the same loss value and the same gradients on the same draws."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import constraints

from probae import AE, CVAE, VAE, priors
from probae.models.autoencoders import SparseAE
from probae.objectives.elbo import MeanFieldELBO, ReparamELBO, _lean_importance_trace


def _user_pair(x):
    """A hand-written pair with global pyro.param sites and a per-point latent."""

    def model(x):
        w = pyro.param("w", x.new_ones(2, x.shape[1]))
        s = pyro.param("s", x.new_ones(()), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w, s).to_event(1), obs=x)

    def guide(x):
        a = pyro.param("a", 0.1 * x.new_ones(x.shape[1], 2))
        b = pyro.param("b", 0.5 * x.new_ones(2), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ a, b).to_event(1))

    return model, guide


def _score_pair(x):
    """A guide with a non-reparameterized site: Pyro's surrogate is kept."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Bernoulli(x.new_full((), 0.3)))
            pyro.sample("x", dist.Normal(k.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        p = pyro.param("p", x.new_full((x.shape[0],), 0.5), constraint=constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("k", dist.Bernoulli(p))

    return model, guide


def _pairs(device):
    torch.manual_seed(0)
    x = (torch.rand(7, 6, device=device) < 0.4).float()
    c = torch.eye(3, device=device)[torch.arange(7, device=device) % 3]
    vae = VAE((6,), 2, hidden=(8,)).to(device)
    beta = VAE((6,), 2, beta=4.0, hidden=(8,)).to(device)
    mixture = VAE((6,), 2, prior=priors.GaussianMixture(2, 3, enumerate=True), hidden=(8,))
    cvae = CVAE((6,), (3,), 2, hidden=(8,)).to(device)
    ae = AE((6,), 2, hidden=(8,)).to(device)
    sparse = SparseAE((6,), 3, hidden=(8,)).to(device)
    user = _user_pair(x)
    return {
        "vae": (vae, vae.model, vae.guide, (x,), True),
        "beta-vae": (beta, beta.model, beta.guide, (x,), True),
        "mixture-prior": (mixture, mixture.to(device).model, mixture.guide, (x,), False),
        "cvae": (cvae, cvae.model, cvae.guide, (x, c), True),
        "ae-delta": (ae, ae.model, ae.guide, (x,), False),
        "sparse-factor": (sparse, sparse.model, sparse.guide, (x,), False),
        "user-params": (None, *user, (x,), True),
        "score-function": (None, *_score_pair(x), (x,), False),
    }


def _value_and_grads(elbo, module, model, guide, args):
    pyro.set_rng_seed(123)
    loss = elbo.differentiable_loss(model, guide, *args)
    params = [] if module is None else list(module.parameters())
    params += [p for _, p in sorted(pyro.get_param_store().named_parameters())]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), [
        g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)
    ]


@pytest.mark.parametrize(
    "name",
    [
        "vae",
        "beta-vae",
        "mixture-prior",
        "cvae",
        "ae-delta",
        "sparse-factor",
        "user-params",
        "score-function",
    ],
)
@pytest.mark.parametrize(
    "lean, pyros", [(ReparamELBO, Trace_ELBO), (MeanFieldELBO, TraceMeanField_ELBO)]
)
def test_lean_trace_matches_pyro(name, lean, pyros, device):
    pyro.clear_param_store()
    module, model, guide, args, mean_field_ok = _pairs(device)[name]
    if pyros is TraceMeanField_ELBO and not mean_field_ok:
        pytest.skip("TraceMeanField_ELBO needs every model latent in the guide, reparameterized")
    with pyro.validation_enabled(False):
        # register every pyro.param (Pyro's ELBO registers them the same way)
        pyro.set_rng_seed(123)
        assert _lean_importance_trace(model, guide, args, {}) is not None
        mine, mine_grads = _value_and_grads(lean(max_plate_nesting=1), module, model, guide, args)
        theirs, their_grads = _value_and_grads(
            pyros(max_plate_nesting=1), module, model, guide, args
        )
    # the same terms, summed in another order: equal to float rounding
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-5)
    assert len(mine_grads) > 0
    for a, b in zip(mine_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)


def test_validation_takes_pyros_path(device):
    pyro.clear_param_store()
    module, model, guide, args, _ = _pairs(device)["vae"]
    with pyro.validation_enabled(True):
        assert _lean_importance_trace(model, guide, args, {}) is None
        mine, _ = _value_and_grads(ReparamELBO(max_plate_nesting=1), module, model, guide, args)
        theirs, _ = _value_and_grads(Trace_ELBO(max_plate_nesting=1), module, model, guide, args)
    # the same terms, summed in another order: equal to float rounding
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-5)
