"""Pyro programs as written for ``SVI.step`` run through fit and the estimators as they
are: any plate name, ``pyro.markov`` sequences, several latent sites, masks, their own
batch arguments, pairs that do not broadcast over samples, and SVI's own optimizer and
gradient scale."""

import copy
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from torch import nn

import probae
from probae import batches, evaluate

# -- a linear-Gaussian chain under pyro.markov, whose log p(x) is known ----------------

A, NOISE, STEPS = 0.8, 0.5, 4


def _chain_covariance(dtype=torch.float64):
    """z_1 ~ N(0, 1), z_t ~ N(A z_{t-1}, 1), x_t ~ N(z_t, NOISE^2): z = L e with
    L[t, k] = A^(t - k), so Cov(x) = L L^T + NOISE^2 I."""
    t = torch.arange(STEPS, dtype=dtype)
    lower = torch.tril(A ** (t[:, None] - t[None, :]).clamp(min=0))
    lower = torch.tril(lower)
    prior = lower @ lower.T
    return prior, prior + NOISE**2 * torch.eye(STEPS, dtype=dtype)


def _posterior_marginals():
    """The exact posterior's mean map and marginal standard deviations."""
    prior, _ = _chain_covariance()
    precision = torch.linalg.inv(prior) + torch.eye(STEPS, dtype=prior.dtype) / NOISE**2
    covariance = torch.linalg.inv(precision)
    return covariance / NOISE**2, covariance.diagonal().sqrt()


def chain_model(x):
    with pyro.plate("sequences", x.shape[0]):
        z = None
        for t in pyro.markov(range(STEPS)):
            loc = x.new_zeros(x.shape[0]) if z is None else A * z
            z = pyro.sample(f"z_{t}", dist.Normal(loc, 1.0))
            pyro.sample(f"x_{t}", dist.Normal(z, NOISE), obs=x[:, t])


def chain_guide(x):
    """Mean-field: each z_t at its exact posterior mean, 1.3 times its marginal spread."""
    mean_map, scale = (x.new_tensor(v.tolist()) for v in _posterior_marginals())
    spread = pyro.param("spread", x.new_tensor(1.3), constraint=dist.constraints.positive)
    loc = x @ mean_map.T
    with pyro.plate("sequences", x.shape[0]):
        for t in pyro.markov(range(STEPS)):
            pyro.sample(f"z_{t}", dist.Normal(loc[:, t], spread * scale[t]))


def test_markov_chain_iwae_reaches_the_exact_log_likelihood_and_the_elbo_stays_below(device):
    _, covariance = _chain_covariance()
    x = torch.distributions.MultivariateNormal(torch.zeros(STEPS, dtype=torch.float64), covariance)
    x = x.sample((40,))
    exact = torch.distributions.MultivariateNormal(
        torch.zeros(STEPS, dtype=torch.float64), covariance
    ).log_prob(x)
    x = x.float().to(device)
    estimate = evaluate.log_likelihood((chain_model, chain_guide), x, num_samples=2000)
    error = (estimate.values.double().cpu() - exact).abs()
    assert error.max() < 0.05, error.max()
    elbo = evaluate.elbo((chain_model, chain_guide), x, num_particles=500).double().cpu()
    assert (elbo < exact).all()  # mean-field with wrong spreads: a strict bound
    assert (elbo > exact - 2.0).all()
    # and the pair trains through fit with the IWAE objective
    history = probae.fit((chain_model, chain_guide), x, epochs=1, loss="iwae", batch_size=20)
    assert math.isfinite(history.train_loss[0])


# -- any plate name, sequences with masks, batches of the program's own ---------------


