"""Sample quality of the generative autoencoders, from their priors and from densities
fitted to their codes after training.

Each model is trained for the same number of epochs on the training split, then
``--num-samples`` samples are compared with the test split by
:func:`probae.evaluate.sample_quality` in the feature space of a classifier trained
on the training labels (:func:`probae.evaluate.features.classifier`, its held-out
accuracy printed first). Every model is measured from its own prior and from a
Gaussian mixture fitted to its training codes (:class:`probae.samplers.GaussianMixture`):
to the posterior means and to one draw of q(z|x) per point for the variational
families, to f(x) for the deterministic autoencoders, which have no prior. The first
row is the floor: training points (each once, so at most as many as the training split
holds), scored against the test points as a model would be.

Figures from different feature spaces are not comparable; orderings of models often
are. The digits table takes about a minute of CPU time on one thread, the MNIST one
below about four::

    python bench/sample_quality.py
    python bench/sample_quality.py --models vae,wae --epochs 100 --components 20
    python bench/sample_quality.py --data mnist --root ../shared/data \\
        --models vae,wae,ae,rae --epochs 3 --z-dim 16 --classifier-epochs 2
"""

from __future__ import annotations

import argparse
import time

import torch

import probae
from probae import data, evaluate, likelihoods, samplers

#: name -> (constructor of (x_shape, z_dim), likelihood is Bernoulli on binarized data)
MODELS = {
    "vae": (lambda s, z: probae.VAE(s, z), True),
    "beta-vae": (lambda s, z: probae.VAE(s, z, beta=4.0), True),
    "info-vae": (lambda s, z: probae.InfoVAE(s, z), True),
    "wae": (lambda s, z: probae.WAE(s, z, likelihood=likelihoods.Gaussian(scale=0.1)), False),
    "ae": (lambda s, z: probae.AE(s, z, likelihood=likelihoods.Gaussian(scale=0.1)), False),
    "rae": (lambda s, z: probae.RAE(s, z, likelihood=likelihoods.Gaussian(scale=0.1)), False),
}


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", help="digits (built in) or mnist")
    parser.add_argument("--root", default=None, help="folder holding MNIST/raw")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--components", type=int, default=10, help="of the fitted mixture")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--classifier-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--cache", default=None, help="folder of the cached classifier (default: probae's)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; expected some of {list(MODELS)}")
    return args


def row(name, quality, seconds=None):
    extra = "" if seconds is None else f"  ({seconds:.0f} s)"
    print(
        f"{name:<28} {quality.fid:9.2f} {quality.kid:9.3f} {quality.kid_se:8.3f} "
        f"{quality.precision:9.3f} {quality.recall:7.3f}{extra}",
        flush=True,
    )


def main(argv=None):
    args = parse(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train = data.load(args.data, "train", root=args.root).to(device)
    test = data.load(args.data, "test", root=args.root).to(device)
    features = evaluate.features.classifier(
        train, test, epochs=args.classifier_epochs, seed=args.seed, cache=args.cache
    )
    print(
        f"{args.data}: {len(train)} training, {len(test)} test points; classifier features "
        f"({features.feature_dim} units), test accuracy {features.accuracy:.4f}"
    )
    print(
        f"{args.epochs} epochs per model, z_dim {args.z_dim}, {args.num_samples} samples, "
        f"mixture of {args.components}\n"
    )
    print(
        f"{'model / sampler':<28} {'FID':>9} {'KID':>9} {'± se':>8} {'precision':>9} {'recall':>7}"
    )

    def measure(model, sampler=None):
        return evaluate.sample_quality(
            model,
            test,
            features=features,
            num_samples=args.num_samples,
            sampler=sampler,
            seed=args.seed,
        )

    # Drawn without replacement: repeated points would shrink the k-NN radii to zero.
    floor = min(args.num_samples, len(train))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))
    training_points = train.x[order[:floor].to(device)]
    drawn = 0

    def next_training_points(n):  # sample_quality asks in batches: hand out the next ones
        nonlocal drawn
        drawn += n
        return training_points[drawn - n : drawn]

    real = evaluate.sample_quality(next_training_points, test, features=features, num_samples=floor)
    row(f"training data ({floor})", real)
    x_shape = tuple(train.x.shape[1:])
    for name in args.models.split(","):
        build, binarize = MODELS[name]
        torch.manual_seed(args.seed)
        model = build(x_shape, args.z_dim).to(device)
        start = time.perf_counter()
        probae.fit(
            model,
            train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            binarize="dynamic" if binarize else None,
            progress=False,
            seed=args.seed,
        )
        seconds = time.perf_counter() - start
        if isinstance(model, probae.models.DeterministicAutoencoder):
            kinds = {"mixture": "mean"}  # a point mass: the mean is the draw
        else:
            row(f"{name} / prior", measure(model), seconds)
            kinds = {"mixture on means": "mean", "mixture on draws": "posterior"}
        for label, codes in kinds.items():
            mixture = samplers.GaussianMixture(args.components, seed=args.seed)
            mixture.fit(model, train, codes=codes)
            row(f"{name} / {label}", measure(model, mixture), seconds)


if __name__ == "__main__":
    main()
