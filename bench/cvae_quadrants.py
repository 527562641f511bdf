"""Quadrant completion: negative conditional log-likelihood of a CVAE and of a
deterministic baseline, for 1, 2 and 3 observed quadrants, beside the figures of
Pyro's CVAE tutorial.

Protocol (the tutorial's, on a budget):

- c is the observed quadrant(s) in grey levels, x the unseen pixels; quadrants are
  observed in the order bottom-left, top-left, top-right.
- Training targets x are binarized afresh at every step (``binarize="dynamic"``):
  for a fixed prediction p the expected Bernoulli negative log-likelihood of a draw
  b ~ Bernoulli(x) is the cross-entropy of p against the grey level x, the
  tutorial's training loss. Test targets are binarized once (seed 1).
- Early stopping as in the tutorial (patience 3 epochs), but on a validation split
  held out from the training set (the last 10%), not on the test set.
- Networks as in the tutorial: MLPs with two hidden layers of 500, z of dimension 200.
- Reported on the test set, in nats per image: the 10-particle Monte Carlo estimate
  of the negative conditional ELBO (what the tutorial's table holds: Trace_ELBO with
  num_particles=10, guide q(z|x, c)), the importance-weighted estimate of
  -log p(x|c) beside it, and for the baseline its grey-level cross-entropy too.

    python bench/cvae_quadrants.py --dataset digits --epochs 300
    python bench/cvae_quadrants.py --dataset mnist --root ../shared/data --epochs 10
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time

import torch

import probae
from probae import CVAE, ConditionalBaseline, data, evaluate

#: Pyro's CVAE tutorial, MNIST, -log p(x|c) in nats ("NN (baseline)", "CVAE (Monte Carlo)")
TUTORIAL = {1: (100.4, 71.8), 2: (61.9, 51.0), 3: (25.4, 24.2)}


def train(model, train_set, validation, args) -> dict:
    """Fits epoch by epoch (resuming from a checkpoint, so Adam and the RNG carry on)
    and keeps the weights of the best validation loss; stops after ``patience`` epochs
    without improvement."""
    best, best_epoch, best_state, seconds = float("inf"), 0, None, 0.0
    with tempfile.TemporaryDirectory() as folder:
        for epoch in range(1, args.epochs + 1):
            began = time.perf_counter()
            history = probae.fit(
                model,
                train_set,
                epochs=epoch,
                batch_size=args.batch_size,
                lr=args.lr,
                binarize="dynamic",
                validation=validation,
                checkpoint_dir=folder,
                resume=True,
                seed=args.seed,
            )
            seconds += time.perf_counter() - began
            if history.val_loss[-1] < best:
                best, best_epoch = history.val_loss[-1], epoch
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= args.patience:
                break
    model.load_state_dict(best_state)
    return {"epochs_run": epoch, "best_epoch": best_epoch, "train_seconds": seconds}


def score(model, test, args) -> dict:
    began = time.perf_counter()
    elbo = evaluate.conditional_elbo(model, test, num_particles=args.particles)
    ll = evaluate.conditional_log_likelihood(model, test, num_samples=args.iw_samples)
    return {
        "neg_elbo_mc": -elbo.mean().item(),
        "neg_log_likelihood_iw": -ll.mean,
        "iw_stderr": ll.stderr,
        "eval_seconds": time.perf_counter() - began,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    parser.add_argument("--root", default=None)
    parser.add_argument("--observed", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=300, help="most epochs per model")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=None, help="a subset of the training set")
    parser.add_argument("--z-dim", type=int, default=200)
    parser.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--particles", type=int, default=10, help="particles of the MC ELBO")
    parser.add_argument("--iw-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = []
    for observed in args.observed:
        task = data.quadrants(args.dataset, observed=observed, root=args.root, binarize=False)
        train_set = task.train if args.train_size is None else task.train[: args.train_size]
        held_out = len(train_set) // 10
        fit_set, validation = train_set[: len(train_set) - held_out], train_set[-held_out:]
        test = data.binarize(task.test, seed=1)
        hidden = tuple(args.hidden)
        models = {
            "baseline": ConditionalBaseline.for_task(task, hidden=hidden),
            "CVAE": CVAE.for_task(task, z_dim=args.z_dim, hidden=hidden, prior_hidden=hidden),
        }
        for name, model in models.items():
            row = {"observed": observed, "model": name}
            row.update(train(model, fit_set, validation, args))
            row.update(score(model, test, args))
            if name == "baseline":
                p = model.predict(task.test.c).clamp(1e-7, 1 - 1e-7)
                grey = task.test.x
                cross_entropy = -(grey * p.log() + (1 - grey) * (1 - p).log()).sum(-1)
                row["grey_cross_entropy"] = cross_entropy.mean().item()
            row["tutorial"] = TUTORIAL[observed][0 if name == "baseline" else 1]
            results.append(row)
            print(json.dumps(row), flush=True)

    print()
    print(
        f"{args.dataset}, train {len(fit_set)} / validation {len(validation)} / test {len(test)}, "
        f"at most {args.epochs} epochs (patience {args.patience}), z {args.z_dim}, hidden {hidden}"
    )
    print(
        f"| observed | model | -ELBO, MC ({args.particles} particles) "
        f"| -log p(x|c), IW (S={args.iw_samples}) | grey-level cross-entropy "
        "| tutorial (MNIST) | epochs (best) | train s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in results:
        grey = f"{row['grey_cross_entropy']:.1f}" if "grey_cross_entropy" in row else ""
        print(
            f"| {row['observed']} | {row['model']} | {row['neg_elbo_mc']:.1f} "
            f"| {row['neg_log_likelihood_iw']:.1f} | {grey} | {row['tutorial']} "
            f"| {row['epochs_run']} ({row['best_epoch']}) | {row['train_seconds']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