def _sequence_pair(plate_name, device):
    """A small deep-Markov-style pair with its own batch arguments: padded sequences,
    a mask of the steps that exist, and the lengths (unused, as in Pyro's DMM)."""
    transition, emission, encoder = (
        nn.Linear(2, 2).to(device),
        nn.Linear(2, 3).to(device),
        nn.Linear(3, 4).to(device),
    )

    def model(sequences, mask, lengths=None):
        pyro.module("transition", transition)
        pyro.module("emission", emission)
        with pyro.plate(plate_name, sequences.shape[0]):
            z = sequences.new_zeros(sequences.shape[0], 2)
            for t in pyro.markov(range(sequences.shape[1])):
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", dist.Normal(transition(z), 1.0).to_event(1))
                    pyro.sample(
                        f"x_{t}",
                        dist.Normal(emission(z), 1.0).to_event(1),
                        obs=sequences[:, t],
                    )

    def guide(sequences, mask, lengths=None):
        pyro.module("encoder", encoder)
        with pyro.plate(plate_name, sequences.shape[0]):
            for t in pyro.markov(range(sequences.shape[1])):
                loc, raw = encoder(sequences[:, t]).chunk(2, -1)
                with poutine.mask(mask=mask[:, t]):
                    pyro.sample(f"z_{t}", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))

    return model, guide


def _sequences(device, n=12, steps=5):
    generator = torch.Generator().manual_seed(1)
    sequences = torch.randn(n, steps, 3, generator=generator)
    lengths = torch.randint(2, steps + 1, (n,), generator=generator)
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    return sequences.to(device), mask.to(device), lengths.to(device)


def _seeded(fn, seed=3):
    pyro.set_rng_seed(seed)
    return fn()


def test_any_plate_name_gives_the_same_estimates(device):
    sequences, mask, lengths = _sequences(device)
    batch = [(sequences, mask, lengths)]
    values = {}
    for name in ("data", "documents", "batch"):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        pair = _sequence_pair(name, device)
        values[name] = _seeded(lambda p=pair: evaluate.elbo(p, batch, num_particles=3))
    assert torch.equal(values["data"], values["documents"])
    assert torch.equal(values["data"], values["batch"])


def test_tuple_dict_and_list_batches_are_passed_as_svi_step_passes_them(device):
    sequences, mask, lengths = _sequences(device)
    pair = _sequence_pair("z_minibatch", device)
    halves = [slice(0, 6), slice(6, 12)]
    as_tuples = [(sequences[h], mask[h], lengths[h]) for h in halves]
    as_dicts = [{"sequences": sequences[h], "mask": mask[h]} for h in halves]
    loader = torch.utils.data.DataLoader(  # its own generator: the global stream stays put
        torch.utils.data.TensorDataset(sequences, mask, lengths),
        batch_size=6,
        generator=torch.Generator(),
    )
    tuples = _seeded(lambda: evaluate.elbo(pair, as_tuples))
    dicts = _seeded(lambda: evaluate.elbo(pair, as_dicts))
    loaded = _seeded(lambda: evaluate.elbo(pair, loader))
    assert tuples.shape == (12,)
    assert torch.equal(tuples, dicts) and torch.equal(tuples, loaded)
    # the per-point ELBO of the batches is the one of the whole set, in the batches' order
    whole = _seeded(lambda: evaluate.elbo(pair, [(sequences, mask, lengths)]))
    assert torch.allclose(tuples.sum(), whole.sum(), rtol=0.2)  # different draws, same scale
    ll = evaluate.log_likelihood(pair, as_dicts, num_samples=200)
    many = evaluate.elbo(pair, as_dicts, num_particles=200)
    assert ll.values.shape == (12,) and ll.values.mean() > many.mean()  # IWAE above the ELBO


def test_a_masked_step_drops_out_of_each_points_weight_exactly(device):
    sequences, mask, _ = _sequences(device)
    pair = _sequence_pair("data", device)
    masked = _seeded(lambda: evaluate.elbo(pair, [(sequences, mask)]))
    # values in the padded steps take no part: the same draws give the same weights
    padded = torch.where(mask[..., None], sequences, sequences.new_full((), 1e3))
    assert torch.equal(masked, _seeded(lambda: evaluate.elbo(pair, [(padded, mask)])))
    # values in the steps that exist do
    moved = sequences.clone()
    moved[0, 0] += 1.0
    changed = _seeded(lambda: evaluate.elbo(pair, [(moved, mask)]))
    assert changed[0] != masked[0] and torch.equal(changed[1:], masked[1:])


