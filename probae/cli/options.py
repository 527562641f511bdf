"""The options several commands share: where and on how many threads to compute,
progress, and the options of a run (the model's, read from the family table
:data:`probae.models.families.OPTIONS`, and the training's).
"""

from __future__ import annotations

import argparse

from .. import data as _data
from ..models.families import FAMILIES, OPTIONS, SHARED_OPTIONS, Option
from .runs import DEFAULTS, _families_with


def _widths(flag: str, empty: bool, example: str):
    """The parser of a list of positive widths written ``256,256`` (and ``none`` for
    the empty list where ``empty``)."""

    def parse(text: str) -> list:
        if empty and text.strip().lower() == "none":
            return []
        try:
            widths = [int(w) for w in text.split(",") if w.strip()]
        except ValueError:
            widths = []
        if not widths or any(w < 1 for w in widths):
            raise argparse.ArgumentTypeError(
                f"{flag} must be comma-separated positive widths like {example}"
                f"{' (or none)' if empty else ''}, got {text!r}"
            )
        return widths

    return parse


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


def _defaults_by_value(key: str) -> list:
    """The families' defaults of ``key`` as shown, the most common first, each with
    the families that have it."""
    by_value = {}
    for name in _families_with(key):
        by_value.setdefault(_shown(FAMILIES[name].options[key]), []).append(name)
    return sorted(by_value.items(), key=lambda item: -len(item[1]))


def _default_text(key: str) -> str:
    """'default: V' where every family agrees, else the most common default followed
    by the others: 'default: 8; 32 for ksparse-ae'."""
    (common, _), *others = _defaults_by_value(key)
    return "; ".join([f"default: {common}"] + [f"{v} for {', '.join(n)}" for v, n in others])


def _only(key: str) -> str:
    return f"[{', '.join(_families_with(key))}]"


def _argument(key: str, option: Option) -> dict:
    """The keywords of ``add_argument`` for the option ``key`` of the family table:
    its help with the families' defaults, and, for an option of some families only,
    the names of those families."""
    text = option.help
    if "{default}" in text:
        text = text.replace("{default}", _default_text(key))
    if option.section != "model":
        text += " " + _only(key)
    if option.type is bool:  # a switch; one that is on somewhere can be turned off
        defaults = [FAMILIES[name].options[key] for name in _families_with(key)]
        on = any(defaults) or bool(SHARED_OPTIONS.get(key))
        action = argparse.BooleanOptionalAction if on else "store_true"
        return {"action": action, "default": None, "help": text}
    if option.choices is not None:
        return {"choices": list(option.choices), "help": text}
    kwargs = {"metavar": option.metavar, "help": text}
    if option.type is list:
        flag = "--" + key.replace("_", "-")
        example = next((v for v, _ in _defaults_by_value(key) if v != "none"), "256,256")
        kwargs["type"] = _widths(flag, option.empty, example)
    elif option.type is not str:
        kwargs["type"] = option.type
    return kwargs


def _add_described(group, section: str) -> None:
    """Adds to ``group`` the options of the family table's ``section``, in its order."""
    for key, option in OPTIONS.items():
        if option.section == section:
            group.add_argument("--" + key.replace("_", "-"), **_argument(key, option))


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
    _add_described(group, "model")
    group = parser.add_argument_group(
        "options of some families (stored in config.json; each takes those marked with "
        "its name, and any other is an error)"
    )
    _add_described(group, "family")


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
    _add_described(group, "training")
    group.add_argument(
        "--seed",
        metavar="N",
        type=int,
        help=f"seed of the initial weights and of training (default: {d['seed']})",
    )
