"""Class-conditional generation with a CVAE on the 8x8 digits.

The condition c is the one-hot label; the prior p(z|c) is learned. Prints the test
set's conditional ELBO and importance-weighted log p(x|c), checks that a logistic
regression trained on the real digits reads the requested class in the samples,
and draws a class-by-sample grid.

    python examples/cvae_digits_classes.py --epochs 30 --out cvae_digits
"""

import argparse
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

import probae
from probae import CVAE, data, evaluate, viz


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="cvae_digits", help="folder for the picture")
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    train = data.load("digits", "train").to(args.device)
    test = data.load("digits", "test").to(args.device)
    cvae = CVAE(x_shape=(64,), c_shape=(10,), z_dim=args.z_dim).to(args.device)
    began = time.perf_counter()
    history = probae.fit(
        cvae, train, epochs=args.epochs, condition="label", binarize="dynamic", seed=args.seed
    )
    print(
        f"trained {args.epochs} epochs in {time.perf_counter() - began:.1f} s, "
        f"last training loss {history.train_loss[-1]:.2f} nats"
    )

    test = data.binarize(test, seed=1)
    elbo = evaluate.conditional_elbo(cvae, test, num_particles=10, condition="label")
    ll = evaluate.conditional_log_likelihood(cvae, test, num_samples=200, condition="label")
    print(f"test: -ELBO(x|c) = {-elbo.mean():.2f} nats, -log p(x|c) (IW, S=200) = {-ll.mean:.2f}")

    classifier = LogisticRegression(max_iter=500).fit(train.x.cpu().numpy(), train.y.cpu().numpy())
    labels = torch.arange(10, device=args.device).repeat_interleave(50)
    samples = cvae.sample(len(labels), c=labels)
    accuracy = (classifier.predict(samples.cpu().numpy()) == labels.cpu().numpy()).mean()
    print(f"a classifier of real digits labels {100 * accuracy:.1f}% of the samples as requested")

    path = viz.class_samples(cvae, num_per_class=10, path=Path(args.out) / "classes.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
