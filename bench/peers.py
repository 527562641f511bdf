"""probae side by side with its peers on the IWAE paper's MNIST net, in one run.

Every system trains the same network from the same initial weights: the
one-stochastic-layer net of Burda et al. (2016), encoder 784-200-200-(2x50) and
decoder 50-200-200-784 with tanh units, Bernoulli pixels, a standard normal prior,
batches of 100 dynamically binarized images, Adam with learning rate 1e-3:

- **hand-written**: a plain PyTorch loop, the single-sample ELBO written out, as a
  user writes it (torch's BCE and default Adam) and again with the kernels probae's
  fit picks (its fused Bernoulli log-density, Adam's fused kernel): the difference
  between probae and the second row is what probae and Pyro add per step;
- **Pyro example style**: a ``DataLoader`` and ``SVI`` with ``Trace_ELBO``, as in
  Pyro's VAE example;
- **pythae**: its ``TrainingPipeline``, when pythae is installed (it is optional);
- **probae**: :func:`probae.fit` with ``loss="elbo"`` and ``loss="meanfield"``.

The systems run in turn, ``--repeats`` times over, each from the same initial
weights; each system's median seconds per epoch and its ratio to the hand-written
loop are printed,
then the test NLL of every trained net from one shared evaluator (the IWAE estimate
with K samples, written out in PyTorch), and finally the cost of
:func:`probae.evaluate.log_likelihood` against that hand-written vectorized evaluator,
with and without PSIS. Times are CPU seconds of this process (the figures are then
comparable on a shared machine) and wall seconds.

    python bench/peers.py                               # 10000 images, 2 epochs
    python bench/peers.py --train-size 60000 --epochs 3 --threads 2
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

import probae
from probae import VAE, data, evaluate, likelihoods, nets
from probae.train import default_optimizer

ROOT = Path(__file__).resolve().parents[1]
LOG_2PI = math.log(2 * math.pi)
X_DIM, Z_DIM, HIDDEN = 784, 50, (200, 200)


def iwae_nets(seed: int = 0):
    """Encoder and decoder of the IWAE paper's one-layer net (tanh units)."""
    torch.manual_seed(seed)
    encoder = nets.MLPEncoder((X_DIM,), Z_DIM, HIDDEN)
    encoder.net = nets.MLP(X_DIM, HIDDEN, 2 * Z_DIM, activation=nn.Tanh)
    decoder = nets.MLPDecoder(Z_DIM, (X_DIM,), HIDDEN)
    decoder.net = nets.MLP(Z_DIM, HIDDEN, X_DIM, activation=nn.Tanh)
    return encoder, decoder


def iwae_vae(encoder=None, decoder=None, seed: int = 0) -> VAE:
    """probae's VAE on the IWAE paper's net: the nets given, or those :func:`iwae_nets`
    draws from ``seed``. Trained with ``loss="elbo"`` it is the paper's VAE (k = 1), with
    ``loss="iwae"`` its IWAE."""
    if encoder is None and decoder is None:
        encoder, decoder = iwae_nets(seed)
    return VAE((X_DIM,), Z_DIM, encoder=encoder, decoder=decoder)


def log_weights(encoder, decoder, x, num_samples: int) -> torch.Tensor:
    """``log p(x, z) - log q(z|x)`` for ``num_samples`` draws per point, ``(K, N)``."""
    loc, scale = encoder(x)
    eps = torch.randn(num_samples, *loc.shape, device=x.device, dtype=loc.dtype)
    return _log_weights(decoder, x, loc, scale, eps)


def log_weights_at(encoder, decoder, x, eps) -> torch.Tensor:
    """The log-weights at the draws ``z = mu(x) + sigma(x) * eps``, eps of shape (K, N, 50)."""
    return _log_weights(decoder, x, *encoder(x), eps)


def _log_weights(decoder, x, loc, scale, eps):
    z = loc + scale * eps
    logits = decoder(z)
    log_px = -binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    log_pz = -0.5 * (z.pow(2) + LOG_2PI)
    log_qz = -0.5 * (eps.pow(2) + LOG_2PI) - scale.log()
    return log_px.sum(-1) + (log_pz - log_qz).sum(-1)


