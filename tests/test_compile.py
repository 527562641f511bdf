"""fit(compile=...): the pair's networks compiled for the fit give the eager run's losses
and parameters (to float rounding), the module comes back eager with its own state_dict
keys, and a network that cannot compile exactly is refused in one sentence."""

import os

import pytest
import torch
from torch import nn

import probae
from probae import VAE, likelihoods, nets, priors
from probae.train import compiled as _compile

# the emulated CUDA device is a tensor subclass that TorchDynamo does not trace
EMULATED = os.environ.get("FAKECUDA") == "1"
traced = pytest.mark.skipif(EMULATED, reason="torch.compile does not trace the emulator")


def _vae(device, seed=0):
    torch.manual_seed(seed)
    return VAE(
        (12,), 3, prior=priors.StandardNormal(3), likelihood=likelihoods.Bernoulli(), hidden=(16,)
    ).to(device)


def _data(device):
    torch.manual_seed(1)
    return torch.rand(96, 12, device=device).bernoulli()


def _fit(vae, x, **options):
    return probae.fit(vae, x, epochs=2, batch_size=32, seed=3, progress=False, threads=1, **options)


@traced
def test_the_compiled_step_gives_the_eager_losses_and_parameters(device):
    x = _data(device)
    eager, compiled = _vae(device), _vae(device)
    h_eager = _fit(eager, x)
    h_compiled = _fit(compiled, x, compile="aot_eager")
    assert h_compiled.as_dict()["train_loss"] == pytest.approx(
        h_eager.as_dict()["train_loss"], rel=1e-6
    )
    for (name, a), (_, b) in zip(
        eager.named_parameters(), compiled.named_parameters(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6, msg=name)
    # the module comes back eager, with its own state_dict keys
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    assert all(net._compiled_call_impl is None for _, net in _compile.networks(compiled))


@traced
@pytest.mark.slow
def test_inductor_agrees_with_the_eager_step_to_rounding(device):
    x = _data(device)
    eager, compiled = _vae(device), _vae(device)
    h_eager, h_compiled = _fit(eager, x), _fit(compiled, x, compile=True)
    assert h_compiled.as_dict()["train_loss"] == pytest.approx(
        h_eager.as_dict()["train_loss"], rel=1e-5
    )
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not EMULATED, reason="a device TorchDynamo cannot trace: the CUDA emulator")
def test_a_device_torch_compile_cannot_trace_is_refused_in_words(device):
    vae = _vae(device)
    with pytest.raises(_compile.CompileError, match="found no compiled frames"):
        _fit(vae, _data(device), compile="aot_eager")
    assert vae.encoder._compiled_call_impl is None


def test_the_networks_compiled_are_the_encoder_and_the_decoder():
    names = [name for name, _ in _compile.networks(_vae("cpu"))]
    assert names == ["encoder", "decoder"]
    frozen = _vae("cpu")
    frozen.decoder.requires_grad_(False)  # nothing to train: left as it is
    assert [name for name, _ in _compile.networks(frozen)] == ["encoder"]


class _DropoutEncoder(nets.MLPEncoder):
    def __init__(self):
        super().__init__((12,), 3, hidden=(16,))
        self.drop = nn.Dropout(0.5)

    def forward(self, x, c=None):
        loc, scale = super().forward(self.drop(x), c)
        return loc, scale


class _BreakingDecoder(nets.MLPDecoder):
    def forward(self, z, c=None):
        if z.sum().item() > 1e30:  # a host read: no single graph
            return z
        return super().forward(z, c)


def _off_by_a_little(graph, example_inputs):
    """A backend whose graphs compute something else: every output moved by 1e-2."""

    def run(*args):
        out = graph(*args)
        return [o + 1e-2 if torch.is_tensor(o) and o.is_floating_point() else o for o in out]

    return run


@traced
def test_a_network_compiled_to_other_numbers_is_refused_before_any_step(device):
    vae = _vae(device)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    with pytest.raises(_compile.CompileError, match="more than float rounding apart"):
        _fit(vae, _data(device), compile={"backend": _off_by_a_little})
    for key, value in vae.state_dict().items():  # refused before any step
        assert torch.equal(value, before[key])
    assert vae.encoder._compiled_call_impl is None


@traced
@pytest.mark.slow
def test_dropout_compiled_by_inductor_is_refused(device):
    # Inductor draws dropout's mask from its own generator: not the eager draws
    vae = VAE((12,), 3, encoder=_DropoutEncoder()).to(device)
    with pytest.raises(_compile.CompileError, match="dropout, cannot compile exactly"):
        _fit(vae, _data(device), compile=True)


@traced
def test_a_network_that_breaks_the_graph_is_refused(device):
    vae = VAE((12,), 3, decoder=_BreakingDecoder(3, (12,), hidden=(16,))).to(device)
    with pytest.raises(_compile.CompileError, match=r"\['encoder', 'decoder'\] do not compile"):
        _fit(vae, _data(device), compile="aot_eager")
    assert vae.decoder._compiled_call_impl is None


def test_bad_compile_options_name_the_argument():
    vae, x = _vae("cpu"), torch.rand(8, 12).bernoulli()
    with pytest.raises(TypeError, match="compile must be"):
        _fit(vae, x, compile=3)
    with pytest.raises(ValueError, match=r"unknown torch.compile options \['fullgraph'\]"):
        _fit(vae, x, compile={"fullgraph": False})


def test_a_pair_without_networks_is_refused():
    import pyro
    import pyro.distributions as dist

    def model(x):
        loc = pyro.param("loc", torch.zeros(()))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        pass

    pyro.clear_param_store()
    with pytest.raises(_compile.CompileError, match="submodules of one torch.nn.Module"):
        probae.fit((model, guide), torch.randn(16), epochs=1, batch_size=8, compile=True)

    class Shift(torch.nn.Module):  # a module whose only parameter is its own
        def __init__(self):
            super().__init__()
            self.loc = torch.nn.Parameter(torch.zeros(()))

        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Normal(self.loc, 1.0), obs=x)

        def guide(self, x):
            pass

    with pytest.raises(_compile.CompileError, match="found no network to compile"):
        probae.fit(Shift(), torch.randn(16), epochs=1, batch_size=8, compile=True)


@traced
def test_a_process_that_fits_many_architectures_keeps_compiling():
    # torch holds 8 versions of a code object by default; the ninth network is not refused
    x = torch.rand(40, 12).bernoulli()
    for width in range(4, 4 + 2 * 10, 2):
        vae = VAE((12,), 3, hidden=(width,))
        probae.fit(vae, x, epochs=1, batch_size=20, progress=False, compile="aot_eager", threads=1)


@traced
@pytest.mark.slow
def test_the_command_line_trains_compiled_networks_to_the_eager_numbers(tmp_path, capsys):
    import csv

    from probae import cli

    tiny = ["--z-dim", "2", "--hidden", "16", "--epochs", "2", "--no-progress", "--seed", "3"]
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        assert cli.main(["train", "--run-dir", str(tmp_path / name), *tiny, *extra]) == 0
    losses = {}
    for name in ("eager", "compiled"):
        with open(tmp_path / name / "history.csv") as f:
            losses[name] = [float(row["train_loss"]) for row in csv.DictReader(f)]
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-5)
