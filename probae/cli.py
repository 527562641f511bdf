"""The command line: ``probae train | evaluate | sample | demo``.

Each training run lives in a *run directory* that holds

- ``config.json``: everything needed to rebuild the model and find its data
  (data set, model family and that family's options, z_dim, likelihood,
  network, and the training options);
- ``checkpoint.pt``: written atomically by :func:`probae.fit` after every
  epoch, in the format of :mod:`probae.saving` (the model's class, options and
  weights, and the training state), so ``probae.load(run_dir)`` loads it;
- ``history.csv`` (rewritten after every epoch): the loss per epoch and its terms
  (rate, distortion, penalty), with the test split's loss, terms, KL per latent
  dimension and active units;
- PNG pictures: ``samples.png`` (a class-by-sample grid for the cvae; none for
  the deterministic autoencoders, which draw ``filters.png`` instead),
  ``reconstructions.png``, ``latent.png``, ``history.png``,
  ``rate_distortion.png``, ``kl_per_dimension.png``; and
  ``metrics.json`` once the run is evaluated;
- ``tensorboard/`` with ``--tensorboard``.

``probae train --model NAME`` builds any family in
:data:`probae.models.families.FAMILIES`: ``vae``,
``cvae`` (conditioned on the data set's labels), and the deterministic
autoencoders ``ae``, ``denoising-ae``, ``stacked-dae`` (trained greedily layer by
layer, ``--epochs-per-layer``, before its ``--epochs`` end to end), ``sparse-ae``,
``ksparse-ae`` and ``contractive-ae``. Their guides are point masses, so ``probae evaluate``
reports their per-point objective (the negative training loss) and no
log-likelihood, and ``probae sample`` first fits a Gaussian mixture to the
codes of their training data (:func:`probae.fit_latent_density`).

``probae train --resume`` continues an interrupted run from its checkpoint;
``probae evaluate`` and ``probae sample`` rebuild the model from the run
directory alone (:func:`probae.load`). ``probae demo`` trains a VAE on the
built-in ``digits`` set, draws its pictures and prints the test ELBO and the
importance-weighted log-likelihood estimate.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

from . import __version__, evaluate, importance, likelihoods, priors, rundir, saving, viz
from . import data as _data
from ._common import device_of
from .callbacks import CSVLogger, TensorBoard
from .models import CVAE, DRAW, VQVAE, SparseAE, families, fit_code_prior
from .models.autoencoders import DeterministicAutoencoder, fit_latent_density
from .models.families import CORRUPTIONS, FAMILIES
from .saving import CHECKPOINT_NAME
from .saving import read_checkpoint as load_checkpoint
from .schedules import Capacity
from .train import fit

__all__ = ["main", "build_parser", "load_run", "DEFAULTS"]

CONFIG_NAME = saving.RUN_CONFIG_NAME
HISTORY_NAME = "history.csv"
METRICS_NAME = "metrics.json"

#: the options every model family has, with their defaults (stored in config.json)
DEFAULTS = {
    "model": "vae",
    "data": "digits",
    "root": None,
    **families.SHARED_OPTIONS,
    "capacity": None,
    "loss": "elbo",
    "num_particles": 1,
    "batch_size": 64,
    "lr": 1e-3,
    "binarize": "auto",
    "seed": 0,
}
#: stored options that may change when a run is resumed (the data's location, and the
#: learning rate, so a run that diverged continues from its last good checkpoint)
_RESUMABLE = {"root", "lr"}
DEMO_EPOCHS = 300
TRAIN_EPOCHS = 100
SAMPLES = 64
SAMPLES_PER_CLASS = 8
#: mixture components fitted to a deterministic autoencoder's codes before sampling
CODE_COMPONENTS = 10


class CommandError(Exception):
    """A problem reported as one line, with the exit status to return."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


# -- parser --------------------------------------------------------------------------


def _names(module) -> str:
    return ", ".join(sorted(getattr(module, "_REGISTRY", {})))


def _hidden(text: str) -> list:
    if text.strip().lower() == "none":
        return []
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        widths = []
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(
            f"--hidden must be comma-separated positive widths like 256,256 (or none), got {text!r}"
        )
    return widths