@torch.no_grad()
def shared_nll(encoder, decoder, x, num_samples=1000, chunk_size=500, batch_size=100):
    """The hand-written vectorized IWAE evaluator: mean of -log p(x) over x, in nats."""
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        chunks = [
            log_weights(encoder, decoder, xb, min(chunk_size, num_samples - s))
            for s in range(0, num_samples, chunk_size)
        ]
        total += (torch.cat(chunks).logsumexp(0) - math.log(num_samples)).sum().item()
    return -total / x.shape[0]


# -- the systems ------------------------------------------------------------------------


def train_hand(encoder, decoder, x, epochs, batch_size, lr, kernels="torch"):
    """The loop as a user writes it (``kernels="torch"``: the BCE of
    ``binary_cross_entropy_with_logits``, torch's default Adam), or with the kernels
    probae's fit picks (``kernels="probae"``: its fused Bernoulli log-density and
    Adam's fused kernel), which splits probae's difference into kernels and overhead."""
    params = [*encoder.parameters(), *decoder.parameters()]
    if kernels == "probae":
        optim = default_optimizer(params, lr=lr)
        weights = lambda xb: _log_weights_fused(encoder, decoder, xb)  # noqa: E731
    else:
        optim = torch.optim.Adam(params, lr=lr)
        weights = lambda xb: log_weights(encoder, decoder, xb, 1)  # noqa: E731
    seconds = []
    for _ in range(epochs):
        began = _clock()
        for rows in torch.randperm(x.shape[0], device=x.device).split(batch_size):
            xb = torch.bernoulli(x[rows])
            loss = -weights(xb).sum()
            if not math.isfinite(loss.item()):  # the same one host read per step as probae
                raise FloatingPointError("non-finite loss")
            optim.zero_grad(set_to_none=True)
            (loss / xb.shape[0]).backward()
            optim.step()
        seconds.append(_clock() - began)
    return seconds


def _log_weights_fused(encoder, decoder, x):
    loc, scale = encoder(x)
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    log_px = likelihoods.BernoulliLogits(logits=decoder(z), validate_args=False).log_prob(x)
    log_pz = -0.5 * (z.pow(2) + LOG_2PI)
    log_qz = -0.5 * (eps.pow(2) + LOG_2PI) - scale.log()
    return log_px.sum(-1) + (log_pz - log_qz).sum(-1)


def train_pyro_example(encoder, decoder, x, epochs, batch_size, lr):
    """Pyro's VAE example: pyro.module, SVI with Trace_ELBO, a DataLoader."""
    from pyro.infer import SVI, Trace_ELBO
    from torch.utils.data import DataLoader, TensorDataset

    pyro.clear_param_store()

    def model(xb):
        pyro.module("decoder", decoder)
        with pyro.plate("data", xb.shape[0]):
            loc = xb.new_zeros(xb.shape[0], Z_DIM)
            z = pyro.sample("latent", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=xb)

    def guide(xb):
        pyro.module("encoder", encoder)
        with pyro.plate("data", xb.shape[0]):
            loc, scale = encoder(xb)
            pyro.sample("latent", dist.Normal(loc, scale).to_event(1))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss=Trace_ELBO())
    loader = DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=True)
    seconds = []
    for _ in range(epochs):
        began = _clock()
        for (xb,) in loader:
            svi.step(torch.bernoulli(xb))
        seconds.append(_clock() - began)
    return seconds


def train_probae(encoder, decoder, x, epochs, batch_size, lr, loss="elbo", compile=False):
    vae = iwae_vae(encoder, decoder)
    clock = _EpochClock()
    began, wall = _clock(), time.perf_counter()
    probae.fit(
        vae,
        x,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        loss=loss,
        binarize="dynamic",
        progress=False,
        callbacks=[clock],
        **({"compile": compile} if compile else {}),
    )
    if compile:  # the steady epochs; the compilation is reported on its own
        COMPILE_SECONDS.append(clock.first_wall - wall)
        return clock.seconds[1:]
    # fit's one-time checks of the data and the pair are counted in, spread over epochs
    return [(_clock() - began) / epochs] * epochs


#: wall seconds from fit's start to the end of its first epoch, with compilation (wall:
#: Inductor compiles in worker processes this process's CPU clock does not see)
COMPILE_SECONDS = []


