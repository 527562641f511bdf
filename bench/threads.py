"""fit at its default thread choice against one thread and all cores, with and without a
second process keeping one core busy.

Two networks: the demo's VAE on the built-in digits (small: probae picks one thread) and
the IWAE paper's 784-200-200-50 net on MNIST from ``--root`` (large: PyTorch's setting is
kept). Seconds per epoch, the best of ``--repeats`` runs. Run::

    python bench/threads.py --root ../shared/data
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import iwae_vae  # noqa: E402

import probae  # noqa: E402
from probae import VAE, data  # noqa: E402

BUSY = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def seconds_per_epoch(build, x, threads, epochs, repeats):
    best = math.inf
    for _ in range(repeats):
        model = build()
        began = time.perf_counter()
        probae.fit(
            model, x, epochs=epochs, batch_size=100, binarize="dynamic", progress=False,
            threads=threads,
        )  # fmt: skip
        best = min(best, (time.perf_counter() - began) / epochs)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mnist-images", type=int, default=5000)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    digits = data.load("digits", split="train").x
    cases = [("digits VAE (small)", lambda: VAE((64,), 8), digits)]
    if (Path(args.root) / "MNIST" / "raw").is_dir():
        mnist = data.load("mnist", split="train", root=args.root).x[: args.mnist_images]
        cases.append(("IWAE net on MNIST (large)", iwae_vae, mnist))
    print(f"{cores} cores; PyTorch's default: {torch.get_num_threads()} threads; s/epoch")
    print("| network | machine | default (threads=None) | 1 thread | all cores |")
    print("|---|---|---|---|---|")
    for busy in (False, True):
        loader = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
        try:
            for name, build, x in cases:
                row = [
                    seconds_per_epoch(build, x, t, args.epochs, args.repeats)
                    for t in (None, 1, cores)
                ]
                machine = "one core busy" if busy else "idle"
                print(f"| {name} | {machine} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        finally:
            if loader is not None:
                loader.kill()


if __name__ == "__main__":
    main()
