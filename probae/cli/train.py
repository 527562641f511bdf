"""``probae train``: build a model of any family from its options, fit it into a run
directory (checkpoint, history, pictures), or resume a run from its checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyro

from .. import __version__, rundir, saving, viz
from ..callbacks import CSVLogger, TensorBoard
from ..models import DRAW, VQVAE, families
from ..models.autoencoders import DeterministicAutoencoder
from ..saving import CHECKPOINT_NAME
from ..saving import read_checkpoint as load_checkpoint
from ..schedules import Capacity
from ..train import fit
from .options import (
    _add_device,
    _add_model_options,
    _add_progress,
    _add_threads,
    _add_training_options,
)
from .runs import (
    CONFIG_NAME,
    DEFAULTS,
    HISTORY_NAME,
    SAMPLES,
    CommandError,
    _binarize_arg,
    _check_config,
    _condition,
    _device,
    _load_data,
    _per,
    _positive,
    _read_config,
    _require,
    _resolve_config,
    _write_json,
)

TRAIN_EPOCHS = 100


def add_parser(commands) -> None:
    """Adds ``train`` and its options to the subcommands ``commands``."""
    train = commands.add_parser(
        "train",
        help="train a model and write a run directory",
        description="Train a model of any family (--model). The run directory receives "
        "config.json, checkpoint.pt (after every epoch), history.csv and pictures: "
        "reconstructions.png, latent.png, history.png, and samples.png (one row per class "
        "for cvae) or, for the deterministic autoencoders, which have no prior to sample "
        "from, filters.png (the encoder's first-layer weights).",
    )
    train.add_argument(
        "--run-dir",
        metavar="DIR",
        help="run directory (default: runs/DATA-MODEL, for instance runs/digits-vae)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its last checkpoint, with its stored "
        "options (only --epochs, --lr and --root may change); a run stopped before its "
        "first epoch ended starts over with its stored options; starts a new run if the "
        "folder holds none",
    )
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log every epoch to TensorBoard, in RUN_DIR/tensorboard "
        "(needs the tensorboard package)",
    )
    train.add_argument(
        "--compile",
        action="store_true",
        help="run the networks through torch.compile while training (each as one whole "
        "graph; refused if it breaks or changes the numbers); pays on a GPU, not on a CPU",
    )
    _add_model_options(train)
    _add_training_options(train, TRAIN_EPOCHS)
    _add_device(train)
    _add_threads(train, 0)
    _add_progress(train)


def _pictures(model, config: dict, run_dir: Path, history) -> list:
    """Writes the run's pictures; returns their paths."""
    held_out = "test"  # the test split is scored after every epoch, never trained on
    written = [viz.history_plot(history, run_dir / "history.png", validation=held_out)]
    if any(r is not None for r in history.rate):
        written.append(
            viz.rate_distortion(history, run_dir / "rate_distortion.png", validation=held_out)
        )
    if any(k is not None for k in history.kl_per_dim):
        written.append(
            viz.kl_per_dimension(history, run_dir / "kl_per_dimension.png", validation=held_out)
        )
    test = _load_data(config, "test")
    c = _condition(model, test)
    shape = test.image_shape
    if shape is not None:
        if c is not None:
            written.append(
                viz.class_samples(model, image_shape=shape, path=run_dir / "samples.png")
            )
        elif isinstance(model, DeterministicAutoencoder):
            if shape[0] == 1:  # filters are drawn in grey
                written.append(viz.filters(model, run_dir / "filters.png", image_shape=shape))
        elif isinstance(model, VQVAE):
            pass  # samples need a code prior, fitted by probae sample
        elif not getattr(model.prior, "improper", False):
            written.append(viz.sample_grid(model, SAMPLES, run_dir / "samples.png", seed=0))
        if isinstance(model, DRAW):
            written.append(viz.draw_canvas(model, run_dir / "canvas.png", seed=0))
        written.append(
            viz.reconstructions(
                model, test[:16], run_dir / "reconstructions.png", c=None if c is None else c[:16]
            )
        )
    if test.y is not None and not isinstance(model, VQVAE):  # a grid of codes: no scatter
        written.append(viz.latent_scatter(model, test, run_dir / "latent.png", c=c))
    return written


