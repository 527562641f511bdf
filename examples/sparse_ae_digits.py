"""A sparse autoencoder on the 8x8 digits, with an L1 or a KL sparsity penalty.

``--penalty l1``: a Laplace prior on the ReLU code, -log p(z) = lambda ||z||_1 + const.
``--penalty kl``: sigmoid codes whose batch-mean activations rho_hat_j are pulled to rho by
beta * sum_j KL(rho || rho_hat_j), a pyro.factor in the guide.

    python examples/sparse_ae_digits.py --penalty kl --epochs 100 --out out/sparse_ae
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
    parser.add_argument("--out", type=Path, default=Path("out/sparse_ae"), help="PNG folder")
    parser.add_argument("--penalty", choices=["l1", "kl"], default="l1")
    parser.add_argument("--weight", type=float, default=None, help="lambda (l1) or beta (kl)")
    parser.add_argument("--z-dim", type=int, default=32, help="code size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small networks: one thread is fastest

    train = data.load("digits", "train").to(args.device)
    test = data.load("digits", "test").to(args.device)
    torch.manual_seed(args.seed)  # the initial weights, for a reproducible run
    model = probae.SparseAE(
        train.x.shape[1:], args.z_dim, penalty=args.penalty, weight=args.weight, hidden=(128,)
    ).to(args.device)
    probae.fit(model, train, epochs=args.epochs, batch_size=64, seed=args.seed)
    with torch.no_grad():
        codes = model.encode(test.x)
    error = evaluate.reconstruction_error(model, test).mean().item()
    print(f"{model.penalty} penalty, weight {model.weight}")
    print(f"test squared reconstruction error per image: {error:.3f}")
    if args.penalty == "l1":
        print(f"fraction of code units exactly zero: {(codes == 0).double().mean():.3f}")
    else:
        print(f"mean activation: {codes.mean():.3f} (target rho = {model.rho})")
    print(f"linear probe accuracy on the codes: {evaluate.linear_probe(model, train, test):.3f}")
    path = args.out / f"sparse_ae_{args.penalty}_filters.png"
    print("wrote", filters(model, path, image_shape=train.image_shape))


if __name__ == "__main__":
    main()
