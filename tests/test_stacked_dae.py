"""The stacked denoising autoencoder: greedy layer-wise training on clean codes, the
one-layer stack as a DenoisingAE, the deep denoising objective, saving, resuming."""

import json
import math
import shutil

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

import probae
from probae import cli, corruption, likelihoods, viz
from probae.models import StackedDenoisingAE

D = 64


def _points(device, n=32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, D, generator=generator).to(device)


def _same_rows(a, b) -> bool:
    """``a`` holds exactly the rows of ``b`` in some order (bit for bit)."""
    return a.shape == b.shape and bool((a[:, None, :] == b[None]).all(-1).any(1).all())


def test_layer_two_trains_on_exactly_the_clean_codes_of_layer_one(device):
    x = _points(device)
    sdae = StackedDenoisingAE((D,), layers=(16, 8)).to(device)
    layer1, layer2 = sdae.layers
    scored, encoded = [], []
    score = layer2.model

    def spy_model(h, c=None):  # the model scores the clean input of its layer
        scored.append(h.detach().clone())
        return score(h, c)

    layer2.model = spy_model
    layer2.encoder.register_forward_pre_hook(lambda _, args: encoded.append(args[0].clone()))
    # one batch holds every point
    sdae.pretrain(x, epochs_per_layer=1, batch_size=len(x), seed=0, progress=False)

    with torch.no_grad():
        clean = layer1.encoder(x)  # with layer 1's final weights: it stayed frozen
        w, b = layer1.encoder.first_layer.weight, layer1.encoder.first_layer.bias
        by_hand = torch.sigmoid(x.double() @ w.double().T + b.double())
    torch.testing.assert_close(clean.double(), by_hand, rtol=1e-6, atol=1e-6)
    assert len(scored) >= 2  # the trainer's first look at the pair, and the step
    for h in scored:
        assert _same_rows(h, clean)
    # its own guide corrupts those codes: masking zeroes round(0.25 * 16) = 4 of each row
    # (a sigmoid code is never 0) and leaves the others as they are
    for h_tilde in encoded:
        zeros = h_tilde == 0
        assert (zeros.sum(-1) == 4).all()
        # every corrupted row is a clean row with four values zeroed
        matches = ((h_tilde[:, None, :] == clean[None]) | zeros[:, None, :]).all(-1)
        assert matches.any(1).all()
    assert [len(h) for h in sdae.layer_histories] == [1, 1]


def test_layer_input_is_the_clean_code_of_the_layers_below(device):
    x = _points(device, n=10)
    sdae = StackedDenoisingAE((D,), layers=(12, 6, 3)).to(device)
    first, second, third = sdae.layers
    with torch.no_grad():
        assert torch.equal(sdae.layer_input(x, 0), x)
        assert torch.equal(sdae.layer_input(x, 1), first.encoder(x))
        assert torch.equal(sdae.layer_input(x, 2), second.encoder(first.encoder(x)))
        # the same twice: no corruption drawn; and in batches as at once
        assert torch.equal(sdae.layer_input(x, 2), sdae.layer_input(x, 2, batch_size=3))
        # the top code the probes use is the whole stack's clean code
        top = sdae.encode(x)
        assert top.shape == (10, 3)
        assert torch.equal(top, third.encoder(second.encoder(first.encoder(x))))


def test_a_one_layer_stack_is_a_denoising_ae_bit_for_bit(device):
    x = _points(device, n=40)
    pyro.set_rng_seed(3)
    dae = probae.DenoisingAE((D,), 8, hidden=(), activation="sigmoid").to(device)
    pyro.set_rng_seed(3)
    sdae = StackedDenoisingAE((D,), layers=(8,)).to(device)
    (layer,) = sdae.layers

    def assert_same():
        assert dae.state_dict().keys() == layer.state_dict().keys()
        for key, value in dae.state_dict().items():
            assert torch.equal(value, layer.state_dict()[key]), key

    assert_same()
    greedy = sdae.pretrain(x, epochs_per_layer=2, batch_size=16, seed=5, progress=False)
    alone = probae.fit(dae, x, epochs=2, batch_size=16, seed=5, progress=False)
    assert greedy[0].train_loss == alone.train_loss
    assert_same()
    # and trained as a whole, the one-layer stack is the same denoising autoencoder
    whole = probae.fit(sdae, x, epochs=2, batch_size=16, seed=6, progress=False)
    alone = probae.fit(dae, x, epochs=2, batch_size=16, seed=6, progress=False)
    assert whole.train_loss == alone.train_loss
    assert_same()