def _build(config: dict, train, run_dir: Path, device):
    """The untrained model of ``config``, its configuration written to ``run_dir``."""
    if config["binarize"] != "none" and ((train.x < 0) | (train.x > 1)).any():
        raise CommandError(
            f"data set {config['data']!r} has values outside [0, 1], which cannot be binarized "
            f"(--binarize {config['binarize']}); model real values with --likelihood gaussian "
            "or laplace"
        )
    config["x_shape"] = list(train.x.shape[1:])
    if "dataset_size" in families.family(config["model"]).options:
        config["dataset_size"] = config.get("dataset_size") or len(train)
    if families.family(config["model"]).conditional:
        if train.y is None:
            raise CommandError(
                f"--model {config['model']} is conditioned on labels, but data set "
                f"{config['data']!r} has none"
            )
        config["c_shape"] = [int(train.y.max()) + 1]
    pyro.set_rng_seed(config["seed"])
    model = families.build(config, config["x_shape"]).to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json({**config, "probae_version": __version__}, run_dir / CONFIG_NAME)
    saving.write_model_config(model, run_dir)  # the model's own options, as probae.save writes
    return model


def _fit(model, config: dict, train, run_dir: Path, resume: bool, progress, tensorboard, compile):
    """Fits ``model`` (after the greedy layer-wise phase of a stack); its history."""
    if config.get("epochs_per_layer") and not resume:
        # greedy layer-wise training first, in run_dir/pretrain/layer-K; a run stopped
        # there continues where it stopped, and once the whole stack has a checkpoint
        # that checkpoint holds everything
        model.pretrain(
            train,
            epochs_per_layer=config["epochs_per_layer"],
            batch_size=config["batch_size"],
            lr=config["lr"],
            binarize=_binarize_arg(config),
            checkpoint_dir=run_dir / "pretrain",
            resume=True,
            seed=config["seed"],
            progress=progress,
        )
    return fit(
        model,
        train,
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        loss=config["loss"],
        num_particles=config["num_particles"],
        lr=config["lr"],
        binarize=_binarize_arg(config),
        beta_warmup=config.get("beta_warmup", 0),
        capacity=None if config.get("capacity") is None else Capacity(*config["capacity"]),
        checkpoint_dir=run_dir,
        resume=resume,
        seed=config["seed"],
        progress=progress,
        condition="label" if families.family(config["model"]).conditional else None,
        # scored after every epoch for the History's terms (rate, distortion, KL per
        # dimension, active units); training never sees it
        validation=_load_data(config, "test"),
        callbacks=[CSVLogger(run_dir / HISTORY_NAME)]
        + ([TensorBoard(run_dir / "tensorboard")] if tensorboard else []),
        compile=compile,
    )


def _train(
    config: dict, run_dir: Path, resume: bool, device, progress, tensorboard=False, compile=False
) -> tuple:
    train = _load_data(config, "train")
    model = _build(config, train, run_dir, device)
    began = time.perf_counter()
    try:
        history = _fit(model, config, train, run_dir, resume, progress, tensorboard, compile)
    except KeyboardInterrupt:
        if (run_dir / CHECKPOINT_NAME).is_file():
            saved = "the last finished epoch is saved"
        else:
            saved = "no epoch had finished, so nothing is saved;"
        raise CommandError(
            f"interrupted; {saved} probae train --run-dir {run_dir} --resume continues it",
            status=130,
        ) from None
    seconds = time.perf_counter() - began
    model.eval()
    try:
        history.to_csv(run_dir / HISTORY_NAME)
        pictures = _pictures(model, config, run_dir, history)
    except (KeyboardInterrupt, OSError) as error:
        last = history.train_loss[-1] if len(history) else float("nan")
        why = "interrupted" if isinstance(error, KeyboardInterrupt) else f"failed ({error})"
        raise CommandError(
            f"trained {config['model']} for {config['epochs']} epochs (last training loss "
            f"{last:.3f}), saved in {run_dir / CHECKPOINT_NAME}; writing its history and "
            f"pictures {why}",
            status=130 if isinstance(error, KeyboardInterrupt) else 1,
        ) from None
    return model, history, seconds, pictures


