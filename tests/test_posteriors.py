"""The posterior family: one contract, flows' log-determinants against autograd
Jacobians, the identity start of the flows, the full-covariance factor, saving."""

import pyro
import pytest
import torch

import probae
from probae import CVAE, VAE, evaluate, nets, posteriors

Z = 3


def _families():
    return [
        posteriors.DiagonalNormal(),
        posteriors.FullCovariance(),
        posteriors.Planar(3),
        posteriors.IAF(2),
        posteriors.Spline(2),
    ]


def _params(family, n, device, dtype=torch.float32, generator=None):
    g = torch.Generator().manual_seed(1) if generator is None else generator
    loc = torch.randn(n, Z, generator=g, dtype=dtype)
    scale = 0.5 + torch.rand(n, Z, generator=g, dtype=dtype)
    h = family.context_dim(Z)
    out = (loc, scale) if h == 0 else (loc, scale, torch.randn(n, h, generator=g, dtype=dtype))
    return tuple(t.to(device) for t in out)


def _scramble(module, generator):
    """Random weights everywhere, so that no map is the identity."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator, dtype=p.dtype))


@pytest.mark.parametrize("family", _families(), ids=lambda p: type(p).__name__)
def test_every_posterior_draws_and_scores_on_the_device_of_its_input(family, device):
    family = family.setup(Z).to(device)
    q = family(_params(family, 7, device))
    assert q.event_shape == (Z,) and q.batch_shape == (7,)
    z = q.rsample()
    assert z.shape == (7, Z) and z.device.type == device.type
    log_q = q.log_prob(z)
    assert log_q.shape == (7,) and torch.isfinite(log_q).all()
    # draws of several samples at once (a sample plate left of the data plate)
    zs = q.expand((5, 7)).rsample()
    assert zs.shape == (5, 7, Z)
    # the density away from the distribution's own draws (a copy is not the cached draw)
    assert torch.allclose(q.log_prob(z.clone()), log_q, atol=1e-4)


@pytest.mark.parametrize("family", _families()[2:], ids=lambda p: type(p).__name__)
def test_each_flow_map_log_determinant_equals_the_autograd_jacobian(family):
    g = torch.Generator().manual_seed(3)
    family = family.setup(Z).double()
    _scramble(family, g)
    _, _, context = _params(family, 4, "cpu", torch.float64, g)
    x = torch.randn(4, Z, generator=g, dtype=torch.float64)
    for layer in family.layers:
        transform = layer.condition(context)
        y = transform(x)
        log_det = transform.log_abs_det_jacobian(x, y)
        for n in range(4):
            jacobian = torch.autograd.functional.jacobian(
                lambda v, n=n, layer=layer: layer.condition(context[n])(v), x[n]
            )
            expected = torch.linalg.slogdet(jacobian).logabsdet
            assert log_det[n].item() == pytest.approx(expected.item(), abs=1e-8)
        # the inverse recovers the input (log_prob away from the draws needs it)
        assert torch.allclose(layer.condition(context).inv(y.clone()), x, atol=1e-6)
        x = y


@pytest.mark.parametrize("family", _families()[2:], ids=lambda p: type(p).__name__)
def test_flow_log_prob_is_the_change_of_variables_of_the_base(family):
    g = torch.Generator().manual_seed(4)
    family = family.setup(Z).double()
    _scramble(family, g)
    params = _params(family, 5, "cpu", torch.float64, g)
    q = family(params)
    z = q.rsample()
    # log q(z) = log N(z0) - sum log|det J|, z0 found by inverting the maps numerically
    z0 = z.clone()
    transforms = family.transforms(params[2])
    for t in reversed(transforms):
        z0 = t.inv(z0)
    x, log_det = z0, 0.0
    for t in family.transforms(params[2]):
        y = t(x)
        log_det = log_det + t.log_abs_det_jacobian(x, y)
        x = y
    base = torch.distributions.Normal(params[0], params[1]).log_prob(z0).sum(-1)
    assert torch.allclose(q.log_prob(z), base - log_det, atol=1e-8)


def test_full_covariance_is_the_gaussian_of_its_cholesky_factor():
    family = posteriors.FullCovariance().setup(Z).double()
    loc, scale, context = _params(family, 4, "cpu", torch.float64)
    L = family.scale_tril(scale, context)
    assert torch.equal(L.triu(1), torch.zeros_like(L))
    assert torch.equal(torch.diagonal(L, dim1=-2, dim2=-1), scale)
    assert torch.equal(L[..., 1, 0], context[..., 0])  # row-major strictly lower entries
    q = family((loc, scale, context))
    z = torch.randn(4, Z, dtype=torch.float64)
    cov = L @ L.transpose(-1, -2)
    diff = z - loc
    expected = (
        -0.5 * (diff.unsqueeze(-2) @ torch.linalg.solve(cov, diff.unsqueeze(-1))).flatten()
        - 0.5 * torch.logdet(cov)
        - 0.5 * Z * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
    )
    assert torch.allclose(q.log_prob(z), expected, atol=1e-10)


@pytest.mark.parametrize("family", [posteriors.IAF(3), posteriors.Planar(4)], ids=["IAF", "Planar"])
def test_a_flow_at_its_identity_start_gives_exactly_the_diagonal_elbo(family, device):
    torch.manual_seed(0)
    diagonal = VAE((12,), Z, hidden=(16,)).to(device)
    flow = VAE((12,), Z, hidden=(16,), posterior=family).to(device)
    missing, unexpected = flow.load_state_dict(diagonal.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("encoder.context", "posterior")) for k in missing)
    x = (torch.rand(9, 12, device=device) > 0.5).float()
    pyro.set_rng_seed(5)
    expected = evaluate.elbo(diagonal, x, num_particles=4)
    pyro.set_rng_seed(5)
    got = evaluate.elbo(flow, x, num_particles=4)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5)
    assert torch.allclose(flow.encode(x), diagonal.encode(x), atol=1e-6)


def test_the_default_posterior_keeps_the_weights_and_numbers_of_a_diagonal_vae(tmp_path):
    torch.manual_seed(0)
    vae = VAE((12,), Z, hidden=(16,))
    assert isinstance(vae.posterior_family, posteriors.DiagonalNormal)
    torch.manual_seed(0)
    encoder = nets.make_encoder((12,), Z, (16,))
    keys = {k.removeprefix("encoder.") for k in vae.state_dict() if k.startswith("encoder.")}
    assert keys == set(encoder.state_dict())
    assert not [k for k in vae.state_dict() if k.startswith("posterior")]
    # a configuration written before posteriors existed (no "posterior" option) loads
    config = vae.config
    del config["options"]["posterior"]
    del config["options"]["encoder"]
    rebuilt = probae._config.build(config)
    rebuilt.load_state_dict(vae.state_dict())
    x = (torch.rand(5, 12) > 0.5).float()
    pyro.set_rng_seed(2)
    a = evaluate.elbo(vae, x)
    pyro.set_rng_seed(2)
    assert torch.equal(evaluate.elbo(rebuilt, x), a)


@pytest.mark.parametrize("spec", ["full", "planar:2", "iaf:2", "spline:1"])
def test_a_model_with_any_posterior_trains_saves_and_loads_bit_for_bit(spec, tmp_path):
    x = (torch.rand(16, 12) > 0.5).float()
    vae = VAE((12,), Z, hidden=(16,), posterior=spec)
    probae.fit(vae, x, epochs=1, batch_size=8)
    probae.save(vae, tmp_path / "m")
    loaded = probae.load(tmp_path / "m")
    assert type(loaded.posterior_family) is type(vae.posterior_family)
    pyro.set_rng_seed(1)
    a = evaluate.log_likelihood(vae, x, num_samples=8).values
    pyro.set_rng_seed(1)
    assert torch.equal(evaluate.log_likelihood(loaded, x, num_samples=8).values, a)


def test_a_cvae_takes_a_posterior():
    c = torch.nn.functional.one_hot(torch.arange(6) % 3, 3).float()
    x = (torch.rand(6, 12) > 0.5).float()
    cvae = CVAE((12,), (3,), Z, hidden=(16,), posterior=posteriors.IAF(2))
    assert torch.isfinite(evaluate.elbo(cvae, x, c=c)).all()
    assert cvae.encode(x, c).shape == (6, Z)


def test_names_and_bad_input_get_clear_errors():
    assert isinstance(posteriors.get("iaf:4"), posteriors.IAF)
    assert posteriors.get("iaf:4").num_transforms == 4
    assert isinstance(posteriors.get("full"), posteriors.FullCovariance)
    with pytest.raises(ValueError, match="unknown posterior"):
        posteriors.get("gaussian")
    with pytest.raises(ValueError, match="takes no number"):
        posteriors.get("full:2")
    with pytest.raises(ValueError, match="must be an integer"):
        posteriors.get("iaf:x")
    with pytest.raises(ValueError, match="num_transforms"):
        posteriors.IAF(0)
    with pytest.raises(TypeError, match="posterior"):
        VAE((12,), Z, posterior=3)
    # a user's encoder that returns no context for a family that reads one
    vae = VAE((12,), Z, hidden=(16,), encoder=nets.make_encoder((12,), Z), posterior="iaf:2")
    with pytest.raises(ValueError, match="context of 3 numbers"):
        vae.posterior(torch.rand(2, 12))
    # one posterior object serves models of one z_dim only
    shared = posteriors.IAF(2)
    VAE((12,), Z, posterior=shared)
    with pytest.raises(ValueError, match="z_dim=3"):
        VAE((12,), Z + 1, posterior=shared)


def test_the_command_line_trains_and_reloads_a_flow_posterior(tmp_path, capsys):
    from probae import cli

    run = tmp_path / "run"
    tiny = ["--z-dim", "2", "--hidden", "16", "--threads", "1", "--no-progress"]
    argv = ["train", "--run-dir", str(run), "--epochs", "1", "--posterior", "iaf:2", *tiny]
    assert cli.main(argv) == 0
    model = probae.load(run)
    assert isinstance(model.posterior_family, posteriors.IAF)
    assert model.posterior_family.num_transforms == 2
    capsys.readouterr()
    bad = ["train", "--run-dir", str(tmp_path / "bad"), "--posterior", "gaussian", *tiny]
    assert cli.main(bad) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unknown posterior" in err, err


@pytest.mark.parametrize("family", _families()[2:], ids=lambda p: type(p).__name__)
def test_a_flow_scores_values_that_broadcast_against_its_points(family):
    # the aggregate posterior scores each draw under every point's q(z|x_n)
    family = family.setup(Z)
    q = family(_params(family, 4, "cpu"))
    z = torch.randn(6, 1, Z)
    grid = q.log_prob(z)
    assert grid.shape == (6, 4)
    for n in range(4):
        one = family(tuple(t[n : n + 1] for t in _params(family, 4, "cpu")))
        assert torch.allclose(grid[:, n], one.log_prob(z[:, 0]).squeeze(-1), atol=1e-4)


def test_elbo_surgery_takes_a_flow_posterior():
    x = (torch.rand(12, 12) > 0.5).float()
    vae = VAE((12,), Z, hidden=(16,), posterior="iaf:2")
    surgery = evaluate.elbo_surgery(vae, x, num_samples=2)
    assert torch.isfinite(torch.tensor(surgery.mutual_information))


def test_factor_vae_takes_a_posterior():
    x = (torch.rand(16, 12) > 0.5).float()
    model = probae.FactorVAE((12,), Z, hidden=(16,), discriminator_hidden=(8,), posterior="iaf:2")
    assert isinstance(model.posterior_family, posteriors.IAF)
    probae.fit(model, x, epochs=1, batch_size=8)
    assert torch.isfinite(evaluate.elbo(model, x)).all()


@pytest.mark.filterwarnings("ignore:For .* the importance weights are too heavy-tailed")
@pytest.mark.parametrize("spec", ["planar:2", "iaf:2"])
def test_ais_starts_from_a_flow_posterior(spec):
    # AIS moves z by HMC under q^(1-beta) p^beta: log q and its gradient away from q's
    # draws, through the maps' inverses
    x = (torch.rand(6, 12) > 0.5).float()
    vae = VAE((12,), Z, hidden=(16,), posterior=spec)
    ais = evaluate.ais_log_likelihood(vae, x, num_chains=4, steps=30, warmup=5, progress=False)
    iwae = evaluate.log_likelihood(vae, x, num_samples=2000)
    assert ais.acceptance > 0.5
    assert ais.mean == pytest.approx(iwae.mean, abs=0.5)
