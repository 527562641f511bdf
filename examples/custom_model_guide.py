r"""Your own Pyro model and guide, trained by probae.fit and measured by probae.evaluate.

Nothing here comes from probae's model classes: a VAE for the 8x8 digits is
written from scratch as two Pyro functions,

    model:  z ~ N(mu, diag(sigma^2)),   x | z ~ Bernoulli(logits = decoder(z))
    guide:  z ~ N(encoder_loc(x), diag(encoder_scale(x)^2))

with the networks registered by ``pyro.module`` and the prior's location and
scale learned as ``pyro.param`` sites. ``probae.fit`` finds every parameter
from a parameter trace, as Pyro's SVI does, and ``probae.evaluate`` computes
per-image ELBO and importance-weighted log-likelihood estimates, because the
sites follow probae's names: the plate ``"data"``, the latent ``"z"`` and the
observation ``"x"``.

    python examples/custom_model_guide.py --epochs 100 --out custom_pair
"""

import argparse
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

import probae
from probae import data, evaluate, viz


class Encoder(nn.Module):
    def __init__(self, x_dim, z_dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, x):
        loc, raw_scale = self.net(x).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw_scale) + 1e-4


class Decoder(nn.Module):
    def __init__(self, z_dim, x_dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def forward(self, z):
        return self.net(z)  # Bernoulli logits


def make_pair(x_dim, z_dim=8, hidden=256, device="cpu"):
    """A model/guide pair, with the decoder and the prior to draw pictures afterwards."""
    encoder = Encoder(x_dim, z_dim, hidden).to(device)
    decoder = Decoder(z_dim, x_dim, hidden).to(device)

    def prior(x):
        # Initial values are built from x, so the pair runs on whatever device the data is on.
        loc = pyro.param("prior_loc", lambda: x.new_zeros(z_dim))
        scale = pyro.param(
            "prior_scale", lambda: x.new_ones(z_dim), constraint=constraints.positive
        )
        return dist.Normal(loc, scale).to_event(1)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior(x))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide, decoder, prior


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (default: 100)")
    parser.add_argument("--out", default="custom_pair", help="folder for the pictures")
    parser.add_argument(
        "--num-samples", type=int, default=1000, help="importance samples per test image"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    pyro.clear_param_store()

    train = data.load("digits", split="train").to(args.device)
    test = data.load("digits", split="test").to(args.device)
    model, guide, decoder, prior = make_pair(train.x.shape[1], device=args.device)
    history = probae.fit(
        (model, guide), train, epochs=args.epochs, batch_size=64, binarize="dynamic", seed=0
    )

    test_bin = data.binarize(test, seed=0)
    elbo = evaluate.elbo((model, guide), test_bin)
    ll = evaluate.log_likelihood((model, guide), test_bin, num_samples=args.num_samples)
    print(f"test ELBO           {elbo.mean().item():8.3f} nats per image")
    print(f"test log-likelihood {ll.mean:8.3f} ± {ll.stderr:.3f} nats per image", end=" ")
    print(f"({ll.num_samples} importance samples)")
    print("learned prior scale:", [round(s, 3) for s in pyro.param("prior_scale").tolist()])

    with torch.no_grad():
        z = prior(test_bin.x).sample((64,))
        pixels = torch.sigmoid(decoder(z))
    pictures = [
        viz.image_grid(pixels, out / "samples.png", image_shape=(1, 8, 8), title="samples"),
        viz.history_plot(history, out / "history.png"),
    ]
    print("pictures:", ", ".join(str(p) for p in pictures))


if __name__ == "__main__":
    main()
