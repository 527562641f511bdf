"""Samples per second of probae.fit on MNIST: in memory against streamed.

The same MLP VAE (784-400-(2x20), decoder 20-400-784, Bernoulli pixels, dynamic
binarization) trains for one epoch on the first ``--points`` training images:

- **in memory**: ``data.load("mnist")``, a tensor on the model's device; batches
  are index slices;
- **streamed**: torchvision's ``MNIST`` data set with ``ToTensor()`` (a PIL image
  decoded and converted per item), read by ``--workers`` DataLoader workers
  (``in_memory=False``), pinned and copied without blocking on CUDA.

Each side runs one untimed warm-up epoch, then ``--repeats`` timed epochs
(interleaved); the figure is the median. The ratio is streamed / in memory.

    python bench/streaming.py --root /path/holding/MNIST/raw
    python bench/streaming.py --root DATA --device cuda --workers 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch

import probae
from probae import VAE, data, likelihoods, priors


def _epoch_seconds(vae, train, device, **kwargs) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    probae.fit(vae, train, epochs=1, progress=False, binarize="dynamic", **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (default: 1)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default: 2)")
    parser.add_argument("--points", type=int, default=12800, help="images per epoch (12800)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (128)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per side (3)")
    args = parser.parse_args(argv)
    import torchvision
    from torchvision.transforms import ToTensor

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    memory = data.load("mnist", "train", root=args.root)[: args.points]
    streamed = torch.utils.data.Subset(
        torchvision.datasets.MNIST(args.root, train=True, transform=ToTensor()),
        range(args.points),
    )
    vaes = {
        side: VAE((784,), 20, prior=priors.StandardNormal(20),
                  likelihood=likelihoods.Bernoulli(), hidden=(400,)).to(device)
        for side in ("memory", "streamed")
    }  # fmt: skip
    options = {
        "memory": dict(data=memory),
        "streamed": dict(data=streamed, in_memory=False, num_workers=args.workers),
    }
    times = {side: [] for side in vaes}
    for repeat in range(args.repeats + 1):
        for side in vaes if repeat % 2 == 0 else reversed(list(vaes)):
            opts = dict(options[side])
            seconds = _epoch_seconds(vaes[side], opts.pop("data"), device,
                                     batch_size=args.batch_size, **opts)  # fmt: skip
            if repeat:  # the first is a warm-up
                times[side].append(seconds)
    rate = {side: args.points / statistics.median(t) for side, t in times.items()}
    print(
        f"probae.fit on MNIST, {args.points} images an epoch, batch {args.batch_size}, "
        f"MLP VAE 784-400-(2x20), {device}, {torch.get_num_threads()} thread(s), "
        f"{args.workers} workers, median of {args.repeats} epochs"
    )
    print(f"  in memory   {rate['memory']:9.0f} samples/s")
    print(f"  streamed    {rate['streamed']:9.0f} samples/s")
    print(f"streamed / in memory: {rate['streamed'] / rate['memory']:.3f}")


if __name__ == "__main__":
    main()
