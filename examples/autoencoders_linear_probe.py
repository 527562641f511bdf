"""Feature quality of the deterministic autoencoders on the 8x8 digits: linear-probe accuracy.

Each autoencoder is trained with the settings of its example script; a logistic
regression (probae.evaluate.linear_probe) is fitted to the codes of the training images
and scored on the test images. Baselines: the raw pixels (64 values) and PCA with as many
components as the code has units. Prints a reST table (mean and standard deviation over
seeds) and writes it as CSV.

    python examples/autoencoders_linear_probe.py --epochs 100 --seeds 3 --out out/probe
"""

import argparse
import csv
import statistics
from pathlib import Path

import torch
from sklearn.decomposition import PCA

import probae
from probae import corruption, data, evaluate

#: name -> (code units, builder, learning rate), as in the example scripts
MODELS = {
    "AE": (32, lambda: probae.AE((64,), 32, hidden=(128,)), 1e-3),
    "DenoisingAE (masking 0.25)": (
        32,
        lambda: probae.DenoisingAE(
            (64,), 32, corruption=corruption.MaskingNoise(0.25), hidden=(128,)
        ),
        1e-3,
    ),
    "SparseAE (l1)": (32, lambda: probae.SparseAE((64,), 32, penalty="l1", hidden=(128,)), 1e-3),
    "SparseAE (kl)": (32, lambda: probae.SparseAE((64,), 32, penalty="kl", hidden=(128,)), 1e-3),
    "KSparseAE (k=10)": (64, lambda: probae.KSparseAE((64,), 64, k=10), 3e-3),
    "ContractiveAE": (32, lambda: probae.ContractiveAE((64,), 32, weight=0.1), 1e-3),
}


def pca_probe(train, test, components: int, seed: int) -> float:
    pca = PCA(components, random_state=seed).fit(train.x.cpu().numpy())

    def project(x):  # scikit-learn works on the host; the codes go back to x's device
        return torch.as_tensor(pca.transform(x.cpu().numpy())).to(x.device, x.dtype)

    return evaluate.linear_probe(project, train, test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="training epochs per model")
    parser.add_argument("--seeds", type=int, default=3, help="training runs per model")
    parser.add_argument("--out", type=Path, default=Path("out/probe"), help="folder for the CSV")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small networks: one thread is fastest

    train = data.load("digits", "train").to(args.device)
    test = data.load("digits", "test").to(args.device)
    raw = evaluate.linear_probe(lambda x: x, train, test)
    rows = []
    for name, (units, build, lr) in MODELS.items():
        scores = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = build().to(args.device)
            probae.fit(model, train, epochs=args.epochs, batch_size=64, lr=lr, seed=seed)
            scores.append(evaluate.linear_probe(model, train, test))
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        pca = pca_probe(train, test, units, 0)
        rows.append((name, units, statistics.mean(scores), spread, pca))
        print(f"{name}: " + ", ".join(f"{a:.3f}" for a in scores), flush=True)

    header = ("model", "code units", "accuracy", "sd", "PCA (same units)", "raw pixels (64)")
    lines = [
        (name, str(units), f"{mean:.3f}", f"{sd:.3f}", f"{pca:.3f}", f"{raw:.3f}")
        for name, units, mean, sd, pca in rows
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    print(f"\nlinear-probe test accuracy on digits ({args.epochs} epochs, {args.seeds} seeds)\n")
    print(rule)
    for line in [header, None, *lines]:
        cells = () if line is None else zip(line, widths, strict=True)
        print(rule if line is None else "  ".join(c.ljust(w) for c, w in cells).rstrip())
    print(rule)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "linear_probe.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(lines)
    print("wrote", args.out / "linear_probe.csv")


if __name__ == "__main__":
    main()
