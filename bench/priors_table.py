"""The priors table of docs/priors.rst: each prior trained with the ELBO and with the
IWAE objective, then measured on the test set.

For every prior (standard normal, Gaussian mixture, VampPrior, flow) and objective
(ELBO, IWAE with k=5) it trains a VAE on dynamically binarized data, and reports on
the statically binarized test set (seed 0):

- the IWAE estimate of log p(x) with ``--num-samples`` importance samples, and the
  fraction of points whose PSIS k-hat exceeds the reliability threshold;
- the number of active units (Burda et al.);
- ELBO surgery: the average KL, the index-code mutual information and the
  marginal KL (Hoffman & Johnson), with Monte Carlo standard errors;
- for the mixture, the clustering accuracy of its components against the labels.

It is a script, not a test: the full digits table takes about ten minutes on one
CPU thread. Examples::

    python bench/priors_table.py --dataset digits --epochs 500
    python bench/priors_table.py --dataset mnist --root ../shared/data --epochs 5 \\
        --z-dim 40 --pseudo-inputs 500 --test-points 300
    python bench/priors_table.py --figure docs/_static/aggregate_posterior.png --epochs 300
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import torch

from probae import VAE, data, evaluate, fit, nets, priors
from probae.viz import aggregate_posterior

PRIORS = ("standard-normal", "mixture", "vamp", "flow")
LOSSES = ("elbo", "iwae")


def build(prior_name: str, x_shape, z_dim: int, train, args) -> VAE:
    encoder = nets.make_encoder(x_shape, z_dim)
    if prior_name == "standard-normal":
        prior = priors.StandardNormal(z_dim)
    elif prior_name == "mixture":
        prior = priors.GaussianMixture(z_dim, args.components, enumerate=True)
    elif prior_name == "vamp":
        generator = torch.Generator().manual_seed(args.seed)
        rows = torch.randperm(len(train), generator=generator)[: args.pseudo_inputs]
        prior = priors.VampPrior(encoder, pseudo_inputs=train.x[rows])
    elif prior_name == "flow":
        prior = priors.Flow(z_dim, transforms=args.flow_layers)
    else:
        raise ValueError(f"unknown prior {prior_name!r}; expected one of {PRIORS}")
    return VAE(x_shape, z_dim, prior=prior, encoder=encoder)


def run(prior_name: str, loss: str, train, test, args) -> dict:
    torch.manual_seed(args.seed)
    x_shape = tuple(train.x.shape[1:])
    model = build(prior_name, x_shape, args.z_dim, train, args)
    began = time.perf_counter()
    history = fit(
        model,
        train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        loss=loss,
        num_particles=args.k if loss == "iwae" else 1,
        lr=args.lr,
        binarize="dynamic",
        seed=args.seed,
        progress=False,
    )
    train_seconds = time.perf_counter() - began
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k-hat goes into the table instead
        ll = evaluate.log_likelihood(model, test, num_samples=args.num_samples)
    units = evaluate.active_units(model, test)
    surgery = evaluate.elbo_surgery(model, test, num_samples=args.surgery_samples)
    row = {
        "prior": prior_name,
        "loss": loss if loss == "elbo" else f"iwae (k={args.k})",
        "epochs": args.epochs,
        "final_train_loss": history.train_loss[-1],
        "log_likelihood": ll.mean,
        "log_likelihood_stderr": ll.stderr,
        "psis_log_likelihood": ll.psis_mean,
        "khat_threshold": ll.khat_threshold,
        "fraction_khat_above": ll.fraction_unreliable,
        "active_units": units.count,
        "z_dim": args.z_dim,
        "average_kl": surgery.average_kl,
        "mutual_information": surgery.mutual_information,
        "marginal_kl": surgery.marginal_kl,
        "average_kl_stderr": surgery.average_kl_stderr,
        "mutual_information_stderr": surgery.mutual_information_stderr,
        "marginal_kl_stderr": surgery.marginal_kl_stderr,
        "log_num_points": surgery.log_num_points,
        "train_seconds": train_seconds,
        "eval_seconds": None,
    }
    if prior_name == "mixture" and test.y is not None:
        assignments = evaluate.cluster(model, test, num_samples=100)
        row["clustering_accuracy"] = evaluate.clustering_accuracy(assignments, test.y)
        row["components_used"] = int(assignments.unique().numel())
    row["eval_seconds"] = time.perf_counter() - began
    return row


def markdown(rows) -> str:
    lines = [
        "| prior | objective | test log p(x) (nats) | k-hat > thr. | active units | "
        "avg KL | MI | marginal KL | cluster acc. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = f"{r['clustering_accuracy']:.1%}" if "clustering_accuracy" in r else "–"
        lines.append(
            f"| {r['prior']} | {r['loss']} | {r['log_likelihood']:.2f} ± "
            f"{r['log_likelihood_stderr']:.2f} | {r['fraction_khat_above']:.0%} | "
            f"{r['active_units']}/{r['z_dim']} | {r['average_kl']:.2f} | "
            f"{r['mutual_information']:.2f} ± {r['mutual_information_stderr']:.2f} | "
            f"{r['marginal_kl']:.2f} ± {r['marginal_kl_stderr']:.2f} | {acc} |"
        )
    return "\n".join(lines)


def figure(args, train) -> None:
    """The aggregate posterior of 2-D latent models under N(0, I) and under a mixture."""
    models = {}
    x_shape = tuple(train.x.shape[1:])
    for title, prior in (
        ("standard normal prior", priors.StandardNormal(2)),
        (f"mixture of {args.components} Gaussians", priors.GaussianMixture(2, args.components)),
    ):
        torch.manual_seed(args.seed)
        model = VAE(x_shape, 2, prior=prior)
        fit(
            model,
            train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            binarize="dynamic",
            seed=args.seed,
            progress=False,
        )
        models[title] = model
    path = aggregate_posterior(models, data.binarize(train, seed=0), args.figure)
    print(f"wrote {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", choices=["digits", "mnist", "fashion-mnist"])
    parser.add_argument("--root", default=None, help="folder holding MNIST/raw (MNIST family)")
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--k", type=int, default=5, help="particles of the IWAE objective")
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--pseudo-inputs", type=int, default=50)
    parser.add_argument("--flow-layers", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--surgery-samples", type=int, default=10)
    parser.add_argument("--test-points", type=int, default=None, help="first N test points")
    parser.add_argument("--priors", nargs="+", default=list(PRIORS), choices=PRIORS)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--figure", default=None, help="draw the aggregate-posterior figure")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    train = data.load(args.dataset, "train", root=args.root)
    if args.figure:
        figure(args, train)
        return
    test = data.binarize(data.load(args.dataset, "test", root=args.root), seed=0)
    if args.test_points is not None:
        test = test[: args.test_points]
    print(
        f"{args.dataset}: {len(train)} training and {len(test)} test points, "
        f"{args.epochs} epochs, z_dim={args.z_dim}, {args.num_samples} importance samples"
    )
    rows = []
    for prior_name in args.priors:
        for loss in args.losses:
            row = run(prior_name, loss, train, test, args)
            rows.append(row)
            print(
                f"{prior_name:16s} {row['loss']:12s} log p(x) {row['log_likelihood']:8.2f} "
                f"(psis {row['psis_log_likelihood']:.2f}, k-hat>{row['khat_threshold']:.2f}: "
                f"{row['fraction_khat_above']:.0%})  AU {row['active_units']}  "
                f"KL {row['average_kl']:.2f} = MI {row['mutual_information']:.2f} + "
                f"{row['marginal_kl']:.2f}"
                + (
                    f"  acc {row['clustering_accuracy']:.1%}"
                    if "clustering_accuracy" in row
                    else ""
                )
                + f"  [{row['train_seconds']:.0f}s + {row['eval_seconds']:.0f}s]",
                flush=True,
            )
    print()
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "rows": rows}, handle, indent=1)
    if any(not math.isfinite(r["log_likelihood"]) for r in rows):
        raise SystemExit("a log-likelihood is not finite")


if __name__ == "__main__":
    main()
