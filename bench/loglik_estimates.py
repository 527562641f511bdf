"""How far off is the log-likelihood? IWAE, PSIS, AIS and BDMC on the same trained VAEs.

Trains a VAE with loss="elbo" and one with loss="iwae" (K=50) on a short budget, then
prints, on the same test points: the IWAE estimate with S importance samples and its
PSIS k-hat fraction, AIS estimates at one or more schedule lengths, and the BDMC gap
on data simulated from the ELBO-trained model.

    PYTHONPATH=. python bench/loglik_estimates.py --data digits
    PYTHONPATH=. python bench/loglik_estimates.py --data mnist --root ../shared/data \\
        --train-size 5000 --epochs 5 --points 20
"""

import argparse
import time

import torch

import probae
from probae import VAE, data, evaluate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=["digits", "mnist"])
    parser.add_argument("--root", default=None)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--points", type=int, default=50, help="test points evaluated")
    parser.add_argument("--iwae-samples", type=int, default=5000)
    parser.add_argument("--ais-steps", type=int, nargs="*", default=[1000])
    parser.add_argument(
        "--ais-points",
        type=int,
        nargs="+",
        default=None,
        help="test points per AIS schedule (default: --points)",
    )
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--leapfrog", type=int, default=5)
    parser.add_argument("--bdmc-steps", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--bdmc-points", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--losses", nargs="+", default=["elbo", "iwae"], choices=["elbo", "iwae"])
    args = parser.parse_args()
    torch.set_num_threads(1)

    train = data.load(args.data, split="train", root=args.root)
    test = data.load(args.data, split="test", root=args.root)
    if args.train_size:
        train = train[: args.train_size]
    test_x = data.binarize(test.x[: args.points], seed=0)
    ais_points = args.ais_points or [args.points] * len(args.ais_steps)

    for loss in args.losses:
        particles = 50 if loss == "iwae" else 1
        torch.manual_seed(args.seed)
        vae = VAE(x_shape=train.x.shape[1:], z_dim=args.z_dim)
        start = time.perf_counter()
        probae.fit(
            vae,
            train,
            epochs=args.epochs,
            batch_size=128,
            loss=loss,
            num_particles=particles,
            binarize="dynamic",
            seed=args.seed,
            progress=False,
        )
        print(
            f"\n== {args.data}: VAE trained with loss={loss!r} (K={particles}), "
            f"{args.epochs} epochs on {train.x.shape[0]} images, "
            f"{time.perf_counter() - start:.0f} s"
        )
        start = time.perf_counter()
        elbo = evaluate.elbo(vae, test_x, num_particles=100).mean().item()
        iwae = evaluate.log_likelihood(vae, test_x, num_samples=args.iwae_samples)
        print(
            f"ELBO {elbo:.2f} | IWAE-{args.iwae_samples} {iwae.mean:.2f} "
            f"(PSIS {iwae.psis_mean:.2f}, k-hat > {iwae.khat_threshold:.2f}: "
            f"{iwae.fraction_unreliable:.0%}) on {args.points} points, "
            f"{time.perf_counter() - start:.0f} s"
        )
        for steps, points in zip(args.ais_steps, ais_points, strict=True):
            start = time.perf_counter()
            ais = evaluate.log_likelihood(
                vae,
                test_x[:points],
                method="ais",
                steps=steps,
                num_chains=args.chains,
                num_leapfrog=args.leapfrog,
            )
            same = iwae.values[:points].mean().item()
            print(
                f"AIS-{steps} ({args.chains} chains, HMC {args.leapfrog} leapfrog) "
                f"{ais.mean:.2f} on {points} points, where IWAE gives {same:.2f}: "
                f"AIS - IWAE = {ais.mean - same:+.2f} nats; accept {ais.acceptance:.2f}, "
                f"mean ESS {ais.ess.mean().item():.1f}, {time.perf_counter() - start:.0f} s"
            )
        if loss == "elbo" and args.bdmc_steps:
            start = time.perf_counter()
            gap = evaluate.bdmc(
                vae, num_points=args.bdmc_points, steps=args.bdmc_steps, num_leapfrog=args.leapfrog
            )
            print(gap)
            print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
