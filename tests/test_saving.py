"""Saving and loading: every family, prior, likelihood, network and corruption round-trips
through a folder and a fresh process bit for bit; no pickled code runs on load; a run
directory of the command line and a saved folder load through the same function."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pyro
import pytest
import torch
from torch import nn

import probae
from probae import (
    AE,
    CVAE,
    VAE,
    ConditionalBaseline,
    ContractiveAE,
    DenoisingAE,
    KSparseAE,
    SparseAE,
    cli,
    corruption,
    evaluate,
    likelihoods,
    nets,
    priors,
    saving,
)

ROOT = Path(__file__).resolve().parents[1]
D = 16


def _vamp():
    encoder = nets.make_encoder((D,), 3, (8,))
    return VAE((D,), 3, encoder=encoder, prior=priors.VampPrior(encoder, pseudo_inputs=5))


#: one model per family, prior, likelihood, network and corruption
CASES = {
    "vae": lambda: VAE((D,), 3, hidden=(8,)),
    "vae-normal-prior": lambda: VAE((D,), 3, prior=priors.Normal(3), hidden=(8,)),
    "vae-mixture": lambda: VAE((D,), 3, prior=priors.GaussianMixture(3, components=4), hidden=(8,)),
    "vae-enumerated-mixture": lambda: VAE(
        (D,), 3, prior=priors.GaussianMixture(3, components=4, enumerate=True), hidden=(8,)
    ),
    "vae-laplace-prior": lambda: VAE((D,), 3, prior=priors.Laplace(3, scale=2.0), hidden=(8,)),
    "vae-vamp": _vamp,
    "vae-flow": lambda: VAE((D,), 3, prior=priors.Flow(3, transforms=2), hidden=(8,)),
    "beta-vae": lambda: VAE((D,), 3, beta=4.0, hidden=(8, 8)),
    "vae-continuous-bernoulli": lambda: VAE(
        (D,), 3, likelihood=likelihoods.ContinuousBernoulli(), hidden=(8,)
    ),
    "vae-gaussian-learned": lambda: VAE(
        (D,), 3, likelihood=likelihoods.Gaussian(scale=0.5, learn_scale=True), hidden=(8,)
    ),
    "vae-laplace": lambda: VAE((D,), 3, likelihood=likelihoods.Laplace(scale=0.3), hidden=(8,)),
    "vae-conv": lambda: VAE((1, 28, 28), 3),
    "cvae": lambda: CVAE((D,), (4,), 3, hidden=(8,), prior_hidden=(8,)),
    "conditional-baseline": lambda: ConditionalBaseline((D,), (4,), hidden=(8,)),
    "ae": lambda: AE((D,), 3, hidden=(8,)),
    "ksparse-untied": lambda: KSparseAE((D,), 6, k=2, hidden=(8,), tied=False),
    "denoising-masking": lambda: DenoisingAE((D,), 3, corruption=corruption.MaskingNoise(0.3)),
    "denoising-gaussian": lambda: DenoisingAE((D,), 3, corruption=corruption.GaussianNoise(0.2)),
    "denoising-salt-and-pepper": lambda: DenoisingAE(
        (D,), 3, corruption=corruption.SaltAndPepper(0.1, fixed=False)
    ),
    "sparse-l1": lambda: SparseAE((D,), 3, penalty="l1", weight=0.5),
    "sparse-kl": lambda: SparseAE((D,), 3, penalty="kl", weight=2.0, rho=0.1),
    "ksparse": lambda: KSparseAE((D,), 6, k=2),
    "contractive": lambda: ContractiveAE((D,), 3, weight=0.2),
    "beta-tcvae": lambda: probae.BetaTCVAE((D,), 3, dataset_size=100, hidden=(8,)),
    "factor-vae": lambda: probae.FactorVAE((D,), 3, discriminator_hidden=(8,), hidden=(8,)),
    "dip-vae": lambda: probae.DIPVAE((D,), 3, hidden=(8,)),
    "vq-vae": lambda: probae.VQVAE(
        (D,), codebook_size=5, code_dim=3, channels=(8,), prior_channels=8, prior_layers=2
    ),
    "draw": lambda: probae.DRAW((1, 6, 9), steps=3, read=(4, 4), encoder_size=4, decoder_size=4),
}


def _data(model, n=6):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(n, *model.x_shape, generator=generator)
    if isinstance(getattr(model, "likelihood", None), likelihoods.Bernoulli):
        x = x.round()
    c = None
    if hasattr(model, "c_shape"):
        c = nn.functional.one_hot(torch.arange(n) % 4, 4).float()
    return x, c


def _trained_state(model):
    """Weights moved off their initial values (learned prior parameters included), and a
    code density fitted where the family has one."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    if isinstance(model, probae.models.DeterministicAutoencoder):
        probae.fit_latent_density(model, torch.rand(30, *model.x_shape), components=2)
    if isinstance(model, probae.VQVAE):  # the learned prior over code grids is state too
        probae.fit_code_prior(model, torch.rand(30, *model.x_shape).round(), epochs=1, seed=0)
    return model


