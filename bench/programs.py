"""Pyro programs as written for ``SVI.step``, trained by :func:`probae.fit` and by a plain
``SVI.step`` loop on the same batches: time per step, and the parameters each reaches.

Two programs, written as Pyro users write them (``pyro.module``, their own plate
names and batch arguments, no probae names):

- ``sequences``: a small deep Markov model: a transition and an emission network over
  ``pyro.markov`` steps, masked past each sequence's end, batches of
  ``(sequences, mask, lengths)``, plate ``"z_minibatch"``;
- ``vae``: Pyro's MNIST-style VAE (784-400-50) on the built-in digits, plate
  ``"data"``, batches of ``(x, y)`` from a DataLoader whose labels ``model(x)`` drops.

Both are trained with ``pyro.optim.ClippedAdam`` (weight decay, clipping): ``fit`` then
steps as SVI does (``reduction="sum"``), so both reach the same parameters, which the
script checks. Run::

    python bench/programs.py --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import time

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch import nn

import probae
from probae import data


class Sequences(nn.Module):
    def __init__(self, x_dim=8, z_dim=4, hidden=32):
        super().__init__()
        self.z_dim = z_dim
        self.transition = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, z_dim)
        )
        self.emission = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))
        self.encoder = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim)
        )

    def model(self, sequences, mask, lengths):
        pyro.module("transition", self.transition)
        pyro.module("emission", self.emission)
        with pyro.plate("z_minibatch", sequences.shape[0]):
            z = sequences.new_zeros(sequences.shape[0], self.z_dim)
            for t in pyro.markov(range(sequences.shape[1])):
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", dist.Normal(self.transition(z), 1.0).to_event(1))
                    pyro.sample(
                        f"x_{t}",
                        dist.Normal(self.emission(z), 0.5).to_event(1),
                        obs=sequences[:, t],
                    )

    def guide(self, sequences, mask, lengths):
        pyro.module("encoder", self.encoder)
        with pyro.plate("z_minibatch", sequences.shape[0]):
            for t in pyro.markov(range(sequences.shape[1])):
                loc, raw = self.encoder(sequences[:, t]).chunk(2, -1)
                with poutine.mask(mask=mask[:, t]):
                    scale = nn.functional.softplus(raw) + 1e-3
                    pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1))


class VAE(nn.Module):
    """The VAE of Pyro's ``examples/vae/vae.py`` (its networks, its plate)."""

    def __init__(self, x_dim=64, z_dim=50, hidden=400):
        super().__init__()
        self.z_dim = z_dim
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, x_dim), nn.Sigmoid()
        )
        self.encoder = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim)
        )

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample(
                "obs", dist.Bernoulli(self.decoder(z), validate_args=False).to_event(1), obs=x
            )

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("latent", dist.Normal(loc, torch.exp(raw)).to_event(1))


def sequence_batches(n=512, steps=12, batch=64):
    generator = torch.Generator().manual_seed(0)
    sequences = torch.randn(n, steps, 8, generator=generator)
    lengths = torch.randint(3, steps + 1, (n,), generator=generator)
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    return [
        (sequences[i : i + batch], mask[i : i + batch], lengths[i : i + batch])
        for i in range(0, n, batch)
    ]


def digit_batches(batch=100):
    train = data.binarize(data.load("digits", split="train"), seed=0)
    dataset = torch.utils.data.TensorDataset(train.x, train.y)
    return list(torch.utils.data.DataLoader(dataset, batch_size=batch))


def optimizer():
    return pyro.optim.ClippedAdam({"lr": 1e-3, "clip_norm": 10.0, "weight_decay": 1e-4})


def run(name, net, batches, epochs):
    initial = copy.deepcopy(net)
    steps = epochs * len(batches)

    pyro.clear_param_store()
    began = time.perf_counter()
    probae.fit(
        (net.model, net.guide),
        batches,
        epochs=epochs,
        optimizer=optimizer(),
        seed=0,
        progress=False,
    )
    fit_seconds = time.perf_counter() - began
    fitted = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    pyro.clear_param_store()
    twin = copy.deepcopy(initial)
    pyro.set_rng_seed(0)
    svi = SVI(twin.model, twin.guide, optimizer(), Trace_ELBO())
    began = time.perf_counter()
    for _ in range(epochs):
        for batch in batches:
            args = batch if name == "sequences" else batch[:1]  # `for x, _ in loader`
            svi.step(*args)
    svi_seconds = time.perf_counter() - began
    stepped = {k: v.detach() for k, v in pyro.get_param_store().items()}
    gap = max((fitted[k] - stepped[k]).abs().max().item() for k in stepped)
    return {
        "program": name,
        "fit ms/step": 1e3 * fit_seconds / steps,
        "SVI ms/step": 1e3 * svi_seconds / steps,
        "ratio": fit_seconds / svi_seconds,
        "max |param difference|": gap,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # the first PyTorch optimizer imports torch._dynamo (seconds): not part of either loop
    pyro.optim.ClippedAdam({"lr": 1e-3})([torch.zeros(1, requires_grad=True)])
    torch.manual_seed(0)
    rows = [
        run("sequences", Sequences(), sequence_batches(), args.epochs),
        run("vae", VAE(), digit_batches(), args.epochs),
    ]
    print("| program | fit ms/step | SVI.step ms/step | fit / SVI | max abs parameter difference |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['program']} | {row['fit ms/step']:.2f} | {row['SVI ms/step']:.2f} | "
            f"{row['ratio']:.2f} | {row['max |param difference|']:.1e} |"
        )


if __name__ == "__main__":
    main()
