"""Disentanglement metrics of the beta-VAE, beta-TCVAE and FactorVAE on dSprites,
on a small CPU budget.

Every model: z_dim=10, MLP networks (512, 256) on the flattened 64x64 images, Bernoulli
likelihood, Adam at lr 1e-3, batch 64, trained for ``--steps`` steps on a seeded
sample of ``--train`` dSprites images; the metrics (probae.evaluate.disentanglement)
on 10,000 of those points. Writes one JSON line per model to ``--out``.

    nice -n 10 python bench/disentanglement_dsprites.py --train 20000 --steps 1250
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

import probae
from probae import VAE, BetaTCVAE, FactorVAE, dsprites, evaluate, viz

HIDDEN = (512, 256)


def models(n: int, which):
    shape = (64 * 64,)
    table = {
        "beta-vae-1": lambda: VAE(shape, 10, beta=1.0, hidden=HIDDEN),
        "beta-vae-4": lambda: VAE(shape, 10, beta=4.0, hidden=HIDDEN),
        "beta-vae-16": lambda: VAE(shape, 10, beta=16.0, hidden=HIDDEN),
        "beta-tcvae-6": lambda: BetaTCVAE(shape, 10, beta=6.0, dataset_size=n, hidden=HIDDEN),
        "factor-vae-30": lambda: FactorVAE(
            shape, 10, gamma=30.0, discriminator_hidden=(256, 256), hidden=HIDDEN
        ),
    }
    return {name: table[name] for name in which}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="disentanglement_dsprites.jsonl")
    parser.add_argument(
        "--pictures", default=None, help="folder for each model's traversals and MI heat map"
    )
    parser.add_argument(
        "--models",
        nargs="*",
        default=["beta-vae-1", "beta-vae-4", "beta-tcvae-6", "factor-vae-30", "beta-vae-16"],
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    began = time.perf_counter()
    data = dsprites.load("train", size=args.train, flatten=True)
    print(f"rendered {args.train} images in {time.perf_counter() - began:.0f}s", flush=True)
    epochs = max(1, math.ceil(args.steps * 64 / args.train))
    for name, build in models(args.train, args.models).items():
        began = time.perf_counter()
        model = build()
        history = probae.fit(
            model, data, epochs=epochs, batch_size=64, seed=args.seed, progress=False
        )
        trained = time.perf_counter() - began
        scores = evaluate.disentanglement(model, data, num_points=10_000, seed=0)
        elbo = evaluate.elbo(model, data[:2000]).mean().item()
        row = {
            "model": name,
            "epochs": epochs,
            "steps": epochs * math.ceil(args.train / 64),
            "train_seconds": round(trained),
            "elbo": elbo,
            "train_loss": history.train_loss[-1],
            **scores.as_dict(),
        }
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        probae.save(model, f"{args.out}.{name}", overwrite=True)
        if args.pictures:
            pictures(model, data, name, args.pictures)


def pictures(model, data, name, folder):
    """Latent traversals from the code of the first image, and the MI heat map."""
    viz.traversal(model, x=data.x[:1], span=2.5, path=f"{folder}/{name}_traversals.png")
    viz.factor_vs_latent(model, data, f"{folder}/{name}_mi.png")


if __name__ == "__main__":
    main()