def _outputs(model, device) -> dict:
    """What a user computes with a model, each under a fixed seed."""
    model = model.to(device)
    x, c = _data(model)
    x = x.to(device)
    c = None if c is None else c.to(device)
    out = {}
    pyro.set_rng_seed(3)
    if isinstance(model, ConditionalBaseline):
        trace = pyro.poutine.trace(model.model).get_trace(x, c)
        out["log_prob"] = trace.log_prob_sum().detach()
        return out
    out["elbo"] = evaluate.elbo(model, x, c=c, num_particles=2)
    if not isinstance(model, (probae.models.DeterministicAutoencoder, probae.VQVAE)):
        pyro.set_rng_seed(3)
        out["iwae"] = evaluate.log_likelihood(model, x, c=c, num_samples=20, psis=False).values
    pyro.set_rng_seed(3)
    if not getattr(model.prior, "improper", False) or hasattr(model, "latent_density"):
        out["sample"] = model.sample(3, c[:3]) if c is not None else model.sample(3)
    out["reconstruction"] = model.reconstruct(x, c)
    return {k: v.detach().cpu() for k, v in out.items()}


LOADER = """
import sys, torch, pyro
sys.path.insert(0, {tests!r})
import probae
from test_saving import _outputs
torch.set_num_threads(1)  # as the suite runs: the same reduction order in every kernel
device = torch.device({device!r})
results = {{}}
for name in {names!r}:
    model = probae.load({base!r} + "/" + name, device=device)
    results[name] = {{"class": type(model).__name__, **_outputs(model, device)}}
torch.save(results, {out!r})
"""


def test_every_family_round_trips_through_a_fresh_process_bit_for_bit(tmp_path, device):
    expected = {}
    for name, make in CASES.items():
        torch.manual_seed(0)
        model = _trained_state(make())
        probae.save(model, tmp_path / name)
        expected[name] = {"class": type(model).__name__, **_outputs(model, device)}
        config = json.loads((tmp_path / name / "model.json").read_text())
        assert config["model"]["class"] == type(model).__name__
    out = tmp_path / "loaded.pt"
    script = LOADER.format(
        tests=str(ROOT / "tests"),
        device=str(device),
        names=list(CASES),
        base=str(tmp_path),
        out=str(out),
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path)
    loaded = torch.load(out, weights_only=True, map_location="cpu")
    for name, outputs in expected.items():
        assert loaded[name].keys() == outputs.keys(), name
        for key, value in outputs.items():
            if key == "class":
                assert loaded[name][key] == value
            else:
                assert torch.equal(loaded[name][key], value.cpu()), (name, key)


@pytest.mark.parametrize("name", list(CASES))
def test_a_model_reports_the_options_it_was_built_with(name):
    torch.manual_seed(0)
    model = CASES[name]()
    config = json.loads(json.dumps(model.config))  # plain JSON
    torch.manual_seed(0)
    rebuilt = saving.build(config)
    assert type(rebuilt) is type(model)
    assert repr(rebuilt) == repr(model)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_a_shared_encoder_stays_shared_after_loading(tmp_path):
    model = _vamp()
    loaded = probae.load(probae.save(model, tmp_path / "vamp"))
    assert loaded.prior.encoder is loaded.encoder


def test_beta_set_after_construction_is_what_is_saved(tmp_path):
    vae = VAE((D,), 3, hidden=(8,))
    vae.beta = 2.5
    assert probae.load(probae.save(vae, tmp_path / "m")).beta == 2.5


