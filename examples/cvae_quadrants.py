"""Structured output prediction: complete an image from one, two or three of its quadrants.

A CVAE (learned prior p(z|c), c the observed quadrants, x the unseen pixels) and a
deterministic baseline network are trained by the same loop and scored side by
side: the 10-particle conditional ELBO (the quantity of Pyro's CVAE tutorial) and
the importance-weighted estimate of -log p(x|c), in nats per image. Draws a grid of
completions.

    python examples/cvae_quadrants.py --epochs 40 --observed 1 --out cvae_quadrants
    python examples/cvae_quadrants.py --dataset mnist --root ../shared/data --epochs 5
"""

import argparse
import dataclasses
import time
from pathlib import Path

import torch

import probae
from probae import CVAE, ConditionalBaseline, data, evaluate, viz


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", default="cvae_quadrants", help="folder for the picture")
    parser.add_argument("--observed", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--dataset", default="digits", choices=("digits", "mnist", "fashion-mnist"))
    parser.add_argument("--root", default=None, help="data folder for the MNIST family")
    parser.add_argument("--z-dim", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    task = data.quadrants(args.dataset, observed=args.observed, root=args.root)
    task = dataclasses.replace(
        task, train=task.train.to(args.device), test=task.test.to(args.device)
    )
    baseline = ConditionalBaseline.for_task(task).to(args.device)
    cvae = CVAE.for_task(task, z_dim=args.z_dim).to(args.device)
    rows = []
    for name, model in (("baseline", baseline), ("CVAE", cvae)):
        began = time.perf_counter()
        probae.fit(model, task.train, epochs=args.epochs, seed=args.seed)
        seconds = time.perf_counter() - began
        elbo = evaluate.conditional_elbo(model, task.test, num_particles=10)
        ll = evaluate.conditional_log_likelihood(model, task.test, num_samples=100)
        rows.append((name, -elbo.mean().item(), -ll.mean, seconds))

    print(f"{task.name}, {task.observed} observed quadrant(s), {args.epochs} epochs")
    print(
        f"{'model':<10}{'-ELBO (10 particles)':>22}{'-log p(x|c) (IW, S=100)':>26}{'seconds':>10}"
    )
    for name, mc, iw, seconds in rows:
        print(f"{name:<10}{mc:>22.2f}{iw:>26.2f}{seconds:>10.1f}")

    path = viz.quadrant_completions(
        cvae, task, baseline=baseline, path=Path(args.out) / f"completions_q{task.observed}.png"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