class _EpochClock(probae.callbacks.Callback):
    def __init__(self):
        self.starts, self.ends = [], []

    def on_epoch_begin(self, state):
        self.starts.append(_clock())

    def on_epoch_end(self, state):
        self.ends.append(_clock())
        if len(self.ends) == 1:
            self.first_wall = time.perf_counter()

    @property
    def seconds(self):
        return [end - start for start, end in zip(self.starts, self.ends, strict=True)]


def train_hand_compiled(encoder, decoder, x, epochs, batch_size, lr):
    """The hand-written loop with probae's kernels and both networks compiled as
    ``fit(compile=True)`` compiles them (whole graphs, Inductor); the first epoch,
    which compiles, is left out of the timing."""
    began = time.perf_counter()
    encoder.compile(fullgraph=True)
    decoder.compile(fullgraph=True)
    try:
        seconds = train_hand(encoder, decoder, x, epochs, batch_size, lr, kernels="probae")
    finally:
        encoder._compiled_call_impl = decoder._compiled_call_impl = None
    COMPILE_SECONDS.append(time.perf_counter() - began - sum(seconds[1:]))
    return seconds[1:]


def train_pythae(encoder, decoder, x, epochs, batch_size, lr):
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    class Enc(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.inner = encoder

        def forward(self, xb):
            loc, scale = self.inner(xb.reshape(xb.shape[0], -1))
            return ModelOutput(embedding=loc, log_covariance=2 * scale.log())

    class Dec(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.inner = decoder

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.inner(z)))

    config = VAEConfig(input_dim=(X_DIM,), latent_dim=Z_DIM, reconstruction_loss="bce")
    model = PythaeVAE(config, encoder=Enc(), decoder=Dec())
    trainer = BaseTrainerConfig(
        num_epochs=epochs,
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        output_dir=str(Path("/tmp") / "pythae_bench"),
        no_cuda=True,
    )
    began = _clock()
    TrainingPipeline(training_config=trainer, model=model)(train_data=torch.bernoulli(x))
    return [(_clock() - began) / epochs] * epochs


def _clock():
    return time.process_time()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=1000, help="K of the evaluator")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per system")
    parser.add_argument("--skip-training", action="store_true", help="log_likelihood only")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add fit(compile=True) and the hand-written loop with compiled networks "
        "(needs --epochs 2 or more: the first epoch compiles and is timed apart)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=0,
        help="instead of the timings: train the hand-written loop and probae.fit from the "
        "same initial weights under this many random seeds each and compare their test NLL",
    )
    parser.add_argument("--first-seed", type=int, default=1, help="of --seeds")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # briefly trained nets have heavy-tailed weights; the k-hat warning is not the point here
    warnings.filterwarnings("ignore", message="For .* the importance weights are too heavy")
    train = data.load("mnist", "train", root=args.root).x[: args.train_size]
    test = data.binarize(data.load("mnist", "test", root=args.root).x[: args.test_size], seed=0)
    batch_size, lr = 100, 1e-3
    if args.seeds:
        return nll_over_seeds(train, test, args.seeds, args.epochs, batch_size, lr, args)
    systems = {
        "hand-written PyTorch loop": train_hand,
        "hand-written, probae's kernels": lambda *a: train_hand(*a, kernels="probae"),
        "Pyro example style (DataLoader + SVI)": train_pyro_example,
        "probae.fit, loss='elbo'": train_probae,
        "probae.fit, loss='meanfield'": lambda *a: train_probae(*a, loss="meanfield"),
    }
    if args.compile:
        systems["hand-written, probae's kernels, compiled"] = train_hand_compiled
        systems["probae.fit, loss='elbo', compile=True"] = lambda *a: train_probae(*a, compile=True)
    try:
        import pythae  # noqa: F401

        systems["pythae TrainingPipeline"] = train_pythae
    except ImportError:
        print("pythae is not installed: skipped (pip install pythae to compare)")
    print(
        f"MNIST {args.train_size} images, net 784-200-200-50 tanh, batch 100, "
        f"{args.epochs} epochs, {torch.get_num_threads()} thread(s); CPU seconds per epoch, "
        f"median of {args.repeats} interleaved runs"
    )
    trained, seconds = {}, {name: [] for name in systems}
    if not args.skip_training:
        for repeat in range(args.repeats):
            for name, train_fn in systems.items():
                encoder, decoder = iwae_nets(0)
                pyro.set_rng_seed(1)
                seconds[name] += train_fn(encoder, decoder, train, args.epochs, batch_size, lr)
                if repeat == 0:
                    trained[name] = (encoder, decoder)
        print(
            f"{'system':44s} {'s/epoch':>8s} {'ratio':>6s} "
            f"{'NLL (K=' + str(args.num_samples) + ')':>12s}"
        )
        base = statistics.median(seconds["hand-written PyTorch loop"])
        for name in systems:
            per_epoch = statistics.median(seconds[name])
            pyro.set_rng_seed(2)
            nll = shared_nll(*trained[name], test, args.num_samples)
            print(f"{name:44s} {per_epoch:8.2f} {per_epoch / base:6.2f} {nll:12.2f}")
        if COMPILE_SECONDS:
            print(
                "compiled rows: steady epochs only; the first epoch with its compilation "
                f"took {min(COMPILE_SECONDS):.1f} to {max(COMPILE_SECONDS):.1f} wall s"
            )
    evaluator_cost(
        *(trained.get("probae.fit, loss='elbo'") or iwae_nets(0)), test, args.num_samples
    )


