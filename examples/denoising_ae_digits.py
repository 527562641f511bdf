"""A denoising autoencoder on the 8x8 digits, and its vector field on two moons.

The guide draws a corrupted copy x~ ~ C(x~|x) (masking noise: a quarter of the pixels of
each image set to 0) and puts its point mass at f(x~); the model scores the clean x. On
2-D data with small Gaussian corruption, r(x~) - x~ points back to the data (Alain &
Bengio 2014): the script draws that field.

    python examples/denoising_ae_digits.py --epochs 100 --out out/denoising_ae
"""

import argparse
from pathlib import Path

import torch

import probae
from probae import corruption, data, evaluate
from probae.viz import filters, vector_field


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="training epochs")
    parser.add_argument("--out", type=Path, default=Path("out/denoising_ae"), help="PNG folder")
    parser.add_argument("--z-dim", type=int, default=32, help="code size")
    parser.add_argument("--p", type=float, default=0.25, help="fraction of pixels masked")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small networks: one thread is fastest

    train = data.load("digits", "train").to(args.device)
    test = data.load("digits", "test").to(args.device)
    torch.manual_seed(args.seed)  # the initial weights, for a reproducible run
    noise = corruption.MaskingNoise(args.p)
    model = probae.DenoisingAE(train.x.shape[1:], args.z_dim, corruption=noise, hidden=(128,))
    model = model.to(args.device)
    probae.fit(model, train, epochs=args.epochs, batch_size=64, seed=args.seed)
    torch.manual_seed(args.seed)
    noisy = noise(test.x)
    denoised = (test.x - model.reconstruct(noisy)).pow(2).sum(-1).mean().item()
    left_noisy = (test.x - noisy).pow(2).sum(-1).mean().item()
    print(f"test squared error of the masked images: {left_noisy:.3f}, denoised: {denoised:.3f}")
    print(f"linear probe accuracy on the codes: {evaluate.linear_probe(model, train, test):.3f}")
    print("wrote", filters(model, args.out / "dae_filters.png", image_shape=train.image_shape))

    moons = data.load("moons").to(args.device)
    field = probae.DenoisingAE((2,), 32, corruption=corruption.GaussianNoise(0.2), hidden=(64,))
    field = field.to(args.device)
    probae.fit(field, moons, epochs=max(1, args.epochs // 4), batch_size=64, seed=args.seed)
    print("wrote", vector_field(field, args.out / "dae_vector_field.png", data=moons))


if __name__ == "__main__":
    main()
