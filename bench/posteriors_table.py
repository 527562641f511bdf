"""The posteriors table of docs/posteriors.rst: one VAE per posterior family, trained
with the same networks, epochs and seed on dynamically binarized data, then measured
on the statically binarized test set (seed 0):

- the test ELBO and the IWAE estimate of log p(x) with ``--num-samples`` samples;
- on the first ``--gap-points`` test points, the inference gaps of Cremer et al.
  (2018): log p(x) from the IWAE estimate above, L[q*] by per-point optimization,
  L[q] the amortized ELBO (``evaluate.inference_gaps``).

``--hierarchies`` adds two-layer ``HierarchicalVAE`` s (z_dims = (z_dim, z_dim / 2),
the same networks between x and z1) with bottom-up and with ladder inference, which
have no single posterior family and so no gaps. ``--warmup N`` trains every model
with N epochs of KL warm-up (the ladder's recipe, Sønderby et al. 2016).

It is a script, not a test. Example (about two minutes on one CPU thread)::

    python bench/posteriors_table.py --epochs 100
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from probae import VAE, HierarchicalVAE, data, evaluate, fit, schedules

POSTERIORS = ("diagonal", "full", "planar:4", "iaf:4")
HIERARCHIES = ("bottom-up", "ladder")


def run(spec: str, train, test, args) -> dict:
    torch.manual_seed(args.seed)
    x_shape = tuple(train.x.shape[1:])
    if spec in HIERARCHIES:
        z_dims = (args.z_dim, max(1, args.z_dim // 2))
        vae = HierarchicalVAE(
            x_shape, z_dims, hidden=tuple(args.hidden), hidden_between=(64, 64), inference=spec
        )
    else:
        vae = VAE(x_shape, args.z_dim, hidden=tuple(args.hidden), posterior=spec)
    start = time.perf_counter()
    warmup = {"kl_schedule": schedules.KLWarmup(args.warmup)} if args.warmup else {}
    fit(
        vae, train, epochs=args.epochs, batch_size=100, binarize="dynamic", progress=False, **warmup
    )
    seconds = time.perf_counter() - start
    torch.manual_seed(args.seed)
    elbo = evaluate.elbo(vae, test, num_particles=10).mean().item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the k-hat notice; the fraction is reported
        ll = evaluate.log_likelihood(vae, test, num_samples=args.num_samples)
    row = {"posterior": spec, "elbo": elbo, "iwae": ll.mean, "train_s": seconds}
    if spec in HIERARCHIES:
        return {**row, "approximation": float("nan"), "amortization": float("nan"), "steps": 0}
    points = test.x[: args.gap_points]
    gaps = evaluate.inference_gaps(
        vae, points, log_likelihood=ll.values[: args.gap_points], max_steps=args.gap_steps
    )
    return {
        **row,
        "approximation": gaps.approximation.mean().item(),
        "amortization": gaps.amortization.mean().item(),
        "steps": gaps.steps,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--gap-points", type=int, default=50)
    parser.add_argument("--gap-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--posteriors", nargs="+", default=list(POSTERIORS))
    parser.add_argument("--hierarchies", action="store_true")
    parser.add_argument("--warmup", type=int, default=0, help="epochs of KL warm-up, 0: none")
    args = parser.parse_args(argv)
    if args.hierarchies:
        args.posteriors = [*args.posteriors, *HIERARCHIES]
    torch.set_num_threads(1)
    train = data.load("digits", split="train")
    test = data.binarize(data.load("digits", split="test"), seed=0)
    print(
        f"digits, z_dim={args.z_dim}, hidden={args.hidden}, {args.epochs} epochs, "
        f"KL warm-up {args.warmup} epochs, IWAE-{args.num_samples}; gaps on "
        f"{args.gap_points} test points"
    )
    print(
        f"{'posterior':<10} {'ELBO':>9} {'IWAE':>9} {'approx.':>8} {'amort.':>8} "
        f"{'steps':>6} {'train s':>8}"
    )
    for spec in args.posteriors:
        r = run(spec, train, test, args)
        print(
            f"{r['posterior']:<10} {r['elbo']:9.3f} {r['iwae']:9.3f} {r['approximation']:8.3f} "
            f"{r['amortization']:8.3f} {r['steps']:6d} {r['train_s']:8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
