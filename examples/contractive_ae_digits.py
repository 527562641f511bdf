"""A contractive autoencoder on the 8x8 digits (Rifai et al. 2011).

The guide adds lambda ||df/dx||_F^2 as a pyro.factor; for the one-layer sigmoid encoder
used here the Frobenius norm has a closed form, sum_j (h_j (1 - h_j))^2 ||W_j||^2.

    python examples/contractive_ae_digits.py --epochs 100 --out out/contractive_ae
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
    parser.add_argument("--out", type=Path, default=Path("out/contractive_ae"), help="PNG folder")
    parser.add_argument("--weight", type=float, default=0.1, help="lambda")
    parser.add_argument("--z-dim", type=int, default=32, help="code size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small networks: one thread is fastest

    train = data.load("digits", "train").to(args.device)
    test = data.load("digits", "test").to(args.device)
    torch.manual_seed(args.seed)  # the initial weights, for a reproducible run
    model = probae.ContractiveAE(train.x.shape[1:], args.z_dim, weight=args.weight).to(args.device)
    probae.fit(model, train, epochs=args.epochs, batch_size=64, seed=args.seed)
    with torch.no_grad():
        contraction = model.contraction(test.x).mean().item()
    error = evaluate.reconstruction_error(model, test).mean().item()
    print(f"mean ||df/dx||_F^2 on test images: {contraction:.3f}")
    print(f"test squared reconstruction error per image: {error:.3f}")
    print(f"linear probe accuracy on the codes: {evaluate.linear_probe(model, train, test):.3f}")
    path = args.out / "contractive_ae_filters.png"
    print("wrote", filters(model, path, image_shape=train.image_shape))


if __name__ == "__main__":
    main()
