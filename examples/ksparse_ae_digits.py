"""A k-sparse autoencoder on the 8x8 digits (Makhzani & Frey 2013).

The code is linear, h = W x + b, and only its k largest units are kept; the decoder is
tied, g(z) = W^T z + c. The script draws the rows of W as 8x8 filters.

    python examples/ksparse_ae_digits.py --k 10 --epochs 100 --out out/ksparse_ae
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
    parser.add_argument("--out", type=Path, default=Path("out/ksparse_ae"), help="PNG folder")
    parser.add_argument("--z-dim", type=int, default=64, help="hidden units")
    parser.add_argument("--k", type=int, default=10, help="units kept per code")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small networks: one thread is fastest

    train = data.load("digits", "train").to(args.device)
    test = data.load("digits", "test").to(args.device)
    torch.manual_seed(args.seed)  # the initial weights, for a reproducible run
    model = probae.KSparseAE(train.x.shape[1:], args.z_dim, k=args.k).to(args.device)
    probae.fit(model, train, epochs=args.epochs, batch_size=64, lr=3e-3, seed=args.seed)
    with torch.no_grad():
        codes = model.encode(test.x)
    error = evaluate.reconstruction_error(model, test).mean().item()
    print(f"non-zero units per code: {(codes != 0).sum(-1).double().mean():.1f} of {args.z_dim}")
    print(f"test squared reconstruction error per image: {error:.3f}")
    print(f"linear probe accuracy on the codes: {evaluate.linear_probe(model, train, test):.3f}")
    path = args.out / "ksparse_ae_filters.png"
    print("wrote", filters(model, path, image_shape=train.image_shape, title=f"k = {args.k}"))


if __name__ == "__main__":
    main()
