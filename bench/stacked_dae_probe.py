"""Linear-probe accuracy of the top code of a stacked denoising autoencoder, before and
after end-to-end training, beside an autoencoder and a one-layer denoising autoencoder
with the same code size and the same number of training epochs.

Every model sees ``--epochs`` epochs in all:

- ``AE``: the deep autoencoder with hidden widths ``--layers[:-1]``, trained from
  random weights (no corruption);
- ``DenoisingAE (1 layer)``: one sigmoid layer of ``--layers[-1]`` units;
- ``stacked, greedy only``: ``--epochs / L`` epochs per layer;
- ``stacked, greedy + end to end``: ``--epochs / (2L)`` epochs per layer, then
  ``--epochs / 2`` epochs of the whole stack (its accuracy after the greedy half is
  reported too).

An epoch of a single layer costs less than an epoch of the whole stack: equal epochs are
not equal compute. Pixels are Bernoulli, dynamically binarized; the probe is a logistic
regression on the clean codes (:func:`probae.evaluate.linear_probe`). Examples::

    python bench/stacked_dae_probe.py --data digits --layers 64,32 --epochs 60
    python bench/stacked_dae_probe.py --data mnist --root ../shared/data \\
        --train-size 10000 --test-size 2000 --layers 256,128,32 --epochs 12
"""

from __future__ import annotations

import argparse
import time

import torch

import probae
from probae import corruption, data, evaluate, likelihoods


def subset(ds, size, seed):
    if size is None or size >= len(ds):
        return ds
    rows = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:size]
    return ds[rows]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--root", default=None)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--layers", default="64,32")
    parser.add_argument("--epochs", type=int, default=60, help="total epochs of every model")
    parser.add_argument("--noise", type=float, default=0.25, help="masking fraction")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    widths = tuple(int(w) for w in args.layers.split(","))
    L = len(widths)
    if args.epochs % (2 * L):
        parser.error(f"--epochs must be a multiple of 2 x {L} layers")
    train = subset(data.load(args.data, "train", root=args.root), args.train_size, args.seed)
    test = subset(data.load(args.data, "test", root=args.root), args.test_size, args.seed + 1)
    x_shape = tuple(train.x.shape[1:])
    fit = {"batch_size": args.batch_size, "lr": args.lr, "progress": False}
    noise = corruption.MaskingNoise(args.noise)
    rows = []

    def report(name, model, epochs, began):
        accuracy = evaluate.linear_probe(model, train, test)
        rows.append((name, epochs, accuracy, time.perf_counter() - began))
        print(f"{name:34s} {epochs:4d} epochs  probe {accuracy:.4f}", flush=True)

    began = time.perf_counter()
    report("raw pixels (no training)", lambda x: x.reshape(len(x), -1), 0, began)

    began = time.perf_counter()
    torch.manual_seed(args.seed)
    ae = probae.AE(
        x_shape, widths[-1], likelihoods.Bernoulli(), hidden=widths[:-1], activation="sigmoid"
    )
    probae.fit(ae, train, epochs=args.epochs, binarize="dynamic", seed=args.seed, **fit)
    report("AE (deep, from random weights)", ae, args.epochs, began)

    began = time.perf_counter()
    torch.manual_seed(args.seed)
    dae = probae.DenoisingAE(
        x_shape, widths[-1], noise, likelihoods.Bernoulli(), hidden=(), activation="sigmoid"
    )
    probae.fit(dae, train, epochs=args.epochs, binarize="dynamic", seed=args.seed, **fit)
    report("DenoisingAE (1 layer)", dae, args.epochs, began)

    def stack():
        torch.manual_seed(args.seed)
        return probae.StackedDenoisingAE(x_shape, widths, noise, likelihoods.Bernoulli())

    began = time.perf_counter()
    greedy = stack()
    greedy.pretrain(train, args.epochs // L, binarize="dynamic", seed=args.seed, **fit)
    report("stacked, greedy only", greedy, args.epochs, began)

    began = time.perf_counter()
    both = stack()
    both.pretrain(train, args.epochs // (2 * L), binarize="dynamic", seed=args.seed, **fit)
    report("stacked, greedy half (before e2e)", both, args.epochs // 2, began)
    probae.fit(both, train, epochs=args.epochs // 2, binarize="dynamic", seed=args.seed, **fit)
    report("stacked, greedy + end to end", both, args.epochs, began)

    print()
    print("| model | epochs | probe accuracy | seconds |")
    print("|---|---|---|---|")
    for name, epochs, accuracy, seconds in rows:
        print(f"| {name} | {epochs} | {accuracy:.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
