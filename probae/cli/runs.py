"""What every command shares: the error it reports, a run directory's configuration
(``config.json``: its defaults, how the command line's options resolve against a
stored run, how it is checked), and reading a run's model and data back.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from .. import data as _data
from .. import saving
from .._common import device_of
from ..models import CVAE, families
from ..models.families import FAMILIES

__all__ = ["CommandError", "DEFAULTS", "load_run"]

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
#: pictures in a sample grid
SAMPLES = 64


class CommandError(Exception):
    """A problem reported as one line, with the exit status to return."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise CommandError(f"{name} must be at least 1, got {value}")
    return value


def _require(package: str, flag: str, extra: str) -> None:
    """Refuses a missing optional package in one line, before anything is created."""
    if importlib.util.find_spec(package) is None:
        raise CommandError(f"{flag} needs the {package} package: pip install 'probae[{extra}]'")


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


# -- the configuration ---------------------------------------------------------------


def _families_with(key: str) -> list:
    return [name for name, family in FAMILIES.items() if key in family.options]


#: every option config.json may hold, each family's included
_OPTIONS = list(DEFAULTS) + list(dict.fromkeys(k for f in FAMILIES.values() for k in f.options))


def _complete(config: dict) -> dict:
    """The configuration with the defaults of the options it lacks."""
    return {**DEFAULTS, **families.complete(config, DEFAULTS["model"])}


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


def _per(config: dict) -> str:
    return "image" if config["data"] in ("digits", "mnist", "fashion-mnist") else "point"


# -- the run directory ---------------------------------------------------------------


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


# -- the run's data ------------------------------------------------------------------


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


def _evaluation_data(config: dict, split: str) -> _data.Dataset:
    ds = _load_data(config, split)
    # One fixed binarization (seed 0) so that figures are comparable between runs.
    return ds if config["binarize"] == "none" else _data.binarize(ds, seed=0)


def _condition(model, ds: _data.Dataset):
    """The one-hot labels of ``ds``, a cvae's condition; None for the other families."""
    if not isinstance(model, CVAE):
        return None
    return _data.resolve_condition(ds, "label", c_shape=model.c_shape).to(device_of(model))