def test_a_loaded_model_is_on_the_device_asked_for_and_a_gpu_checkpoint_loads_on_cpu(
    tmp_path, device
):
    vae = _trained_state(VAE((D,), 3, hidden=(8,))).to(device)
    probae.save(vae, tmp_path / "m")
    on_cpu = probae.load(tmp_path / "m", device="cpu")
    assert all(p.device.type == "cpu" for p in on_cpu.parameters())
    back = probae.load(tmp_path / "m", device=device)
    assert all(p.device == vae.encoder.net[0].weight.device for p in back.parameters())
    for (k, a), b in zip(vae.state_dict().items(), on_cpu.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b), k


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path):
    folder = tmp_path / "evil"
    probae.save(VAE((D,), 3, hidden=(8,)), folder)
    marker = tmp_path / "ran"
    _Payload.marker = marker
    state = torch.load(folder / "model.pt", weights_only=True, map_location="cpu")
    state["module"]["extra"] = _Payload()
    with open(folder / "model.pt", "wb") as handle:
        torch.save(state, handle)
    with pytest.raises(ValueError, match="corrupt or not a probae checkpoint"):
        probae.load(folder)
    assert not marker.exists()


def test_a_cli_run_directory_and_a_saved_folder_load_through_the_same_function(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), "--epochs", "1", "--z-dim", "2", "--hidden", "8"]
    assert cli.main([*argv, "--no-progress", "--threads", "1"]) == 0
    from_run = probae.load(run)
    assert isinstance(from_run, VAE) and from_run.z_dim == 2
    # the run directory records the model's own options beside the command line's
    assert json.loads((run / "model.json").read_text())["model"] == from_run.config
    again = probae.load(probae.save(from_run, tmp_path / "saved"))
    for (k, a), b in zip(from_run.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # a checkpoint of probae 0.1.0 (no configuration inside) loads through config.json
    state = torch.load(run / "checkpoint.pt", weights_only=True, map_location="cpu")
    del state["model"]
    state["format"] = "probae-checkpoint-1"
    torch.save(state, run / "checkpoint.pt")
    old = probae.load(run)
    for (k, a), b in zip(from_run.state_dict().items(), old.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_fit_checkpoint_loads_with_the_models_beta_not_a_warmup_value(tmp_path):
    vae = VAE((D,), 3, beta=2.0, hidden=(8,))
    x = torch.rand(20, D).round()
    probae.fit(
        vae, x, epochs=1, batch_size=10, beta_warmup=5, checkpoint_dir=tmp_path, progress=False
    )
    assert probae.load(tmp_path).beta == 2.0


class MyEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(D, 6)

    def forward(self, x):
        loc, raw = self.net(x).chunk(2, -1)
        return loc, nn.functional.softplus(raw) + 1e-3


def test_user_parts_are_saved_as_weights_and_named_when_they_cannot_be_rebuilt(tmp_path):
    vae = _trained_state(VAE((D,), 3, encoder=MyEncoder(), hidden=(8,)))
    with pytest.warns(UserWarning, match=r"encoder \(.*MyEncoder\)"):
        probae.save(vae, tmp_path / "m")
    with pytest.raises(ValueError, match=r"encoder is a .*MyEncoder.*model=your_model"):
        probae.load(tmp_path / "m")
    mine = probae.load(tmp_path / "m", model=VAE((D,), 3, encoder=MyEncoder(), hidden=(8,)))
    for (k, a), b in zip(vae.state_dict().items(), mine.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="do not fit VAE"):
        probae.load(tmp_path / "m", model=VAE((D,), 4, encoder=MyEncoder(), hidden=(8,)))


@probae.register
class StudentT(priors.Prior):
    """A prior of a user's own, registered so that probae can rebuild it."""

    def __init__(self, z_dim, df=3.0):
        super().__init__(z_dim)
        self.df = df

    def distribution(self):
        zeros = self._zeros()
        return pyro.distributions.StudentT(self.df, zeros, zeros + 1).to_event(1)


def test_a_registered_user_prior_is_rebuilt(tmp_path):
    vae = VAE((D,), 3, prior=StudentT(3, df=5.0), hidden=(8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probae.save(vae, tmp_path / "m")
    loaded = probae.load(tmp_path / "m")
    assert isinstance(loaded.prior, StudentT) and loaded.prior.df == 5.0


def test_missing_and_broken_folders_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        probae.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no saved model"):
        probae.load(tmp_path / "empty")
    probae.save(VAE((D,), 3, hidden=(8,)), tmp_path / "m")
    data = (tmp_path / "m" / "model.pt").read_bytes()
    (tmp_path / "m" / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        probae.load(tmp_path / "m")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        probae.save((lambda x: x, lambda x: x), tmp_path / "pair")
    with pytest.raises(ValueError, match="unknown class"):
        saving.build({"class": "os.system", "options": {}})