def _layers(text: str) -> list:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        widths = []
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(
            f"--layers must be comma-separated positive code widths like 500,250,50, got {text!r}"
        )
    return widths


def _capacity(text: str) -> list:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or parts[0] < 0 or parts[1] < 1 or parts[1] != int(parts[1]):
        raise argparse.ArgumentTypeError(
            f"--capacity must be C,STEPS or C,STEPS,GAMMA (nats, a positive step count, a "
            f"positive weight), got {text!r}"
        )
    if len(parts) == 3 and parts[2] <= 0:
        raise argparse.ArgumentTypeError(f"--capacity GAMMA must be positive, got {text!r}")
    return [parts[0], int(parts[1]), *parts[2:]]


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _families_with(key: str) -> list:
    return [name for name, family in FAMILIES.items() if key in family.options]


def _default_text(key: str) -> str:
    """'default: V' where every family agrees, else the most common default followed
    by the others: 'default: 8; 32 for ksparse-ae'."""
    by_value = {}
    for name in _families_with(key):
        by_value.setdefault(_shown(FAMILIES[name].options[key]), []).append(name)
    common, *others = sorted(by_value, key=lambda v: -len(by_value[v]))
    return "; ".join([f"default: {common}"] + [f"{v} for {', '.join(by_value[v])}" for v in others])


def _only(key: str) -> str:
    return f"[{', '.join(_families_with(key))}]"


def _add_device(parser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="where to compute: cpu, cuda, cuda:1, ... ; auto takes cuda when there is one "
        "(default: auto)",
    )


def _add_threads(parser, default: int) -> None:
    parser.add_argument(
        "--threads",
        metavar="N",
        type=int,
        default=default,
        help="CPU threads PyTorch may use; 0 lets probae choose: one thread for a small "
        "network (far faster on a machine whose cores are busy with other work), PyTorch's "
        f"default (all cores) for a large one (default: {default})",
    )


def _add_progress(parser) -> None:
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="show no progress (by default a bar in a terminal, a line per epoch otherwise)",
    )


