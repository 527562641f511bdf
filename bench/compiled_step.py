"""The compiled step against the eager one and a hand-written loop, in wall seconds on
one device (a GPU when there is one: fusion pays where a step is bound by kernel launches).

Every system trains the IWAE paper's MNIST net (784-200-200-50 tanh, Bernoulli pixels,
batch 100, Adam 1e-3) from the same initial weights for ``--epochs`` epochs; the first
epoch, which compiles, is left out, and each system's median seconds per later epoch
and its ratio to the hand-written loop are printed, with the wall seconds of the first
epoch (the compilation) apart:

- the hand-written loop as a user writes it (torch's BCE, default Adam), with probae's
  kernels (fused Bernoulli log-density, fused Adam), and with those kernels and both
  networks compiled as ``fit(compile=True)`` compiles them;
- :func:`probae.fit`, eager and with ``compile=True``.

    python bench/compiled_step.py --device cuda
    python bench/compiled_step.py --device cpu --train-size 2000 --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

import probae  # noqa: E402
from probae import data  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock(probae.callbacks.Callback):
    """Wall seconds of each epoch of a fit, the device synchronized."""

    def __init__(self, device):
        self.device, self.ends = device, []

    def on_epoch_end(self, state):
        _sync(self.device)
        self.ends.append(time.perf_counter())


def hand(x, epochs, kernels="torch", compiled=False):
    encoder, decoder = (net.to(x.device) for net in peers.iwae_nets(0))
    if compiled:
        encoder.compile(fullgraph=True)
        decoder.compile(fullgraph=True)
    ends, began = [], time.perf_counter()
    for _ in range(epochs):  # one epoch at a time, so each is timed
        peers.train_hand(encoder, decoder, x, 1, 100, 1e-3, kernels=kernels)
        _sync(x.device)
        ends.append(time.perf_counter())
    return began, ends


def fit(x, epochs, compile=False):
    vae = peers.iwae_vae(*(net.to(x.device) for net in peers.iwae_nets(0)))
    clock, began = _Clock(x.device), time.perf_counter()
    probae.fit(vae, x, epochs=epochs, batch_size=100, lr=1e-3, binarize="dynamic",
               progress=False, callbacks=[clock], compile=compile)  # fmt: skip
    return began, clock.ends


SYSTEMS = {
    "hand-written PyTorch loop": lambda x, e: hand(x, e),
    "hand-written, probae's kernels": lambda x, e: hand(x, e, kernels="probae"),
    "hand-written, probae's kernels, compiled": lambda x, e: hand(
        x, e, kernels="probae", compiled=True
    ),
    "probae.fit": lambda x, e: fit(x, e),
    "probae.fit(compile=True)": lambda x, e: fit(x, e, compile=True),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--root", type=Path, default=peers.ROOT.parent / "shared" / "data")
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=4, help="the first compiles")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = data.load("mnist", "train", root=args.root).x[: args.train_size].to(device)
    print(
        f"MNIST {x.shape[0]} images on {device}, IWAE net, batch 100, {args.epochs} epochs "
        "(the first left out); wall seconds per epoch"
    )
    print(f"{'system':44s} {'s/epoch':>8s} {'ratio':>6s} {'first epoch':>12s}")
    base = None
    for name, run in SYSTEMS.items():
        pyro.set_rng_seed(1)
        try:
            began, ends = run(x, args.epochs)
        except Exception as error:  # a backend this device lacks: said, not hidden
            print(f"{name:44s} failed: {type(error).__name__}: {str(error).splitlines()[0]}")
            continue
        per_epoch = statistics.median(b - a for a, b in zip(ends, ends[1:], strict=False))
        base = per_epoch if base is None else base
        print(f"{name:44s} {per_epoch:8.3f} {per_epoch / base:6.2f} {ends[0] - began:11.1f}s")


if __name__ == "__main__":
    main()
