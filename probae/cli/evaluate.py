"""``probae evaluate``: a trained run's ELBO and importance-weighted log-likelihood
estimate (or a point-mass guide's objective), printed and written to ``metrics.json``;
with ``--disentanglement``, the metrics against a data set's known factors.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pyro

from .. import evaluate as estimators
from .. import importance
from .._common import device_of
from ..models.autoencoders import DeterministicAutoencoder
from .options import _add_device, _add_threads
from .runs import (
    METRICS_NAME,
    CommandError,
    _condition,
    _device,
    _evaluation_data,
    _per,
    _positive,
    _write_json,
    load_run,
)


def add_parser(commands) -> None:
    """Adds ``evaluate`` and its options to the subcommands ``commands``."""
    ev = commands.add_parser(
        "evaluate",
        help="print the test ELBO and the IWAE log-likelihood estimate of a trained run",
        description="Rebuild a trained model from its run directory and print, in nats per "
        "point with standard errors over points, its ELBO and the importance-weighted "
        "(IWAE) estimate of log p(x) (of log p(x|c), c the label, for cvae). A "
        "deterministic autoencoder has a point-mass guide and so no density: its "
        "per-point objective (the negative training loss) is printed instead. Data are "
        "binarized once (seed 0) when the run was trained on binarized data. The "
        "figures also go to metrics.json.",
    )
    ev.add_argument("run_dir", help="run directory written by probae train")
    ev.add_argument(
        "--split", choices=["test", "train"], default="test", help="data split (default: test)"
    )
    ev.add_argument(
        "--num-samples",
        metavar="S",
        type=int,
        default=1000,
        help="importance samples per point for the log-likelihood (default: 1000)",
    )
    ev.add_argument(
        "--chunk-size",
        metavar="S",
        type=int,
        default=500,
        help="importance samples drawn at once; lower it to save memory (default: 500)",
    )
    ev.add_argument(
        "--batch-size",
        metavar="N",
        type=int,
        default=100,
        help="points evaluated at once (default: 100)",
    )
    ev.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=0,
        help="seed of the Monte Carlo estimates (default: 0)",
    )
    ev.add_argument(
        "--disentanglement",
        action="store_true",
        help="also the disentanglement metrics against the data set's known factors "
        "(dsprites): BetaVAE and FactorVAE scores, MIG, SAP, DCI, modularity, explicitness",
    )
    _add_device(ev)
    _add_threads(ev, 0)


def _evaluate(model, config, split, num_samples, chunk_size, batch_size, seed) -> dict:
    test = _evaluation_data(config, split)
    c = _condition(model, test)
    pyro.set_rng_seed(seed)
    elbo = estimators.elbo(model, test, batch_size=max(batch_size, 1), c=c)
    n = elbo.numel()
    # A point-mass guide makes the ELBO the training objective itself, and nothing more.
    name = "objective" if isinstance(model, DeterministicAutoencoder) else "elbo"
    metrics = {
        "split": split,
        "points": n,
        name: elbo.mean().item(),
        f"{name}_stderr": (elbo.std() / math.sqrt(n)).item() if n > 1 else float("nan"),
    }
    if c is not None:
        metrics["condition"] = "label"
    x = test.x[:2].to(device_of(model))
    try:
        importance.check_guide_has_density(model.guide, (x, None if c is None else c[:2]), "")
    except ValueError:
        return metrics  # a Delta guide has no importance weights
    with warnings.catch_warnings():
        # the same diagnosis is printed below as a number, in its own line
        warnings.filterwarnings("ignore", message="For .* too heavy-tailed to trust")
        ll = estimators.log_likelihood(
            model, test, num_samples=num_samples, chunk_size=chunk_size, batch_size=batch_size, c=c
        )
    metrics.update(log_likelihood=ll.mean, log_likelihood_stderr=ll.stderr, num_samples=num_samples)
    if ll.khat is not None:
        metrics.update(
            khat_threshold=ll.khat_threshold, khat_unreliable_fraction=ll.fraction_unreliable
        )
    return metrics


def _print_metrics(metrics: dict, config: dict) -> None:
    unit = _per(config)
    per = f"nats per {unit}"
    split = metrics["split"]
    conditional = "conditional " if "condition" in metrics else ""
    first = "objective" if "objective" in metrics else "ELBO"
    width = len(f"{conditional}log-likelihood: ")
    label = f"{conditional}{first}:".ljust(width)
    value = metrics.get("objective", metrics.get("elbo"))
    stderr = metrics.get("objective_stderr", metrics.get("elbo_stderr"))
    what = "minus the training loss; " if first == "objective" else ""
    print(f"{split} {label}{value:.3f} ± {stderr:.3f} {per} ({what}{metrics['points']} {unit}s)")
    if "log_likelihood" in metrics:
        bound = " of log p(x|c)" if conditional else ""
        print(
            f"{split} {conditional}log-likelihood: {metrics['log_likelihood']:.3f} ± "
            f"{metrics['log_likelihood_stderr']:.3f} {per} "
            f"(IWAE estimate{bound}, {metrics['num_samples']} importance samples)"
        )
        if "khat_threshold" in metrics:
            print(
                f"{split} PSIS k-hat above {metrics['khat_threshold']:.2f}: "
                f"{metrics['khat_unreliable_fraction']:.1%} of {unit}s "
                "(their estimates rest on a few heavy weights)"
            )
    else:
        print(
            f"{split} log-likelihood: not available (the guide is a point mass, with no "
            "density to importance-weight by)"
        )


def cmd_evaluate(args) -> int:
    _positive("--num-samples", args.num_samples)
    _positive("--chunk-size", args.chunk_size)
    _positive("--batch-size", args.batch_size)
    model, config = load_run(args.run_dir, _device(args.device))
    metrics = _evaluate(
        model, config, args.split, args.num_samples, args.chunk_size, args.batch_size, args.seed
    )
    if args.disentanglement:
        data = _evaluation_data(config, args.split)
        if data.factors is None:
            raise CommandError(
                f"--disentanglement needs a data set with known factors (dsprites); "
                f"{config['data']!r} has none"
            )
        scores = estimators.disentanglement(model, data, seed=args.seed)
        metrics["disentanglement"] = scores.as_dict()
    _print_metrics(metrics, config)  # first: a failure to write them loses nothing
    if args.disentanglement:
        print(f"{args.split} {scores}")
    _write_json(metrics, Path(args.run_dir) / METRICS_NAME)
    return 0
