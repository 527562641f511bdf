"""The ELBOs whose loss stays on the device give Pyro's value and gradient exactly."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from probae import VAE, priors
from probae.objectives import MeanFieldELBO, ReparamELBO, make_elbo


class _Switch(nn.Module):
    """A pair with a discrete latent sampled in the guide (a score-function term) and an
    auxiliary guide site, on top of a Gaussian latent."""

    def __init__(self):
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(0.3))
        self.loc = nn.Parameter(torch.tensor([0.5, -0.2]))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            s = pyro.sample("s", dist.Bernoulli(x.new_tensor(0.5)))
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1) + s, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("s", dist.Bernoulli(logits=self.logit.expand(x.shape[0])))
            pyro.sample("z", dist.Normal(self.loc + x.unsqueeze(-1), 0.7).to_event(1))


def _value_and_grads(elbo, model, guide, params, x):
    pyro.set_rng_seed(3)
    loss = elbo.differentiable_loss(model, guide, x)
    return loss.detach(), torch.autograd.grad(loss, params)


def _vae(device):
    torch.manual_seed(0)
    return VAE((6,), 2, hidden=(5,), beta=0.7).to(device)


@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize(
    "ours, pyros", [(ReparamELBO, Trace_ELBO), (MeanFieldELBO, TraceMeanField_ELBO)]
)
def test_same_value_and_gradient_as_pyro(ours, pyros, particles, device):
    x = torch.rand(4, 6, device=device).round()
    cases = [(_vae(device), x)]
    vae = VAE((6,), 2, hidden=(5,), prior=priors.Laplace(2)).to(device)  # no closed-form KL
    cases.append((vae, x))
    if ours is ReparamELBO:
        cases.append((_Switch().to(device), torch.randn(4, device=device)))
    for module, data in cases:
        params = list(module.parameters())
        kw = dict(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
        value, grads = _value_and_grads(ours(**kw), module.model, module.guide, params, data)
        expected, expected_grads = _value_and_grads(
            pyros(**kw), module.model, module.guide, params, data
        )
        assert value.device == data.device
        torch.testing.assert_close(value, expected.to(value))
        for g, e in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(g, e)


def test_make_elbo_gives_the_losses_that_stay_on_the_device():
    assert type(make_elbo("elbo")) is ReparamELBO
    assert type(make_elbo("meanfield", num_particles=2)) is MeanFieldELBO
