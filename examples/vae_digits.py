"""A VAE on the 8x8 handwritten digits that ship with scikit-learn.

Trains a VAE with a standard normal prior and Bernoulli pixels (the grey levels
are binarized afresh in every batch), then prints the test ELBO and the
importance-weighted estimate of log p(x) in nats per image, and writes
pictures: samples, reconstructions, latent traversals, an interpolation, the
codes of the test set and the loss curve.

    python examples/vae_digits.py --epochs 100 --out vae_digits
"""

import argparse
from pathlib import Path

import probae
from probae import VAE, data, evaluate, likelihoods, priors, viz


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (default: 100)")
    parser.add_argument("--out", default="vae_digits", help="folder for the pictures")
    parser.add_argument(
        "--num-samples", type=int, default=1000, help="importance samples per test image"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    out = Path(args.out)

    train, test = data.load("digits", split="train"), data.load("digits", split="test")
    vae = VAE(
        x_shape=train.x.shape[1:],
        z_dim=8,
        prior=priors.StandardNormal(8),
        likelihood=likelihoods.Bernoulli(),
        beta=1.0,
    ).to(args.device)
    history = probae.fit(
        vae, train, epochs=args.epochs, batch_size=64, loss="elbo", binarize="dynamic", seed=0
    )

    test_bin = data.binarize(test, seed=0)  # one fixed binarization for evaluation
    elbo = evaluate.elbo(vae, test_bin)
    ll = evaluate.log_likelihood(vae, test_bin, num_samples=args.num_samples)
    print(f"test ELBO           {elbo.mean().item():8.3f} nats per image")
    print(f"test log-likelihood {ll.mean:8.3f} ± {ll.stderr:.3f} nats per image", end=" ")
    print(f"({ll.num_samples} importance samples)")

    samples = vae.sample(16)  # E[x|z] for z ~ p(z), shape (16, 64)
    rebuilt = vae.reconstruct(test.x[:8])
    assert samples.shape == (16, 64) and rebuilt.shape == (8, 64)

    pictures = [
        viz.sample_grid(vae, 64, out / "samples.png", seed=0),
        viz.reconstructions(vae, test[:16], out / "reconstructions.png"),
        viz.traversal(vae, test[0], path=out / "traversal.png"),
        viz.interpolation(vae, test.x[:4], test.x[4:8], steps=8, path=out / "interpolation.png"),
        viz.latent_scatter(vae, test, out / "latent.png"),
        viz.history_plot(history, out / "history.png"),
    ]
    print("pictures:", ", ".join(str(p) for p in pictures))
    # the trained model: class, options and weights; probae.load(out / "model") reads it back
    probae.save(vae, out / "model", overwrite=True)


if __name__ == "__main__":
    main()