def _continuous_bernoulli_mean(logits):
    lam = torch.sigmoid(logits)
    return lam / (2 * lam - 1) + 1 / (2 * torch.atanh(1 - 2 * lam))


def test_the_end_to_end_objective_is_the_deep_denoising_loss_by_hand(device):
    """-L(x) = -log N(x; G(F(x~)), I), x~ a masked copy of x, F the stacked sigmoid
    encoders and G the decoders, each upper layer's continuous-Bernoulli mean between."""
    x = _points(device, n=12)
    sdae = StackedDenoisingAE(
        (D,),
        layers=(16, 8, 4),
        corruption=corruption.MaskingNoise(0.5),
        code_likelihood=likelihoods.ContinuousBernoulli(),
    ).to(device)
    pyro.set_rng_seed(11)
    loss = Trace_ELBO().differentiable_loss(sdae.model, sdae.guide, x)
    pyro.set_rng_seed(11)
    x_tilde = sdae.corruption(x)  # the guide's only random draw
    assert ((x_tilde == 0).sum(-1) == D // 2).all()

    def linear(module, h):
        return h @ module.weight.double().T + module.bias.double()

    h = x_tilde.double()
    for layer in sdae.layers:
        h = torch.sigmoid(linear(layer.encoder.net[0], h))
    for k in (2, 1):
        h = _continuous_bernoulli_mean(linear(sdae.layers[k].decoder.net[0], h))
    out = linear(sdae.layers[0].decoder.net[0], h)
    by_hand = (0.5 * (x.double() - out).pow(2) + 0.5 * math.log(2 * math.pi)).sum()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)

    # end to end, the gradient reaches the bottom layer
    loss.backward()
    assert sdae.layers[0].encoder.first_layer.weight.grad.abs().sum() > 0


def test_save_and_load_round_trip(tmp_path, device):
    x = _points(device, n=30)
    sdae = StackedDenoisingAE(
        (D,),
        layers=(12, 6),
        corruption=[corruption.GaussianNoise(0.2), corruption.MaskingNoise(0.1)],
        likelihood=likelihoods.Gaussian(scale=0.5, learn_scale=True),
        code_likelihood=likelihoods.Gaussian(),
        activation="tanh",
    ).to(device)
    sdae.pretrain(x, epochs_per_layer=1, batch_size=10, seed=0, progress=False)
    probae.fit(sdae, x, epochs=1, batch_size=10, seed=0, progress=False)
    probae.save(sdae, tmp_path / "sdae")
    loaded = probae.load(tmp_path / "sdae", device=device)
    assert type(loaded) is StackedDenoisingAE and loaded.widths == (12, 6)
    assert loaded.config == sdae.config
    assert loaded.state_dict().keys() == sdae.state_dict().keys()
    for key, value in sdae.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    sdae.eval()
    assert torch.equal(loaded.encode(x), sdae.encode(x))
    assert torch.equal(loaded.reconstruct(x), sdae.reconstruct(x))
    # each weight is stored once, under its layer; the learned scale is the first layer's
    assert loaded.likelihood is loaded.layers[0].likelihood
    assert not any(k.startswith(("encoder.", "decoder.")) for k in sdae.state_dict())


