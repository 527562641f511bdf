"""The IWAE log-likelihood estimate: probae's ``evaluate.log_likelihood`` at its defaults
against a hand-written vectorized evaluator at that evaluator's best settings.

The net is the IWAE paper's 784-200-200-50 tanh VAE (untrained weights: the cost does not
depend on them), on MNIST test images from ``--root``.
The hand-written evaluator is what a PyTorch user would write: encode, draw a chunk of
samples for a batch of points, decode, sum the log-densities, log-sum-exp. A small grid of
batch and chunk sizes is searched for both; probae's defaults are timed as a user calls
them, each call including its one-time checks, PSIS on. Each figure is the best of
``--repeats`` runs (ms per image). Run::

    python bench/evaluator.py --root ../shared/data --images 200 --num-samples 1000
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import iwae_vae, shared_nll  # noqa: E402

from probae import data, evaluate  # noqa: E402

BATCHES = (1, 2, 5, 10, 25, 100)
CHUNKS = (100, 500, 1000)


def timed(fn, images: int, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - began)
    return 1000 * best / images


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
        help="the folder holding MNIST/raw",
    )
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)  # untrained weights: k-hat warnings
    x = data.load("mnist", split="test", root=args.root).x[: args.images]
    vae = iwae_vae().to(args.device)
    encoder, decoder = vae.encoder, vae.decoder
    x = data.binarize(x, seed=1).to(args.device)
    k, n = args.num_samples, x.shape[0]

    print(
        f"IWAE k={k}, {n} images, {args.threads} thread(s); ms per image (best of {args.repeats})"
    )
    print("| evaluator | batch | chunk | ms/image |\n|---|---|---|---|")
    hand = {}
    for batch, chunk in itertools.product(BATCHES, CHUNKS):
        if chunk > k:
            continue
        hand[batch, chunk] = timed(
            lambda b=batch, c=chunk: shared_nll(encoder, decoder, x, k, c, b), n, args.repeats
        )
        print(f"| hand-written | {batch} | {chunk} | {hand[batch, chunk]:.2f} |", flush=True)
    ours = {}
    for batch, chunk in ((5, 500), (2, 1000), (100, 500)):
        ours[batch, chunk] = timed(
            lambda b=batch, c=chunk: evaluate.log_likelihood(
                vae, x, num_samples=k, chunk_size=c, batch_size=b
            ),
            n,
            args.repeats,
        )
        print(f"| probae | {batch} | {chunk} | {ours[batch, chunk]:.2f} |", flush=True)
    chunk, batch = evaluate.pass_sizes(k, 784, x.device.type)
    default = timed(lambda: evaluate.log_likelihood(vae, x, num_samples=k), n, args.repeats)
    print(f"| probae defaults | ({batch}) | ({chunk}) | {default:.2f} |")
    best_hand = min(hand, key=hand.get)
    print(
        f"\nprobae at its defaults / hand-written at its best {best_hand}: "
        f"{default / hand[best_hand]:.2f}"
    )


if __name__ == "__main__":
    main()
