"""A VQ-VAE on the 8x8 digits (or MNIST with --root), then a gated PixelCNN prior over its codes.

Trains the autoencoder (codebook by moving averages, dead codes restarted), fits a
learned autoregressive prior to the code grids of the training set, and prints the
codebook's perplexity, the reconstruction error and the bits per dimension of the
binarized test set through that prior; writes samples drawn from the prior,
reconstructions and the loss curve.

    python examples/vqvae_digits.py --epochs 50 --out vqvae_digits
    python examples/vqvae_digits.py --root /path/to/data --epochs 20   # MNIST
"""

import argparse
from pathlib import Path

import probae
from probae import VQVAE, data, evaluate, viz


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50, help="training epochs (default: 50)")
    parser.add_argument("--out", default="vqvae_digits", help="folder for the pictures")
    parser.add_argument(
        "--root", default=None, help="folder holding MNIST/raw: train on MNIST instead of digits"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    out = Path(args.out)

    name = "digits" if args.root is None else "mnist"
    train = data.binarize(data.load(name, split="train", root=args.root), seed=0)
    test = data.binarize(data.load(name, split="test", root=args.root), seed=0)
    # 8x8 digits: one halving, a 4x4 grid of codes; MNIST: two, a 7x7 grid
    channels = (32,) if name == "digits" else (32, 64)
    vq = VQVAE(
        x_shape=train.x.shape[1:],
        code_dim=16,
        codebook_size=32 if name == "digits" else 64,
        commitment=0.25,
        ema=True,
        dead_code_threshold=1.0,
        channels=channels,
        prior_channels=32 if name == "digits" else 64,
        prior_layers=3 if name == "digits" else 5,
    ).to(args.device)
    history = probae.fit(vq, train, epochs=args.epochs, batch_size=64, seed=0)
    print(f"codebook perplexity during the last epoch: {history.metrics['perplexity'][-1]:.1f}")

    usage = vq.codebook_usage(test)
    print(
        f"test codebook perplexity {usage.perplexity:.1f} ({usage.used} of {vq.codebook_size} used)"
    )
    print(f"test squared reconstruction error {evaluate.reconstruction_error(vq, test).mean():.3f}")
    probae.fit_code_prior(vq, train, epochs=max(1, args.epochs // 5), seed=0)
    print(f"test bits per dimension through the code prior {evaluate.bits_per_dim(vq, test):.4f}")

    pictures = [
        viz.sample_grid(vq, 64, out / "samples.png", seed=0),
        viz.reconstructions(vq, test[:16], out / "reconstructions.png"),
        viz.history_plot(history, out / "history.png"),
    ]
    print("pictures:", ", ".join(str(p) for p in pictures))
    probae.save(vq, out / "model", overwrite=True)


if __name__ == "__main__":
    main()