def test_the_greedy_phase_resumes_where_it_stopped(tmp_path, device):
    x = _points(device, n=24)

    def stack():
        pyro.set_rng_seed(2)
        return StackedDenoisingAE((D,), layers=(10, 5)).to(device)

    options = {"batch_size": 8, "seed": 4, "progress": False}
    whole = stack()
    expected = whole.pretrain(x, epochs_per_layer=2, checkpoint_dir=tmp_path / "a", **options)
    # stopped after the first epoch of the second layer
    stack().pretrain(x, epochs_per_layer=(2, 1), checkpoint_dir=tmp_path / "b", **options)
    resumed = stack()
    got = resumed.pretrain(
        x, epochs_per_layer=2, checkpoint_dir=tmp_path / "b", resume=True, **options
    )
    assert [h.train_loss for h in got] == [h.train_loss for h in expected]
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    # a finished greedy phase is not trained again: the checkpoints are refused without resume
    with pytest.raises(FileExistsError, match="resume=True"):
        stack().pretrain(x, epochs_per_layer=2, checkpoint_dir=tmp_path / "b", **options)


@pytest.mark.parametrize(
    "build, error, words",
    [
        (lambda: StackedDenoisingAE((D,), layers=()), ValueError, "layers must name"),
        (lambda: StackedDenoisingAE((D,), layers="500"), TypeError, "layers"),
        (lambda: StackedDenoisingAE((D,), layers=(8, 0)), ValueError, "layers"),
        (
            lambda: StackedDenoisingAE((D,), layers=(8, 4), corruption=[corruption.MaskingNoise()]),
            ValueError,
            "one per layer",
        ),
        (
            lambda: StackedDenoisingAE((D,), layers=(8,), code_likelihood="gaussian"),
            TypeError,
            "code_likelihood",
        ),
    ],
)
def test_bad_options_are_named(build, error, words):
    with pytest.raises(error, match=words):
        build()


def test_bad_pretraining_arguments_are_named(device):
    sdae = StackedDenoisingAE((D,), layers=(8, 4)).to(device)
    x = _points(device, n=8)
    with pytest.raises(ValueError, match="epochs_per_layer"):
        sdae.pretrain(x, epochs_per_layer=0)
    with pytest.raises(ValueError, match="epochs_per_layer"):
        sdae.pretrain(x, epochs_per_layer=(1, 2, 3))
    with pytest.raises(ValueError, match="checkpoint_dir"):
        sdae.pretrain(x, resume=True)
    with pytest.raises(ValueError, match="layer must be in"):
        sdae.layer_input(x, 2)


def test_command_line_trains_the_stack_greedily_then_whole(tmp_path, device):
    run = tmp_path / "run"
    status = cli.main(
        ["train", "--model", "stacked-dae", "--layers", "16,8", "--epochs-per-layer", "1"]
        + ["--epochs", "1", "--run-dir", str(run), "--no-progress", "--device", str(device)]
    )
    assert status == 0
    config = json.loads((run / "config.json").read_text())
    assert config["layers"] == [16, 8] and config["epochs_per_layer"] == 1
    for k in (1, 2):  # one checkpoint per greedy layer, each a DenoisingAE
        layer = probae.load(run / "pretrain" / f"layer-{k}")
        assert type(layer) is probae.DenoisingAE and layer.z_dim == (16, 8)[k - 1]
    model = probae.load(run, device=device)
    assert type(model) is StackedDenoisingAE and model.widths == (16, 8)
    assert (run / "filters.png").is_file()  # the first layer's filters

    # stopped after the first layer: --resume continues the greedy phase, to the same weights
    again = tmp_path / "again"
    shutil.copytree(run, again)
    (again / "checkpoint.pt").unlink()
    shutil.rmtree(again / "pretrain" / "layer-2")
    resume = ["train", "--run-dir", str(again), "--resume", "--no-progress"]
    assert cli.main([*resume, "--device", str(device)]) == 0
    resumed = probae.load(again, device=device)
    for key, value in model.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert cli.main(["train", "--model", "stacked-dae", "--z-dim", "3", "--run-dir", str(run)]) == 2


def test_the_filters_picture_shows_the_first_layer(tmp_path, device):
    sdae = StackedDenoisingAE((D,), layers=(9, 4)).to(device)
    weights = viz.first_layer_weights(sdae)
    assert torch.equal(weights, sdae.layers[0].encoder.first_layer.weight)
    assert weights.shape == (9, D)
    assert viz.filters(sdae, tmp_path / "filters.png").is_file()
