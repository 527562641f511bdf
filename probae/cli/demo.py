"""``probae demo``: the first try, a VAE trained on the built-in digits, its pictures,
and its test ELBO and importance-weighted log-likelihood estimate.
"""

from __future__ import annotations

from pathlib import Path

from .. import rundir
from ..saving import CHECKPOINT_NAME
from .evaluate import _evaluate, _print_metrics
from .options import _add_device, _add_progress, _add_threads
from .runs import (
    CONFIG_NAME,
    METRICS_NAME,
    CommandError,
    _check_config,
    _complete,
    _device,
    _positive,
    _write_json,
)
from .train import _train

DEMO_EPOCHS = 300
#: the file that marks a folder as written by probae demo (which may replace it)
DEMO_MARK = ".probae-demo"


def add_parser(commands) -> None:
    """Adds ``demo`` and its options to the subcommands ``commands``."""
    demo = commands.add_parser(
        "demo",
        help="train a VAE on the built-in digits, draw pictures, print test ELBO and IWAE",
        description="The main job: train a VAE (z_dim 8, MLP 256-256, Bernoulli pixels "
        "with dynamic binarization) on the 8x8 digits that ship with scikit-learn, write "
        "six pictures (history, rate_distortion, kl_per_dimension, samples, "
        "reconstructions, latent .png), and print the test ELBO and the IWAE "
        "log-likelihood estimate in nats per image. A run directory of an earlier demo is "
        "replaced; any other folder that is not empty is refused unless --overwrite.",
    )
    demo.add_argument(
        "--run-dir",
        metavar="DIR",
        default="probae-demo",
        help="run directory (default: probae-demo)",
    )
    demo.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run directory even if it holds files probae demo did not write "
        "(a training run, for instance)",
    )
    demo.add_argument(
        "--epochs",
        metavar="N",
        type=int,
        default=DEMO_EPOCHS,
        help=f"training epochs (default: {DEMO_EPOCHS}, about 50 s of one CPU core with "
        "the evaluation; longer while the cores are busy)",
    )
    demo.add_argument(
        "--num-samples",
        metavar="S",
        type=int,
        default=1000,
        help="importance samples per test image for the log-likelihood (default: 1000)",
    )
    demo.add_argument("--seed", metavar="N", type=int, default=0, help="seed (default: 0)")
    _add_device(demo)
    _add_threads(demo, 1)
    _add_progress(demo)


def cmd_demo(args) -> int:
    run_dir = Path(args.run_dir)
    _positive("--num-samples", args.num_samples)
    config = _check_config(_complete({"seed": args.seed}))
    config["epochs"] = _positive("--epochs", args.epochs)
    device = _device(args.device)
    with rundir.lock(run_dir):
        _check_demo_folder(run_dir, args.overwrite)
        for stale in (CONFIG_NAME, CHECKPOINT_NAME, METRICS_NAME):
            (run_dir / stale).unlink(missing_ok=True)
        (run_dir / DEMO_MARK).touch()
        print(
            f"training a VAE (z_dim {config['z_dim']}, Bernoulli pixels, dynamic binarization) "
            f"on the 8x8 digits for {config['epochs']} epochs ..."
        )
        model, _, seconds, pictures = _train(config, run_dir, False, device, args.progress)
    print(f"trained in {seconds:.1f} s; pictures: {', '.join(str(p) for p in pictures)}")
    metrics = _evaluate(model, config, "test", args.num_samples, 500, 100, args.seed)
    _print_metrics(metrics, config)
    _write_json(metrics, run_dir / METRICS_NAME)
    return 0


def _check_demo_folder(run_dir: Path, overwrite: bool) -> None:
    """Refuses a run directory holding files of anything but an earlier demo."""
    if overwrite or (run_dir / DEMO_MARK).is_file():
        return
    found = sorted(p.name for p in run_dir.iterdir() if p.name != rundir.LOCK_NAME)
    if found:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise CommandError(
            f"--run-dir {str(run_dir)!r} holds files probae demo did not write ({shown}); "
            "choose another folder, or pass --overwrite to replace them"
        )