def _starting(run_dir: Path, config: dict, has_run: bool, unstarted: bool):
    """The line announcing a resumed or restarted run (None for a new one); refuses
    ``--epochs`` below those a run has already trained."""
    if has_run:
        done = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location="cpu")["epoch"]
        if config["epochs"] < done:
            raise CommandError(
                f"run directory {str(run_dir)!r} has already trained {done} epochs; "
                f"--epochs {config['epochs']} would go back (give {done} or more)"
            )
        return f"resuming {run_dir} at epoch {done} of {config['epochs']}"
    if unstarted and (run_dir / "pretrain").is_dir():
        return f"{run_dir} stopped in its greedy layer-wise training: continuing it"
    if unstarted:
        return f"{run_dir} stopped before its first epoch ended: starting it over with its options"
    return None


def cmd_train(args) -> int:
    if args.tensorboard:
        _require("tensorboard", "--tensorboard", "tensorboard")
    config_given = {k: getattr(args, k, None) for k in DEFAULTS}
    data_name = config_given["data"] or DEFAULTS["data"]
    model_name = config_given["model"] or DEFAULTS["model"]
    if args.run_dir is not None and not args.run_dir.strip():
        raise CommandError("--run-dir must name a folder, got an empty string")
    run_dir = Path(args.run_dir or Path("runs") / f"{data_name}-{model_name}")
    # A run exists once an epoch is saved. A config.json alone is a run stopped before
    # its first epoch ended: --resume starts it over with its stored options.
    has_checkpoint = (run_dir / CHECKPOINT_NAME).is_file()
    has_run = has_checkpoint and (run_dir / CONFIG_NAME).is_file()
    if has_run and not args.resume:
        raise CommandError(
            f"run directory {str(run_dir)!r} already holds a run; pass --resume to continue "
            "it, or choose another --run-dir"
        )
    unstarted = args.resume and not has_checkpoint and (run_dir / CONFIG_NAME).is_file()
    stored = _read_config(run_dir) if has_run or unstarted else None
    config = _check_config(_resolve_config(args, stored))
    epochs = args.epochs if args.epochs is not None else (stored or {}).get("epochs", TRAIN_EPOCHS)
    config["epochs"] = _positive("--epochs", epochs)
    device = _device(args.device)
    starting = _starting(run_dir, config, has_run, unstarted)
    with rundir.lock(run_dir):  # a run in use is refused before anything is said of it
        if starting:
            print(starting)
        if (run_dir / CHECKPOINT_NAME).is_file() != has_checkpoint:
            raise CommandError(
                f"run directory {str(run_dir)!r} changed while this command started (another "
                "process wrote a checkpoint there); run the command again"
            )
        model, history, seconds, pictures = _train(
            config,
            run_dir,
            has_run,
            device,
            args.progress,
            tensorboard=args.tensorboard,
            compile=args.compile,
        )
    last = history.train_loss[-1] if len(history) else float("nan")
    print(
        f"trained {config['model']} on {config['data']} for {config['epochs']} "
        f"epoch{'s' if config['epochs'] != 1 else ''} "
        f"({seconds:.1f} s this session); last training loss {last:.3f} nats per {_per(config)}"
    )
    print(f"run directory: {run_dir} ({', '.join(p.name for p in pictures)})")
    print(f"next: probae evaluate {run_dir}")
    return 0
