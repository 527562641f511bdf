"""DRAW on the 8x8 digits (or MNIST with --root): a picture drawn in T steps, one latent each.

Trains DRAW with Gaussian-filterbank attention (or without, --no-attention) by the
same fit as every model, prints the test ELBO and the importance-weighted
log-likelihood (one weight for all T latent sites), the KL spent at each step, and
writes the canvas at every step for samples and for reconstructions, as in
Gregor et al. (2015).

    python examples/draw_digits.py --epochs 100 --out draw_digits
    python examples/draw_digits.py --root /path/to/data --epochs 20   # MNIST, 28x28
"""

import argparse
from pathlib import Path

import probae
from probae import DRAW, data, evaluate, viz


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (default: 100)")
    parser.add_argument("--out", default="draw_digits", help="folder for the pictures")
    parser.add_argument(
        "--root", default=None, help="folder holding MNIST/raw: train on MNIST instead of digits"
    )
    parser.add_argument("--attention", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--num-samples", type=int, default=100, help="importance samples per test image"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    out = Path(args.out)

    name = "digits" if args.root is None else "mnist"
    train = data.load(name, split="train", root=args.root)
    test = data.binarize(data.load(name, split="test", root=args.root), seed=0)
    digits = name == "digits"
    draw = DRAW(
        x_shape=train.x.shape[1:],
        z_dim=4 if digits else 10,
        steps=8 if digits else 16,
        read=(2, 2),
        write=(3, 3) if digits else (5, 5),
        attention=args.attention,
        encoder_size=64 if digits else 256,
        decoder_size=64 if digits else 256,
    ).to(args.device)
    history = probae.fit(draw, train, epochs=args.epochs, batch_size=64, binarize="dynamic", seed=0)

    points = test if digits else test[:1000]
    elbo = evaluate.elbo(draw, points)
    ll = evaluate.log_likelihood(draw, points, num_samples=args.num_samples)
    print(f"test ELBO           {elbo.mean().item():8.3f} nats per image")
    print(f"test log-likelihood {ll.mean:8.3f} ± {ll.stderr:.3f} nats per image")
    kls = draw.step_kls(points.x.to(args.device)).mean(0)
    print("KL per step (nats):", " ".join(f"{k:.2f}" for k in kls.tolist()))

    pictures = [
        viz.draw_canvas(draw, out / "canvas_samples.png", n=8, seed=0),
        viz.draw_canvas(draw, out / "canvas_reconstructions.png", x=test[:8]),
        viz.history_plot(history, out / "history.png"),
    ]
    print("pictures:", ", ".join(str(p) for p in pictures))
    probae.save(draw, out / "model", overwrite=True)


if __name__ == "__main__":
    main()
