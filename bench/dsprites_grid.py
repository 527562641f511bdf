"""Memory and time of the whole dSprites set rendered on demand.

Measures, in one process: the peak resident memory (``ru_maxrss``) and time of
``data.load("dsprites", split=..., size=None)``, then of reading the first
``--batches`` batches of ``--batch-size`` of one shuffled epoch through a
:class:`~torch.utils.data.DataLoader` (each batch one vectorized render), and, with
``--fit``, of ``probae.fit`` streaming the grid for that many steps (an MLP VAE).
Prints one JSON line.

    OMP_NUM_THREADS=1 python bench/dsprites_grid.py --split all --batches 200 --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="all", choices=("train", "test", "all"))
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--fit", type=int, default=0, help="also fit this many steps")
    args = parser.parse_args(argv)

    import probae
    from probae import VAE, data

    row = {"split": args.split, "threads": torch.get_num_threads(), "mib_after_import": peak_mib()}
    start = time.perf_counter()
    grid = data.load("dsprites", split=args.split, size=None)
    row.update(
        images=len(grid),
        load_s=time.perf_counter() - start,
        mib_after_load=peak_mib(),
    )

    generator = torch.Generator().manual_seed(0)
    sampler = torch.utils.data.RandomSampler(grid, generator=generator)
    loader = torch.utils.data.DataLoader(
        grid, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers
    )
    start, pixels, read = time.perf_counter(), 0.0, 0
    for step, (x, _) in enumerate(loader):
        pixels += float(x.sum())
        read += x.shape[0]
        if step + 1 == args.batches:
            break
    seconds = time.perf_counter() - start
    row.update(
        batches=args.batches,
        batch_size=args.batch_size,
        read_s=seconds,
        images_per_s=read / seconds,
        mean_pixel=pixels / (read * 4096),
        mib_after_read=peak_mib(),
    )

    if args.fit:
        subset = torch.utils.data.Subset(grid, range(args.fit * args.batch_size))
        vae = VAE((4096,), 10, hidden=(512, 256))
        start = time.perf_counter()
        probae.fit(vae, subset, epochs=1, batch_size=args.batch_size, in_memory=False)
        row.update(fit_steps=args.fit, fit_s=time.perf_counter() - start, mib_after_fit=peak_mib())
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    return row


if __name__ == "__main__":
    main()