def _add_model_options(parser) -> None:
    d = DEFAULTS
    group = parser.add_argument_group("model (stored in config.json)")
    group.add_argument(
        "--model",
        metavar="NAME",
        help=f"model family: {', '.join(FAMILIES)} (default: {d['model']}); cvae is "
        "conditioned on the data set's labels, the *-ae families are deterministic "
        "autoencoders (point-mass guides)",
    )
    group.add_argument(
        "--data",
        metavar="NAME",
        help=f"data set: {', '.join(_data.NAMES)} (default: {d['data']}, built in, no network), "
        "or the path of a .npy/.pt file or of an image folder (root/CLASS/IMAGE)",
    )
    group.add_argument(
        "--root",
        metavar="DIR",
        help="folder holding MNIST/raw or FashionMNIST/raw with the original gzip files "
        "(needed for mnist and fashion-mnist)",
    )
    group.add_argument(
        "--z-dim", metavar="N", type=int, help=f"latent dimension ({_default_text('z_dim')})"
    )
    group.add_argument(
        "--likelihood",
        metavar="NAME",
        help=f"likelihood p(x|z): {_names(likelihoods)} ({_default_text('likelihood')})",
    )
    group.add_argument(
        "--scale",
        metavar="S",
        type=float,
        help="standard deviation (gaussian) or scale (laplace) of the likelihood, its "
        "starting value with --learn-scale (default: 1)",
    )
    group.add_argument(
        "--learn-scale",
        action="store_true",
        default=None,
        help="learn the gaussian or laplace likelihood's scale with the networks",
    )
    group.add_argument(
        "--hidden",
        metavar="W,W,...",
        type=_hidden,
        help="hidden widths of the mlp networks, comma-separated, or none for a single "
        f"layer ({_default_text('hidden')})",
    )

    group = parser.add_argument_group(
        "options of some families (stored in config.json; each takes those marked with "
        "its name, and any other is an error)"
    )
    group.add_argument(
        "--prior",
        metavar="NAME",
        help=f"prior p(z): {', '.join(priors.names())} ({_default_text('prior')}) {_only('prior')}",
    )
    group.add_argument(
        "--posterior",
        metavar="NAME[:K]",
        help="posterior q(z|x): diagonal, full (covariance), or a flow of K maps: planar:K, "
        f"iaf:K, spline:K ({_default_text('posterior')}) {_only('posterior')}",
    )
    group.add_argument(
        "--components",
        metavar="K",
        type=int,
        help="mixture components of the gaussian-mixture prior (default: the prior's own, "
        f"10) {_only('components')}",
    )
    group.add_argument(
        "--net",
        choices=["mlp", "conv"],
        help="encoder/decoder networks: mlp on flattened points, or conv on (C, H, W) "
        f"images ({_default_text('net')}) {_only('net')}",
    )
    group.add_argument(
        "--beta",
        metavar="B",
        type=float,
        help="weight of the KL term; 1 is the VAE, other values the beta-VAE "
        f"({_default_text('beta')}) {_only('beta')}",
    )
    group.add_argument(
        "--corruption",
        choices=list(CORRUPTIONS),
        help="the corruption C(x~|x) the encoder sees: masking zeroes values, gaussian adds "
        "noise, salt-and-pepper sets values to 0 or 1 "
        f"({_default_text('corruption')}) {_only('corruption')}",
    )
    group.add_argument(
        "--noise",
        metavar="LEVEL",
        type=float,
        help="level of --corruption: the fraction of values corrupted for masking and "
        "salt-and-pepper (default: 0.25), the standard deviation for gaussian (default: "
        f"0.1) {_only('noise')}",
    )
    group.add_argument(
        "--layers",
        metavar="W,W,...",
        type=_layers,
        help="code widths of the stacked layers, bottom up; the last is the top code's size "
        f"({_default_text('layers')}) {_only('layers')}",
    )
    group.add_argument(
        "--epochs-per-layer",
        metavar="N",
        type=int,
        help="epochs of greedy layer-wise training of each layer before the --epochs of "
        f"the whole stack; 0 for none ({_default_text('epochs_per_layer')}) "
        f"{_only('epochs_per_layer')}",
    )
    group.add_argument(
        "--penalty",
        choices=list(SparseAE.PENALTIES),
        help="sparsity penalty: l1 on the codes (a Laplace prior), or kl between a target "
        "mean activation --rho and each unit's mean activation over the batch "
        f"({_default_text('penalty')}) {_only('penalty')}",
    )
    group.add_argument(
        "--weight",
        metavar="W",
        type=float,
        help="weight of the penalty: sparse-ae lambda of l1 (default: 0.1) or beta of kl "
        "(default: 3); contractive-ae lambda of the squared Frobenius norm of the "
        "encoder's Jacobian (default: 0.1); rae of the decoder regularization (default: "
        "0.001); wae (default: 10) and info-vae (default: 100) of the MMD "
        f"{_only('weight')}",
    )
    group.add_argument(
        "--rho",
        metavar="R",
        type=float,
        help="target mean activation of the sparse-ae with --penalty kl, in (0, 1) "
        f"(default: 0.05) {_only('rho')}",
    )
    group.add_argument(
        "--k",
        metavar="K",
        type=int,
        help=f"code units kept, the K largest, at most --z-dim ({_default_text('k')}) {_only('k')}",
    )
    group.add_argument(
        "--alpha",
        metavar="A",
        type=float,
        help="weight of the index-code mutual information (default: 1) " + _only("alpha"),
    )
    group.add_argument(
        "--gamma",
        metavar="G",
        type=float,
        help="beta-tcvae: weight of the dimension-wise KL (default: 1); factor-vae: weight "
        "of the total-correlation penalty (default: 10) " + _only("gamma"),
    )
    group.add_argument(
        "--discriminator-hidden",
        metavar="W,W,...",
        type=_hidden,
        help="hidden widths of the total-correlation discriminator (default: six layers "
        "of 1000) " + _only("discriminator_hidden"),
    )
    group.add_argument(
        "--kind",
        choices=["i", "ii"],
        help="DIP-VAE-I (covariance of the posterior means) or -II (of the aggregate "
        "posterior) (default: ii) " + _only("kind"),
    )
    group.add_argument(
        "--lambda-od",
        metavar="L",
        type=float,
        help="weight of the off-diagonal covariance terms (default: 10) " + _only("lambda_od"),
    )
    group.add_argument(
        "--lambda-d",
        metavar="L",
        type=float,
        help="weight of the diagonal covariance terms (default: 10 --lambda-od for kind i, "
        "--lambda-od for kind ii) " + _only("lambda_d"),
    )
    group.add_argument(
        "--codebook-size",
        metavar="K",
        type=int,
        help="entries of the vq-vae's codebook; --z-dim is the size of each "
        f"({_default_text('codebook_size')}) {_only('codebook_size')}",
    )
    group.add_argument(
        "--commitment",
        metavar="B",
        type=float,
        help=f"weight of the commitment term ({_default_text('commitment')}) {_only('commitment')}",
    )
    group.add_argument(
        "--ema",
        action=argparse.BooleanOptionalAction,
        help="update the codebook by moving averages (--no-ema: by the codebook term's "
        f"gradient) ({_default_text('ema')}) {_only('ema')}",
    )
    group.add_argument(
        "--dead-code-threshold",
        metavar="N",
        type=float,
        help="restart codebook entries whose running count per batch falls below N "
        f"(0 never) ({_default_text('dead_code_threshold')}) {_only('dead_code_threshold')}",
    )
    group.add_argument(
        "--steps",
        metavar="T",
        type=int,
        help=f"drawing steps, one latent each ({_default_text('steps')}) {_only('steps')}",
    )
    group.add_argument(
        "--read",
        metavar="N",
        type=int,
        help=f"read window N x N of the attention ({_default_text('read')}) {_only('read')}",
    )
    group.add_argument(
        "--write",
        metavar="N",
        type=int,
        help=f"write patch N x N of the attention ({_default_text('write')}) {_only('write')}",
    )
    group.add_argument(
        "--attention",
        action=argparse.BooleanOptionalAction,
        help="Gaussian filterbank attention (--no-attention: read and write whole images) "
        f"({_default_text('attention')}) {_only('attention')}",
    )
    group.add_argument(
        "--encoder-size",
        metavar="N",
        type=int,
        help=f"units of the encoder LSTM ({_default_text('encoder_size')}) {_only('encoder_size')}",
    )
    group.add_argument(
        "--decoder-size",
        metavar="N",
        type=int,
        help=f"units of the decoder LSTM ({_default_text('decoder_size')}) {_only('decoder_size')}",
    )
    group.add_argument(
        "--regularization",
        choices=["l2", "gp", "spectral"],
        help="decoder regularization: l2 on its weights, gp the squared norm of its Jacobian "
        "at the codes, spectral normalization of its layers, with --weight its weight "
        f"({_default_text('regularization')}) {_only('regularization')}",
    )
    group.add_argument(
        "--code-weight",
        metavar="B",
        type=float,
        help="weight beta of the code penalty beta/2 ||z||^2 "
        f"({_default_text('code_weight')}) {_only('code_weight')}",
    )
    group.add_argument(
        "--kernel-scale",
        metavar="C",
        type=float,
        help="scale C of the inverse multiquadric kernel C / (C + ||a - b||^2) of the MMD "
        f"(default: 2 --z-dim) {_only('kernel_scale')}",
    )