def nll_over_seeds(train, test, seeds, epochs, batch_size, lr, args):
    """Test NLL of the hand-written loop and of probae.fit after the same epochs, from
    the same initial weights, under ``seeds`` random streams (shuffling, binarization,
    the reparameterization draws): is an equal-epoch gap larger than the spread of one
    system over seeds?"""
    systems = {
        "hand-written PyTorch loop": train_hand,
        "hand-written, probae's kernels": lambda *a: train_hand(*a, kernels="probae"),
        "probae.fit, loss='elbo'": train_probae,
    }
    nlls = {name: [] for name in systems}
    print(
        f"MNIST {train.shape[0]} images, {epochs} epochs, test NLL (K={args.num_samples}) "
        f"on {test.shape[0]} images, initial weights fixed, "
        f"seeds {args.first_seed}..{args.first_seed + seeds - 1}"
    )
    for seed in range(args.first_seed, args.first_seed + seeds):
        for name, train_fn in systems.items():
            encoder, decoder = iwae_nets(0)
            pyro.set_rng_seed(seed)
            train_fn(encoder, decoder, train, epochs, batch_size, lr)
            pyro.set_rng_seed(1000)  # the same evaluator draws for every net
            nlls[name].append(shared_nll(encoder, decoder, test, args.num_samples))
        print(f"seed {seed}: " + ", ".join(f"{n} {v[-1]:.2f}" for n, v in nlls.items()))
    base = nlls["hand-written PyTorch loop"]
    for name, values in nlls.items():
        diff = [v - b for v, b in zip(values, base, strict=True)]
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        dsd = statistics.stdev(diff) if len(diff) > 1 else float("nan")
        print(
            f"{name:44s} NLL {statistics.mean(values):8.2f} (sd {sd:.2f}); minus the hand "
            f"loop {statistics.mean(diff):+.2f} (sd {dsd:.2f})"
        )
    return nlls


def evaluator_cost(encoder, decoder, test, num_samples, repeats=3):
    """ms per test image of probae's log_likelihood against the hand-written evaluator."""
    vae = iwae_vae(encoder, decoder)
    chunk, batch = 500, 100

    def timed(fn):
        best = math.inf
        for _ in range(repeats):
            began = _clock()
            fn()
            best = min(best, _clock() - began)
        return 1000 * best / test.shape[0]

    hand = timed(lambda: shared_nll(encoder, decoder, test, num_samples, chunk, batch))
    plain = timed(
        lambda: evaluate.log_likelihood(
            vae, test, num_samples=num_samples, chunk_size=chunk, batch_size=batch, psis=False
        )
    )
    with_psis = timed(
        lambda: evaluate.log_likelihood(
            vae, test, num_samples=num_samples, chunk_size=chunk, batch_size=batch, psis=True
        )
    )
    print(f"\nIWAE estimate, K={num_samples}, ms per test image (CPU)")
    print(f"{'hand-written vectorized evaluator':40s} {hand:8.2f} {1.0:6.2f}")
    print(f"{'probae log_likelihood, psis=False':40s} {plain:8.2f} {plain / hand:6.2f}")
    print(f"{'probae log_likelihood, psis=True':40s} {with_psis:8.2f} {with_psis / hand:6.2f}")
    print(f"PSIS adds {100 * (with_psis / plain - 1):.1f}% to log_likelihood")


if __name__ == "__main__":
    main()