def test_fit_trains_a_program_on_its_own_batches_and_resumes(device, tmp_path):
    sequences, mask, lengths = _sequences(device)
    pair = _sequence_pair("z_minibatch", device)
    loader = [{"sequences": sequences[i : i + 4], "mask": mask[i : i + 4]} for i in (0, 4, 8)]
    first = probae.fit(pair, loader, epochs=2, checkpoint_dir=tmp_path / "run", seed=0)
    assert len(first.train_loss) == 2 and all(math.isfinite(v) for v in first.train_loss)
    resumed = probae.fit(
        pair, loader, epochs=3, checkpoint_dir=tmp_path / "run", resume=True, seed=0
    )
    assert len(resumed.train_loss) == 3 and resumed.train_loss[:2] == first.train_loss


def test_a_one_shot_iterator_is_refused_by_fit_in_words(device):
    sequences, mask, _ = _sequences(device)
    pair = _sequence_pair("data", device)
    with pytest.raises(ValueError, match="iterator, which can be read once"):
        probae.fit(pair, iter([(sequences, mask)]), epochs=2)
    # and read once by an estimator
    assert evaluate.elbo(pair, iter([(sequences, mask)])).shape == (12,)


def test_a_latent_shared_by_every_point_is_refused_by_name(device):
    def model(x):
        shift = pyro.sample("shift", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("points", x.shape[0]):
            pyro.sample("x", dist.Normal(shift, 1.0), obs=x)

    def guide(x):
        pyro.sample("shift", dist.Normal(x.new_zeros(()), 1.0))

    with pytest.raises(ValueError, match=r"no plate holds every sample site.*'shift'"):
        evaluate.elbo((model, guide), torch.randn(5, device=device))


# -- (N,) data: N scalar points --------------------------------------------------------


def _scalar_pair():
    def model(x):
        with pyro.plate("N", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        # the exact posterior N(x / 2, 1 / 2): every weight is p(x) itself
        with pyro.plate("N", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2, math.sqrt(0.5)))

    return model, guide


def test_scalar_points_have_the_closed_form_log_likelihood(device):
    x = torch.randn(30, device=device)
    exact = dist.Normal(0.0, math.sqrt(2.0)).log_prob(x.cpu())
    ll = evaluate.log_likelihood(_scalar_pair(), x, num_samples=30)
    assert torch.allclose(ll.values.cpu(), exact, atol=1e-5)
    assert torch.allclose(evaluate.elbo(_scalar_pair(), x).cpu(), exact, atol=1e-5)


# -- pairs that do not broadcast over samples -----------------------------------------


class _Softmax(nn.Module):
    """A decoder normalizing over ``dim``: as written for SVI, the class axis is dim 1
    of ``(N, K)``, which with draws side by side ``(S, N, K)`` is the points' axis;
    ``dim=-1`` is the class axis either way."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.decoder, self.encoder = nn.Linear(2, 5), nn.Linear(5, 4)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            probs = torch.softmax(self.decoder(z), dim=self.dim)
            pyro.sample("x", dist.Multinomial(10, probs=probs), obs=x)

    def guide(self, x):
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


def _counts(device):
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(8, 5, generator=generator), -1)
    return torch.distributions.Multinomial(10, probs=probs).sample().to(device)


def test_a_pair_that_does_not_broadcast_is_evaluated_one_draw_at_a_time_with_the_same_draws(
    device,
):
    x = _counts(device)  # 8 points x 2 latent dims: draws of 16 values, as torch fills them
    silent = _Softmax(dim=1).to(device)
    twin = _Softmax(dim=-1).to(device)
    twin.load_state_dict(silent.state_dict())
    with pytest.warns(UserWarning, match="drawn one at a time"):
        one_at_a_time = _seeded(lambda: evaluate.log_likelihood(silent, x, num_samples=64))
    vectorized = _seeded(lambda: evaluate.log_likelihood(twin, x, num_samples=64))
    assert torch.allclose(one_at_a_time.values, vectorized.values, atol=1e-5)
    with pytest.warns(UserWarning, match="drawn one at a time"):
        elbo = _seeded(lambda: evaluate.elbo(silent, x, num_particles=4))
    assert torch.allclose(elbo, _seeded(lambda: evaluate.elbo(twin, x, num_particles=4)), atol=1e-5)


@pytest.mark.parametrize("loss,particles", [("iwae", 4), ("elbo", 3)])
def test_fit_draws_the_particles_of_a_pair_that_does_not_broadcast_one_pass_each(
    device, loss, particles
):
    x = _counts(device)
    silent = _Softmax(dim=1).to(device)
    twin = copy.deepcopy(silent)
    twin.dim = -1
    with pytest.warns(UserWarning, match="drawn one pass each"):
        probae.fit(silent, x, epochs=2, batch_size=8, loss=loss, num_particles=particles, seed=0)
    probae.fit(twin, x, epochs=2, batch_size=8, loss=loss, num_particles=particles, seed=0)
    for a, b in zip(silent.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


# -- SVI's own semantics ---------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder, self.encoder = nn.Linear(2, 4), nn.Linear(4, 4)


def _pyro_style_pair(net):
    def model(x):
        pyro.module("decoder", net.decoder)
        scale = pyro.param("scale", x.new_ones(()), constraint=dist.constraints.positive)
        with pyro.plate("batch", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(net.decoder(z), scale).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", net.encoder)
        loc, raw = net.encoder(x).chunk(2, -1)
        with pyro.plate("batch", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))

    return model, guide


def _clipped_adam():
    return pyro.optim.ClippedAdam({"lr": 0.05, "clip_norm": 0.5, "weight_decay": 0.1})


def test_fit_with_a_pyro_optimizer_takes_svi_steps_exactly(device):
    torch.manual_seed(0)
    net = _Net().to(device)
    initial = copy.deepcopy(net)
    data = [torch.randn(16, 4, device=device) * 3 for _ in range(10)]

    probae.fit(_pyro_style_pair(net), data, epochs=2, optimizer=_clipped_adam(), seed=7)
    fitted = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    pyro.clear_param_store()
    twin = copy.deepcopy(initial)
    pyro.set_rng_seed(7)
    svi = SVI(*_pyro_style_pair(twin), _clipped_adam(), Trace_ELBO())
    for _ in range(2):
        for x in data:
            svi.step(x)
    stepped = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    assert fitted.keys() == stepped.keys() and len(fitted) == 5
    for name in fitted:
        assert torch.allclose(fitted[name], stepped[name], atol=1e-6), name
    # the same program under fit's per-point mean reduction takes other steps
    pyro.clear_param_store()
    probae.fit(
        _pyro_style_pair(copy.deepcopy(initial)),
        data,
        epochs=2,
        optimizer=_clipped_adam(),
        seed=7,
        reduction="mean",
    )
    meaned = {k: v.detach() for k, v in pyro.get_param_store().items()}
    assert max((meaned[k] - stepped[k]).abs().max().item() for k in stepped) > 1e-3


def test_a_pyro_scheduler_steps_every_epoch(device):
    net = _Net().to(device)
    data = [torch.randn(16, 4, device=device) for _ in range(3)]
    scheduler = pyro.optim.ExponentialLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.1}, "gamma": 0.5}
    )
    history = probae.fit(_pyro_style_pair(net), data, epochs=3, optimizer=scheduler)
    assert history.lr == pytest.approx([0.05, 0.025, 0.0125])


def test_reduction_and_pyro_optimizer_options_are_checked(device):
    x = torch.randn(8, 4, device=device)
    pair = _pyro_style_pair(_Net().to(device))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        probae.fit(pair, x, epochs=1, reduction="total")
    with pytest.raises(ValueError, match="carries its own"):
        probae.fit(pair, x, epochs=1, optimizer=_clipped_adam(), lr=0.1)


# -- semi-supervised programs in Pyro's own style --------------------------------------


class _M2(nn.Module):
    """Kingma et al. (2014)'s M2 in the style of Pyro's ss-VAE: ``y=None`` on unlabelled
    batches, where the guide's classifier proposes the label (enumerated)."""

    def __init__(self):
        super().__init__()
        self.decoder, self.encoder, self.classifier = (
            nn.Linear(3 + 2, 4),
            nn.Linear(4 + 3, 4),
            nn.Linear(4, 3),
        )

    def model(self, xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            prior = xs.new_ones(3) / 3
            ys = pyro.sample("y", dist.OneHotCategorical(prior), obs=ys)
            z = pyro.sample("z", dist.Normal(xs.new_zeros(2), 1.0).to_event(1))
            shape = torch.broadcast_shapes(ys.shape[:-1], z.shape[:-1])
            loc = self.decoder(torch.cat([ys.expand(*shape, 3), z.expand(*shape, 2)], -1))
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=xs)

    @config_enumerate
    def guide(self, xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                logits = self.classifier(xs)
                ys = pyro.sample("y", dist.OneHotCategorical(logits=logits))
            shape = torch.broadcast_shapes(ys.shape[:-1], xs.shape[:-1])
            h = torch.cat([xs.expand(*shape, 4), ys.expand(*shape, 3)], -1)
            loc, raw = self.encoder(h).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))


