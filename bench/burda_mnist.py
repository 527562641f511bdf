"""Burda et al. (2016) on MNIST, reproduced with probae.fit: the one-stochastic-layer
VAE (k=1) and IWAE (k=5), against the paper's test NLL of 86.76 and 85.54 nats.

The setup of the paper (section 5): encoder 784-200-200-(2x50) and decoder
50-200-200-784 with tanh units, Bernoulli pixels, a standard normal prior,
dynamically binarized training images, batches of 20, Adam with
:math:`\\beta = (0.9, 0.999)`, :math:`\\epsilon = 10^{-4}`, and the learning-rate
schedule of :math:`3^i` epochs at :math:`10^{-3} \\cdot 10^{-i/7}` for
:math:`i = 0, \\dots, 7` (3280 epochs in all). The test NLL is the IWAE estimate
with 5000 samples on the test set, binarized once.

The run is resumable: after every epoch the model, Adam's state and the curve are
written atomically to ``--out``; running the same command again continues where it
stopped. ``--max-minutes`` stops it cleanly after the epoch in progress, so it can
run in slices. Each evaluation prints the NLL so far beside the paper's figure.

    python bench/burda_mnist.py --k 1 --out runs/burda_k1            # the full run
    python bench/burda_mnist.py --k 5 --out runs/burda_k5
    python bench/burda_mnist.py --k 5 --out /tmp/b5 --max-minutes 1 \\
        --train-size 2000 --eval-points 20 --eval-samples 500     # a quick look

**References**

[1] `Importance Weighted Autoencoders`, Yuri Burda, Roger Grosse, Ruslan
Salakhutdinov (ICLR 2016)
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from pathlib import Path

import pyro
import torch

import probae
from probae import data, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import iwae_vae  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER = {1: 86.76, 5: 85.54}  # test NLL, one stochastic layer, Burda et al. Table 1
STAGES = 8


def schedule():
    """(epochs, learning rate) of each stage: 3^i epochs at 1e-3 * 10^(-i/7)."""
    return [(3**i, 1e-3 * 10 ** (-i / 7)) for i in range(STAGES)]


def lr_at(epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (0-based)."""
    start = 0
    for epochs, lr in schedule():
        if epoch < start + epochs:
            return lr
        start += epochs
    raise ValueError(f"epoch {epoch} is past the schedule's {start} epochs")


def total_epochs() -> int:
    return sum(epochs for epochs, _ in schedule())


def _save(state, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def start(args, state_path: Path):
    """The paper's VAE (``--k 1``) or IWAE (``--k 5``) with its Adam, continued from
    ``state_path`` when a run of the same k is there: ``(vae, adam, epoch, curve)``."""
    vae = iwae_vae(seed=args.seed)
    adam = torch.optim.Adam(
        vae.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-4, fused=True
    )  # the paper's Adam; the fused kernel as in fit's default
    epoch, curve = 0, []
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        if state["k"] != args.k:
            raise SystemExit(f"{args.out} holds a k={state['k']} run, not k={args.k}")
        vae.load_state_dict(state["model"])
        adam.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        epoch, curve = state["epoch"], state["curve"]
        print(f"resuming {args.out} at epoch {epoch}")
    else:
        pyro.set_rng_seed(args.seed)
    return vae, adam, epoch, curve


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, choices=(1, 5), default=5, help="1: VAE, 5: IWAE")
    parser.add_argument("--out", type=Path, default=Path("runs/burda"))
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--train-size", type=int, default=60000)
    parser.add_argument("--eval-every", type=int, default=100, help="epochs between NLLs")
    parser.add_argument("--eval-points", type=int, default=10000, help="test images scored")
    parser.add_argument("--eval-samples", type=int, default=5000, help="IWAE samples")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger("pyro").setLevel(logging.WARNING)  # one "guessed nesting" per fit call
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    state_path, curve_path = args.out / "state.pt", args.out / "curve.csv"

    train = data.load("mnist", "train", root=args.root).x[: args.train_size]
    test = data.binarize(data.load("mnist", "test", root=args.root).x[: args.eval_points], seed=0)
    vae, adam, epoch, curve = start(args, state_path)

    loss = "elbo" if args.k == 1 else "iwae"
    paper = PAPER[args.k]
    print(
        f"k={args.k} ({'VAE' if args.k == 1 else 'IWAE'}), {total_epochs()} epochs in all; "
        f"paper's test NLL {paper}"
    )

    def evaluate_now():
        estimate = evaluate.log_likelihood(
            vae, test, num_samples=args.eval_samples, chunk_size=500, batch_size=50, psis=False
        )
        nll = -estimate.mean
        curve.append(
            {"epoch": epoch, "nll": nll, "points": test.shape[0], "samples": args.eval_samples}
        )
        print(
            f"epoch {epoch:5d}: test NLL {nll:.2f} nats (IWAE-{args.eval_samples}, "
            f"{test.shape[0]} images); paper {paper} (gap {nll - paper:+.2f})",
            flush=True,
        )
        with open(curve_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["epoch", "nll", "points", "samples"])
            writer.writeheader()
            writer.writerows(curve)

    def save_now():
        state = {
            "k": args.k,
            "epoch": epoch,
            "model": vae.state_dict(),
            "optimizer": adam.state_dict(),
            "rng": torch.get_rng_state(),
            "curve": curve,
        }
        _save(state, state_path)

    while epoch < total_epochs():
        if args.max_minutes is not None and time.monotonic() - began > 60 * args.max_minutes:
            print(f"stopped after {args.max_minutes} min at epoch {epoch}; run again to resume")
            break
        for group in adam.param_groups:
            group["lr"] = lr_at(epoch)
        history = probae.fit(
            vae,
            train,
            epochs=1,
            batch_size=20,
            loss=loss,
            num_particles=args.k,
            binarize="dynamic",
            optimizer=lambda params: adam,
            progress=False,
        )
        epoch += 1
        print(
            f"epoch {epoch:5d}: lr {lr_at(epoch - 1):.2e}, train loss {history.train_loss[-1]:.2f}",
            flush=True,
        )
        if epoch % args.eval_every == 0 or epoch == total_epochs():
            evaluate_now()
        save_now()
    if not curve or curve[-1]["epoch"] != epoch:
        evaluate_now()
        save_now()


if __name__ == "__main__":
    main()
