"""A VAE trained data-parallel over several processes with torchrun.

Every process runs this same script; ``probae.distributed.setup`` joins the process
group that torchrun describes (NCCL on GPUs, one GPU per process; gloo on CPUs),
and ``probae.fit`` then shards each epoch across the processes and averages their
gradients with DistributedDataParallel. Started without torchrun it trains in one
process, so the script is runnable anywhere.

    torchrun --nproc_per_node=2 examples/distributed_vae.py --epochs 50
    python examples/distributed_vae.py --epochs 50          # one process

A run that stopped continues from its last checkpoint with ``--resume`` (the same
number of processes): every process's random streams are in the checkpoint, so the
resumed run ends with the weights the uninterrupted run would have had.

    torchrun --nproc_per_node=2 examples/distributed_vae.py --epochs 100 --resume
"""

import argparse
import os
from pathlib import Path

import torch

import probae
from probae import VAE, data, distributed, evaluate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50, help="training epochs (default: 50)")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="points per process and step (default: 64)"
    )
    parser.add_argument("--out", default="distributed_vae", help="folder for the checkpoint")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, or auto: a GPU per process where the host has enough, else the CPU "
        "(default: auto)",
    )
    args = parser.parse_args(argv)

    launched = "RANK" in os.environ  # torchrun sets it
    choice = None if args.device == "auto" else args.device
    if launched:  # NCCL across GPUs, gloo across CPUs
        device = distributed.setup(device=choice)
    elif choice is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(choice)
    try:
        train, test = data.load("digits", "train"), data.load("digits", "test")
        torch.manual_seed(0)  # the same initial weights on every process
        vae = VAE(train.x.shape[1:], z_dim=8).to(device)
        history = probae.fit(
            vae,
            train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            binarize="dynamic",
            checkpoint_dir=Path(args.out),
            resume=args.resume,
            seed=0,
        )
        if distributed.rank() == 0:
            ll = evaluate.log_likelihood(vae, data.binarize(test, seed=0), num_samples=200)
            print(
                f"{distributed.world_size()} process(es), final train loss "
                f"{history.train_loss[-1]:.3f}; test log-likelihood {ll.mean:.3f} nats"
            )
    finally:
        if launched:
            distributed.cleanup()


if __name__ == "__main__":
    main()