def test_labelled_and_unlabelled_batches_alternate_through_one_fit_call(device):
    generator = torch.Generator().manual_seed(0)
    xs = torch.randn(24, 4, generator=generator).to(device)
    ys = nn.functional.one_hot(torch.arange(24) % 3, 3).float().to(device)
    labelled = [(xs[i : i + 4], ys[i : i + 4]) for i in (0, 4)]
    unlabelled = [(xs[i : i + 4], ys[i : i + 4]) for i in (8, 12, 16, 20)]  # labels unused
    data = batches.alternate(labelled, unlabelled)
    order = [len(args) for args in data]
    assert order == [2, 1, 2, 1, 1, 1]
    m2 = _M2().to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TraceEnum on labelled batches
        history = probae.fit(m2, data, epochs=2, seed=0)
    assert all(math.isfinite(v) for v in history.train_loss)
    # the unlabelled loss is the one with the label summed out: TraceEnum_ELBO's
    pyro.set_rng_seed(1)
    ours = probae.objectives.make_elbo("elbo", max_plate_nesting=1, enumerate=True)
    value = ours.differentiable_loss(m2.model, m2.guide, xs[8:12]).item()
    pyro.set_rng_seed(1)
    theirs = TraceEnum_ELBO(max_plate_nesting=1).loss(m2.model, m2.guide, xs[8:12])
    assert value == pytest.approx(theirs, rel=1e-5)


