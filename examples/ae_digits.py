"""A plain autoencoder on the 8x8 digits, as a Pyro pair with a Delta guide.

The guide is q(z|x) = delta(z - f(x)) and the prior flat, so the loss is -log p(x|z):
with the Gaussian likelihood of scale 1 used here, half the squared reconstruction error
plus a constant. After training, a Gaussian mixture fitted to the training codes
(ex-post density estimation) lets the autoencoder generate.

    python examples/ae_digits.py --epochs 100 --out out/ae_digits
"""

import argparse
from pathlib import Path

import torch

import probae
from probae import data, evaluate
from probae.viz import filters


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="training epochs")
    parser.add_argument("--out", type=Path, default=Path("out/ae_digits"), help="folder for PNGs")
    parser.add_argument("--z-dim", type=int, default=32, help="code size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small networks: one thread is fastest

    train = data.load("digits", "train").to(args.device)
    test = data.load("digits", "test").to(args.device)
    torch.manual_seed(args.seed)  # the initial weights, for a reproducible run
    model = probae.AE(train.x.shape[1:], args.z_dim, hidden=(128,)).to(args.device)
    history = probae.fit(model, train, epochs=args.epochs, batch_size=64, seed=args.seed)
    print(f"loss per point: {history.train_loss[0]:.2f} -> {history.train_loss[-1]:.2f} nats")
    error = evaluate.reconstruction_error(model, test).mean().item()
    print(f"test squared reconstruction error per image: {error:.3f}")
    print(f"linear probe accuracy on the codes: {evaluate.linear_probe(model, train, test):.3f}")

    density = probae.fit_latent_density(model, train, components=10, seed=args.seed)
    samples = model.sample(16)
    print(
        f"16 samples from a {density.components}-component mixture fitted to the codes "
        f"(not the model's prior): pixel means in [{samples.min():.2f}, {samples.max():.2f}]"
    )
    print("wrote", filters(model, args.out / "ae_filters.png", image_shape=train.image_shape))


if __name__ == "__main__":
    main()