def _add_training_options(parser, epochs: int) -> None:
    d = DEFAULTS
    group = parser.add_argument_group("training (stored in config.json)")
    group.add_argument(
        "--epochs",
        metavar="N",
        type=int,
        help=f"total epochs; with --resume, counted from the run's start (default: {epochs})",
    )
    group.add_argument(
        "--loss",
        choices=["elbo", "meanfield", "iwae"],
        help="elbo: Monte Carlo ELBO (Trace_ELBO); meanfield: ELBO with the KL in closed "
        "form (TraceMeanField_ELBO); iwae: importance-weighted bound over "
        f"--num-particles samples (default: {d['loss']})",
    )
    group.add_argument(
        "--num-particles",
        metavar="K",
        type=int,
        help=f"samples per point in the loss; K of the iwae bound (default: {d['num_particles']})",
    )
    group.add_argument(
        "--batch-size", metavar="N", type=int, help=f"points per step (default: {d['batch_size']})"
    )
    group.add_argument(
        "--lr", metavar="LR", type=float, help=f"learning rate of Adam (default: {d['lr']:g})"
    )
    group.add_argument(
        "--binarize",
        choices=["auto", "dynamic", "static", "none"],
        help="dynamic: a fresh Bernoulli draw of the pixels every batch; static: one fixed "
        "draw; none: the data as they are; auto: dynamic for the bernoulli likelihood, "
        f"none otherwise (default: {d['binarize']})",
    )
    group.add_argument(
        "--capacity",
        metavar="C,STEPS[,GAMMA]",
        type=_capacity,
        help="train with the controlled-capacity objective of Burgess et al. (2018): "
        "distortion + GAMMA |KL - C_t|, C_t rising linearly to C nats over STEPS steps "
        "(GAMMA default 1000), e.g. 25,100000",
    )
    group.add_argument(
        "--beta-warmup",
        metavar="N",
        type=int,
        help="epochs over which beta rises linearly from 0 to --beta (KL annealing); "
        f"0 for none ({_default_text('beta_warmup')}) {_only('beta_warmup')}",
    )
    group.add_argument(
        "--seed",
        metavar="N",
        type=int,
        help=f"seed of the initial weights and of training (default: {d['seed']})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``probae`` argument parser with its four commands."""
    parser = argparse.ArgumentParser(
        prog="probae",
        description="Train, evaluate and sample probabilistic-programming autoencoders "
        "(Pyro model/guide pairs).",
        epilog="Run 'probae COMMAND --help' for the options of a command. A first try: probae demo",
    )
    parser.add_argument("--version", action="version", version=f"probae {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    _add_model_options(train)
    _add_training_options(train, TRAIN_EPOCHS)
    _add_device(train)
    _add_threads(train, 0)
    _add_progress(train)

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

    sample = commands.add_parser(
        "sample",
        help="write a grid of samples from a trained run",
        description="Draw z from the prior of a trained model, decode E[x|z] and write the "
        "pictures as a grid. A cvae draws z from p(z|c) for every class c, one row per "
        "class. A deterministic autoencoder has no prior: a Gaussian mixture is first "
        "fitted to the codes of its training data (ex-post density estimation) and the "
        "samples decode draws from it.",
    )
    sample.add_argument("run_dir", help="run directory written by probae train")
    sample.add_argument(
        "-n",
        "--num",
        metavar="N",
        type=int,
        help=f"number of samples (default: {SAMPLES}); for cvae, samples per class "
        f"(default: {SAMPLES_PER_CLASS})",
    )
    sample.add_argument(
        "--components",
        metavar="K",
        type=int,
        help="components of the Gaussian mixture fitted to the codes of a deterministic "
        f"autoencoder (default: {CODE_COMPONENTS})",
    )
    sample.add_argument(
        "--sampler",
        metavar="SPEC",
        help="draw z from a density fitted to draws of q(z|x) of the training data instead "
        "of the prior: gmm:K (a K-component Gaussian mixture), flow (spline coupling "
        "layers) or two-stage (a second VAE on the codes)",
    )
    sample.add_argument(
        "--out", metavar="PNG", help="PNG file to write (default: RUN_DIR/samples.png)"
    )
    sample.add_argument(
        "--seed", metavar="N", type=int, default=0, help="seed of the draws (default: 0)"
    )
    _add_device(sample)
    _add_threads(sample, 0)

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
    return parser


# -- building models from a configuration --------------------------------------------


def _device(name: str) -> torch.device:
    if not isinstance(name, str) or not name.strip():
        raise CommandError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {name}: no CUDA device is available here")
    try:  # any other kind (mps, xpu, ...) is tried, not assumed
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, AttributeError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0].split(". ")[0]
        raise CommandError(f"--device {name} is not available here ({first})") from None
    return device


#: every option config.json may hold, each family's included
_OPTIONS = list(DEFAULTS) + list(dict.fromkeys(k for f in FAMILIES.values() for k in f.options))


def _complete(config: dict) -> dict:
    """The configuration with the defaults of the options it lacks."""
    return {**DEFAULTS, **families.complete(config, DEFAULTS["model"])}


def _load_data(config: dict, split: str) -> _data.Dataset:
    if config["data"] in ("mnist", "fashion-mnist") and config["root"] is None:
        raise CommandError(
            f"--data {config['data']} needs --root DIR, a folder holding "
            f"{'MNIST' if config['data'] == 'mnist' else 'FashionMNIST'}/raw with the four "
            "original gzip files (train-images-idx3-ubyte.gz, ...)"
        )
    flatten = config.get("net", "mlp") == "mlp"
    ds = _data.load(config["data"], split=split, root=config["root"], flatten=flatten)
    if not flatten and ds.image_shape is None:
        raise CommandError(f"--net conv needs pictures, but data set {config['data']!r} has none")
    return ds


def _read_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise CommandError(
            f"{str(run_dir)!r} is not a probae run directory (it has no {CONFIG_NAME}); "
            f"train one with: probae train --run-dir {run_dir}"
        )
    try:
        stored = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CommandError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(stored, dict):
        raise CommandError(
            f"{path} must hold a JSON object of options, got a {type(stored).__name__}"
        )
    return _complete(stored)


def _write_json(obj: dict, path: Path) -> None:
    saving.write_json(obj, path)


def load_run(run_dir, device=None) -> tuple:
    """A run directory's trained model (eval mode, see :func:`probae.load`) and its
    options: ``(model, config)``."""
    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    try:
        model = saving.load(run_dir, device=device)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from None
    except (KeyError, IndexError) as error:  # a config.json that lacks what the model needs
        raise CommandError(
            f"{run_dir / CONFIG_NAME} lacks {error} needed to rebuild the model; it is not a "
            "config.json written by probae train"
        ) from None
    return model, config


# -- commands ------------------------------------------------------------------------


def _resolve_config(args, stored: dict | None) -> dict:
    """The run's options: the stored ones when resuming (explicit options that differ
    are refused), else the command line's over the defaults. An option the model's
    family does not take is refused."""
    config = dict(DEFAULTS) if stored is None else dict(stored)
    given = {key: getattr(args, key) for key in _OPTIONS if getattr(args, key, None) is not None}
    name = given.get("model", config["model"])
    family = families.family(name)
    for key in given:
        if key not in DEFAULTS and key not in family.options:
            raise CommandError(
                f"--{key.replace('_', '-')} does not apply to --model {name}; it is an "
                f"option of {', '.join(_families_with(key))}"
            )
    for key, value in given.items():
        if key == "binarize" and value == "auto" and stored is not None:
            value = _check_config({**stored, "binarize": "auto"})["binarize"]
        if stored is not None and key not in _RESUMABLE and value != stored.get(key):
            raise CommandError(
                f"--{key.replace('_', '-')} {value} differs from the resumed run's "
                f"{key}={stored.get(key)!r}; only --epochs can change when resuming"
            )
        config[key] = value
    return _complete(config)


def _check_config(config: dict) -> dict:
    for key in ("z_dim", "num_particles", "batch_size"):
        if config.get(key, 1) < 1:  # the stacked-dae has layers instead of z_dim
            raise CommandError(f"--{key.replace('_', '-')} must be at least 1, got {config[key]}")
    if config.get("epochs_per_layer", 0) < 0:
        raise CommandError(
            f"--epochs-per-layer must be 0 or more, got {config['epochs_per_layer']}"
        )
    if config.get("beta_warmup", 0) < 0:
        raise CommandError(f"--beta-warmup must be 0 or more, got {config['beta_warmup']}")
    for key in ("likelihood", "prior"):  # names as the registries read them
        if isinstance(config.get(key), str):
            config[key] = config[key].lower().replace("_", "-")
    if config["binarize"] == "auto":
        config["binarize"] = "dynamic" if config["likelihood"] == "bernoulli" else "none"
    return config


def _binarize_arg(config: dict):
    return None if config["binarize"] == "none" else config["binarize"]


def _evaluation_data(config: dict, split: str) -> _data.Dataset:
    ds = _load_data(config, split)
    # One fixed binarization (seed 0) so that figures are comparable between runs.
    return ds if config["binarize"] == "none" else _data.binarize(ds, seed=0)


def _condition(model, ds: _data.Dataset):
    """The one-hot labels of ``ds``, a cvae's condition; None for the other families."""
    if not isinstance(model, CVAE):
        return None
    return _data.resolve_condition(ds, "label", c_shape=model.c_shape).to(device_of(model))


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


def _train(config: dict, run_dir: Path, resume: bool, device, progress, tensorboard=False) -> tuple:
    train = _load_data(config, "train")
    if config["binarize"] != "none" and ((train.x < 0) | (train.x > 1)).any():
        raise CommandError(
            f"data set {config['data']!r} has values outside [0, 1], which cannot be binarized "
            f"(--binarize {config['binarize']}); model real values with --likelihood gaussian "
            "or laplace"
        )
    config["x_shape"] = list(train.x.shape[1:])
    if "dataset_size" in families.family(config["model"]).options:
        config["dataset_size"] = config.get("dataset_size") or len(train)
    conditional = families.family(config["model"]).conditional
    if conditional:
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
    began = time.perf_counter()
    try:
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
        history = fit(
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
            condition="label" if conditional else None,
            # scored after every epoch for the History's terms (rate, distortion, KL per
            # dimension, active units); training never sees it
            validation=_load_data(config, "test"),
            callbacks=[CSVLogger(run_dir / HISTORY_NAME)]
            + ([TensorBoard(run_dir / "tensorboard")] if tensorboard else []),
        )
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


def _per(config: dict) -> str:
    return "image" if config["data"] in ("digits", "mnist", "fashion-mnist") else "point"


def _evaluate(model, config, split, num_samples, chunk_size, batch_size, seed) -> dict:
    test = _evaluation_data(config, split)
    c = _condition(model, test)
    pyro.set_rng_seed(seed)
    elbo = evaluate.elbo(model, test, batch_size=max(batch_size, 1), c=c)
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
        ll = evaluate.log_likelihood(
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


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise CommandError(f"{name} must be at least 1, got {value}")
    return value


def _require(package: str, flag: str, extra: str) -> None:
    """Refuses a missing optional package in one line, before anything is created."""
    if importlib.util.find_spec(package) is None:
        raise CommandError(f"{flag} needs the {package} package: pip install 'probae[{extra}]'")


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
    if has_run:
        done = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location="cpu")["epoch"]
        if config["epochs"] < done:
            raise CommandError(
                f"run directory {str(run_dir)!r} has already trained {done} epochs; "
                f"--epochs {config['epochs']} would go back (give {done} or more)"
            )
        starting = f"resuming {run_dir} at epoch {done} of {config['epochs']}"
    elif unstarted and (run_dir / "pretrain").is_dir():
        starting = f"{run_dir} stopped in its greedy layer-wise training: continuing it"
    elif unstarted:
        starting = (
            f"{run_dir} stopped before its first epoch ended: starting it over with its options"
        )
    else:
        starting = None
    with rundir.lock(run_dir):  # a run in use is refused before anything is said of it
        if starting:
            print(starting)
        if (run_dir / CHECKPOINT_NAME).is_file() != has_checkpoint:
            raise CommandError(
                f"run directory {str(run_dir)!r} changed while this command started (another "
                "process wrote a checkpoint there); run the command again"
            )
        model, history, seconds, pictures = _train(
            config, run_dir, has_run, device, args.progress, tensorboard=args.tensorboard
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
        scores = evaluate.disentanglement(model, data, seed=args.seed)
        metrics["disentanglement"] = scores.as_dict()
    _print_metrics(metrics, config)  # first: a failure to write them loses nothing
    if args.disentanglement:
        print(f"{args.split} {scores}")
    _write_json(metrics, Path(args.run_dir) / METRICS_NAME)
    return 0


def cmd_sample(args) -> int:
    device = _device(args.device)
    model, config = load_run(args.run_dir, device)
    family = families.family(config["model"])
    if args.components is not None and not family.deterministic:
        raise CommandError(
            f"--components does not apply to --model {config['model']}: it sizes the mixture "
            "fitted to the codes of a deterministic autoencoder"
        )
    default = SAMPLES_PER_CLASS if family.conditional else SAMPLES
    n = _positive("-n/--num", default if args.num is None else args.num)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples.png"
    if out.is_dir() or out.suffix.lower() != ".png":
        raise CommandError(
            f"--out must name a .png file, got {str(out)!r}"
            + (" (a folder)" if out.is_dir() else "")
        )
    if getattr(args, "sampler", None) is not None:
        return _sample_with_sampler(model, config, args, n, out)
    if family.conditional:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(args.seed)
            print(viz.class_samples(model, n, path=out))
        return 0
    if family.deterministic:
        components = _positive(
            "--components", CODE_COMPONENTS if args.components is None else args.components
        )
        train = _evaluation_data(config, "train")
        fit_latent_density(model, train, components=components, seed=args.seed)
        print(
            f"{config['model']} has no prior to sample from: fitted a {components}-component "
            f"Gaussian mixture to the codes of its {len(train)} training {_per(config)}s; the "
            "samples decode draws from it"
        )
    elif isinstance(model, VQVAE):
        train = _evaluation_data(config, "train")
        fit_code_prior(model, train, seed=args.seed)
        print(
            f"fitted a gated PixelCNN prior to the code grids of its {len(train)} training "
            f"{_per(config)}s; the samples decode draws from it"
        )
    elif getattr(model.prior, "improper", False):
        raise CommandError("this model's prior is flat (improper): it cannot be sampled")
    print(viz.sample_grid(model, n, out, seed=args.seed))
    return 0


def _code_sampler(spec: str, seed: int):
    from . import samplers

    name, _, value = spec.partition(":")
    if name == "gmm":
        try:
            components = int(value) if value else CODE_COMPONENTS
        except ValueError:
            components = 0
        if components < 1:
            raise CommandError(f"--sampler gmm:K needs a positive integer K, got {spec!r}")
        return samplers.GaussianMixture(components, seed=seed)
    if name == "flow" and not value:
        return samplers.Flow(seed=seed)
    if name == "two-stage" and not value:
        return samplers.TwoStage(seed=seed)
    raise CommandError(f"--sampler must be gmm:K, flow or two-stage, got {spec!r}")


def _sample_with_sampler(model, config, args, n, out) -> int:
    if isinstance(model, (CVAE, VQVAE, DRAW)):
        raise CommandError(
            f"--sampler does not apply to --model {config['model']}: it fits a density to "
            "vector codes of an unconditional model"
        )
    sampler = _code_sampler(args.sampler, args.seed)
    train = _evaluation_data(config, "train")
    try:
        sampler.fit(model, train, codes="posterior")
    except ValueError as error:
        raise CommandError(f"--sampler {args.sampler}: {error}") from None
    print(
        f"fitted {args.sampler} to draws of q(z|x) of its {len(train)} training "
        f"{_per(config)}s; the samples decode draws from it"
    )
    print(viz.sample_grid(model, n, out, seed=args.seed, sampler=sampler))
    return 0


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


#: the file that marks a folder as written by probae demo (which may replace it)
DEMO_MARK = ".probae-demo"


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


def _os_error(error: OSError) -> str:
    if error.filename is not None and error.strerror:
        where = f"{error.filename!s}" + (f" -> {error.filename2!s}" if error.filename2 else "")
        return f"{error.strerror}: {where}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


_COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample, "demo": cmd_demo}


def main(argv=None) -> int:
    """Runs the command line; returns the exit status (0 on success, 2 on bad input,
    1 when training fails, 130 when interrupted)."""
    args = build_parser().parse_args(argv)
    threads = getattr(args, "threads", 0)
    previous = torch.get_num_threads()
    try:
        if threads < 0:
            raise CommandError(f"--threads must be 0 or more, got {threads}")
        if threads:
            torch.set_num_threads(threads)
        return _COMMANDS[args.command](args)
    except CommandError as error:
        print(f"probae {args.command}: error: {error}", file=sys.stderr)
        return error.status
    except families.OptionError as error:
        flag = "--" + error.option.replace("_", "-")
        print(f"probae {args.command}: error: {error.naming(flag)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"probae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (FloatingPointError, rundir.RunDirectoryLocked) as error:
        print(f"probae {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # permissions, full disks, paths that are files
        print(f"probae {args.command}: error: {_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"probae {args.command}: error: interrupted", file=sys.stderr)
        return 130
    finally:
        # main() may run inside a larger program (a test, a notebook): leave it as found.
        torch.set_num_threads(previous)