# -- a subsampled plate ----------------------------------------------------------------


def _subsampled_pair(net):
    """The whole data set and the rows of this batch as the program's arguments:
    ``pyro.plate(..., subsample=rows)`` scales the batch's terms by N / len(rows)."""

    def model(x, rows):
        pyro.module("decoder", net.decoder)
        with pyro.plate("points", x.shape[0], subsample=rows) as index:
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(net.decoder(z), 1.0).to_event(1), obs=x[index])

    def guide(x, rows):
        pyro.module("encoder", net.encoder)
        with pyro.plate("points", x.shape[0], subsample=rows) as index:
            loc, raw = net.encoder(x[index]).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))

    return model, guide


def _unsubsampled_pair(net):
    """The same program on the batch's rows alone, in a plate of their own."""

    def model(xb):
        pyro.module("decoder", net.decoder)
        with pyro.plate("points", xb.shape[0]):
            z = pyro.sample("z", dist.Normal(xb.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(net.decoder(z), 1.0).to_event(1), obs=xb)

    def guide(xb):
        pyro.module("encoder", net.encoder)
        with pyro.plate("points", xb.shape[0]):
            loc, raw = net.encoder(xb).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))

    return model, guide


def test_a_subsampled_plate_is_scaled_as_pyro_scales_it_and_scored_per_point(device):
    net = _Net().to(device)
    x = torch.randn(40, 4, device=device)
    rows = torch.arange(8, 16, device=device)
    # per point: the subsampled points, exactly as the program on those rows alone
    pyro.set_rng_seed(7)
    per_point = evaluate.elbo(_subsampled_pair(net), [(x, rows)])
    pyro.set_rng_seed(7)
    alone = evaluate.elbo(_unsubsampled_pair(net), x[rows])
    assert per_point.shape == (8,) and torch.equal(per_point, alone)
    # training: one step's loss is Pyro's, the batch's terms scaled by 40 / 8, per point
    twin = copy.deepcopy(net)
    pyro.set_rng_seed(5)
    expected = Trace_ELBO().loss(*_subsampled_pair(twin), x, rows)
    pyro.clear_param_store()
    history = probae.fit(_subsampled_pair(net), [(x, rows)], epochs=1, seed=5)
    assert history.train_loss[0] == pytest.approx(expected / 40, rel=1e-5)
