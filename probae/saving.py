r"""Saving and loading models: one format for saved models and training checkpoints.

A saved model is a folder::

    my-vae/
      model.json    the model's class and constructor options, human-readable
      model.pt      {"format", "model": the same options, "module": the weights}

and a training run (``probae.fit(checkpoint_dir=...)``, ``probae train``) writes
``checkpoint.pt`` in the same format with the training state beside the weights
(optimizer, random streams, history). :func:`load` reads either.

Files are read with ``torch.load(weights_only=True)``: a checkpoint holds tensors
and plain containers only, and a file carrying any other pickled object is refused
before anything in it runs. Writes go to a temporary file of the writer's own that
replaces the old one in one rename (the folder is then flushed to disk too), so a crash
never leaves half a file. Every file carries a format version and a SHA-256 checksum of
its contents (tensors byte for byte, and the numbers and names beside them), checked on
reading: a file damaged on disk or in a copy is refused, never loaded with changed
weights. Files of earlier formats load through a migration.

Example::

    probae.save(vae, "runs/my-vae")
    vae2 = probae.load("runs/my-vae", device="cuda")   # same class, options and weights
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import time
import warnings
from pathlib import Path

import torch

from . import _config
from ._runstate import _first_difference

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "MODEL_CONFIG_NAME",
    "MODEL_NAME",
    "checksum",
    "remove_orphans",
    "load",
    "model_config",
    "read_checkpoint",
    "save",
    "write_checkpoint",
    "write_model_config",
    "write_json",
]

#: the format written now; files of the formats in ``_READABLE`` load too
FORMAT = "probae-checkpoint-3"
#: probae-checkpoint-1 (probae 0.1.0) holds no model configuration (the model is rebuilt
#: from the run's config.json) and stored the priors' device anchor ``_anchor`` among the
#: weights; probae-checkpoint-2 has no checksum. :func:`_migrate` brings both up to date.
_READABLE = ("probae-checkpoint-1", "probae-checkpoint-2", FORMAT)
CHECKSUM_KEY = "checksum"
#: when a save was made (ns since the epoch), in model.pt and in the model.json beside it
SAVED_AT_KEY = "saved_at"
#: weights that earlier formats stored and the current models no longer hold
_DROPPED_KEYS = re.compile(r"(^|\.)_anchor$")

MODEL_NAME = "model.pt"
MODEL_CONFIG_NAME = "model.json"
CHECKPOINT_NAME = "checkpoint.pt"
#: the command line's record of a run's options (data, training and model)
RUN_CONFIG_NAME = "config.json"


def model_config(module) -> dict | None:
    """The configuration of a probae model (``module.config``); None for a module
    probae does not know how to describe (a user's own)."""
    if isinstance(module, _config.Configurable):
        return module.config
    return None


def checksum(state: dict) -> str:
    """SHA-256 of a checkpoint's contents in a fixed order: every tensor's key path,
    dtype, shape and bytes, and every plain value (numbers, names) beside them; the
    stored checksum itself is left out."""
    digest = hashlib.sha256()

    def feed(key, value):
        digest.update(f"{key}\x00".encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu").contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}\x00".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            keys = [k for k in value if not (key == "" and k == CHECKSUM_KEY)]
            digest.update(f"D{len(keys)}".encode())
            for k in sorted(keys, key=lambda k: (type(k).__name__, str(k))):
                feed(f"{key}/{type(k).__name__}:{k}", value[k])
        elif isinstance(value, (list, tuple)):
            digest.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
            for i, item in enumerate(value):
                feed(f"{key}[{i}]", item)
        else:  # numbers, strings, None: repr is exact for each of them
            digest.update(f"V{type(value).__name__}:{value!r}".encode())

    feed("", state)
    return digest.hexdigest()


def _temporary(path: Path) -> Path:
    """A temporary name beside ``path`` that no other writer (process or thread) uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _sync_folder(folder: Path) -> None:
    """Flushes a folder's entries to disk, so a rename survives a power loss."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform or file system without folder handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Recording:
    """A file handle that remembers the first error of a write: ``torch.save`` reports a
    failed write (a full disk) as its own ``RuntimeError``, this keeps the ``OSError``."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data):
        try:
            written = self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise
        if written is not None and written < len(data):
            self.error = self.error or OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return written

    def __getattr__(self, name):
        return getattr(self.handle, name)


def _write_error(path: Path, error: BaseException) -> OSError:
    """One clear error for a file that could not be written (a full disk, a read-only
    folder): the system's reason and the file, and that nothing was replaced."""
    if isinstance(error, OSError):
        code, reason = error.errno, error.strerror or str(error)
    else:  # torch.save's own report of a failed write
        code, reason = errno.EIO, (str(error).strip().splitlines() or [type(error).__name__])[0]
    return OSError(
        code,
        f"{reason}: cannot write {str(path)!r} (nothing was replaced: the file there before, "
        "if any, is unchanged)",
    )


def _write_temporary(path: Path, write) -> Path:
    """Calls ``write(handle)`` on a temporary file of this writer's own beside ``path``
    and flushes it to disk; returns it. On any failure it is removed and the error is
    one :class:`OSError` naming ``path``."""
    tmp = _temporary(path)
    recording = None
    try:
        with open(tmp, "wb") as handle:
            recording = _Recording(handle)
            write(recording)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, (OSError, RuntimeError)):
            cause = recording.error if recording is not None and recording.error else error
            raise _write_error(path, cause) from None
        raise
    return tmp


def replace_atomically(path, write) -> Path:
    """Calls ``write(handle)`` on a temporary file of this writer's own, flushes it to
    disk, renames it over ``path`` and flushes the folder: a reader sees the old file or
    the new one, whole. A failed write (a full disk) is one :class:`OSError` naming
    ``path``, and the old file is unchanged."""
    path = Path(path)
    tmp = _write_temporary(path, write)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_folder(path.parent)
    return path


def remove_orphans(folder) -> list:
    """Removes the temporary files (``.NAME.PID.HEX.tmp``) that writers killed before
    their rename left in ``folder``: those of processes no longer alive on this host.
    Returns the names removed."""
    from .rundir import _pid_alive

    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        found = _ORPHAN.match(entry.name)
        if found is None or _pid_alive(int(found.group(1))):
            continue
        try:
            entry.unlink()
        except OSError:
            continue
        removed.append(entry.name)
    return removed


#: a temporary file of :func:`_temporary`: ``.NAME.PID.HEX.tmp``
_ORPHAN = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


def write_checkpoint(state: dict, path) -> Path:
    """Writes ``state`` (tensors and plain containers) atomically in the current
    format, with the checksum of its contents (:func:`checksum`)."""
    state = {**state, "format": FORMAT}
    state[CHECKSUM_KEY] = checksum(state)
    return replace_atomically(path, lambda handle: torch.save(state, handle))


def write_json(obj, path) -> Path:
    """Writes ``obj`` as indented JSON, atomically."""
    text = (json.dumps(obj, indent=2) + "\n").encode()
    return replace_atomically(path, lambda handle: handle.write(text))


def read_checkpoint(path, map_location=None) -> dict:
    """Reads a probae checkpoint or saved model file (``weights_only=True``).

    Files of earlier formats are brought up to date (:func:`_migrate`); a file of the
    current format is checked against its checksum.

    :raises FileNotFoundError: if there is no such file.
    :raises ValueError: naming the file, if it is damaged or corrupt, carries objects
        other than tensors and containers, is not a probae file, or was written by a
        newer probae.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt or not a probae checkpoint "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__})"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(path)!r} is not a probae checkpoint")
    found = state.get("format")
    if found not in _READABLE:
        if isinstance(found, str) and found.startswith("probae-checkpoint-"):
            raise ValueError(
                f"checkpoint {str(path)!r} has format {found!r}, written by a newer probae "
                f"than this one (which reads {', '.join(_READABLE)}): upgrade probae to load it"
            )
        raise ValueError(f"checkpoint {str(path)!r} is not a probae checkpoint")
    _check_tensors(state, path)
    if found == FORMAT:
        stored = state.get(CHECKSUM_KEY)
        if not isinstance(stored, str) or stored != checksum(state):
            raise ValueError(
                f"checkpoint {str(path)!r} is damaged: its contents do not match the "
                "checksum written with them (a disk or copy error); use another copy of it"
            )
    return _migrate(state)


def _check_tensors(state, path: Path) -> None:
    """Refuses a tensor whose shape claims more elements than its stored bytes hold (a
    view with zero or overlapping strides, which a crafted file can give a shape of
    terabytes): every tensor probae writes is backed by its own elements."""
    stack = [("", state)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{key}/{k}" if key else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, torch.Tensor):
            needed = value.numel() * value.element_size()
            held = value.untyped_storage().nbytes()
            if needed > held:
                raise ValueError(
                    f"checkpoint {str(path)!r} is corrupt: the tensor {key!r} has shape "
                    f"{tuple(value.shape)} ({needed} bytes) but only {held} bytes stored"
                )


def _migrate(state: dict) -> dict:
    """Brings a checkpoint of an earlier format to the current one: the priors' device
    anchor (stored among the weights by probae 0.1.0, a constant zero) is dropped."""
    if state["format"] == FORMAT:
        return state
    module = state.get("module")
    if isinstance(module, dict):
        state["module"] = {
            k: v for k, v in module.items() if not (isinstance(k, str) and _DROPPED_KEYS.search(k))
        }
    state["format"] = FORMAT
    return state


def save(model, path, overwrite: bool = False) -> Path:
    """Saves a model to the folder ``path`` (made if needed): ``model.json`` with its
    class and constructor options, and ``model.pt`` with the same options and its
    weights, fitted state included (the code density of a deterministic autoencoder,
    learned prior parameters).

    The two files are one save: both are written in full to temporary files first,
    then renamed into place, and ``model.json`` records the checksum and the save time
    of the ``model.pt`` written with it, which :func:`load` checks. A failed write (a
    full disk, a read-only folder) is one :class:`OSError` and leaves the previous save
    as it was.

    A model with parts of the user's own (an encoder class probae does not know) is
    saved too, weights and all, with a warning naming those parts: load it into a
    model built by hand, ``probae.load(path, model=my_model)``.

    :param model: a :class:`torch.nn.Module`, usually a probae model.
    :param path: the folder to write.
    :param bool overwrite: replace a model already saved in ``path``; without it such
        a folder is refused. A training run's folder (``checkpoint.pt``) is always
        refused: its checkpoint is its model.
    :returns: the folder.
    :raises FileExistsError: if ``path`` holds a saved model and ``overwrite`` is False.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            "model must be a torch.nn.Module (a probae model, or a module holding a pair's "
            f"parameters), got {type(model).__name__}"
        )
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"path {str(path)!r} exists and is not a folder")
    if (path / CHECKPOINT_NAME).exists() or (path / RUN_CONFIG_NAME).exists():
        raise ValueError(
            f"path {str(path)!r} is a training run's folder ({CHECKPOINT_NAME}): its "
            f"checkpoint is its model (probae.load({str(path)!r}) loads it); save to "
            "another folder"
        )
    if not overwrite and ((path / MODEL_NAME).exists() or (path / MODEL_CONFIG_NAME).exists()):
        raise FileExistsError(
            f"path {str(path)!r} already holds a saved model ({MODEL_NAME}); pass "
            "overwrite=True to replace it, or choose another folder"
        )
    path.mkdir(parents=True, exist_ok=True)
    config = model_config(model)
    custom = _config.custom_parts(config) if config is not None else [("the model", "")]
    if custom:
        parts = ", ".join(f"{where} ({name})" if name else where for where, name in custom)
        warnings.warn(
            f"probae can save the weights of {type(model).__name__} but cannot rebuild "
            f"{parts} from a configuration: load it with probae.load({str(path)!r}, "
            "model=...) into a model you build the same way",
            stacklevel=2,
        )
    saved_at = time.time_ns()
    state = {"model": config, "module": model.state_dict(), SAVED_AT_KEY: saved_at}
    state["format"] = FORMAT
    state[CHECKSUM_KEY] = checksum(state)
    manifest = {
        "format": FORMAT,
        "model": config,
        "weights": {"file": MODEL_NAME, CHECKSUM_KEY: state[CHECKSUM_KEY], SAVED_AT_KEY: saved_at},
    }
    text = (json.dumps(manifest, indent=2) + "\n").encode()
    weights = _write_temporary(path / MODEL_NAME, lambda handle: torch.save(state, handle))
    try:
        description = _write_temporary(path / MODEL_CONFIG_NAME, lambda h: h.write(text))
        try:
            # the weights first: an interruption between the renames leaves a model.json
            # older than model.pt, which load() recognises and names
            os.replace(weights, path / MODEL_NAME)
            os.replace(description, path / MODEL_CONFIG_NAME)
        finally:
            description.unlink(missing_ok=True)
    finally:
        weights.unlink(missing_ok=True)
    _sync_folder(path)
    return path


def write_model_config(model, folder) -> Path:
    """Writes ``model.json``, the model's class and constructor options as readable
    JSON, into ``folder`` (a saved model's, or a run directory as metadata)."""
    path = Path(folder) / MODEL_CONFIG_NAME
    _write_json({"format": FORMAT, "model": model_config(model)}, path)
    return path


def _write_json(obj, path: Path) -> None:
    write_json(obj, path)


def _weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no saved model at {str(path)!r}: no such file or folder")
    if (path / MODEL_NAME).is_file() and (path / CHECKPOINT_NAME).is_file():
        raise ValueError(
            f"{str(path)!r} holds both a saved model ({MODEL_NAME}) and a training run "
            f"({CHECKPOINT_NAME}), which may differ: load the one you mean by its file, "
            f"probae.load({str(path / CHECKPOINT_NAME)!r}) for instance"
        )
    for name in (MODEL_NAME, CHECKPOINT_NAME):
        if (path / name).is_file():
            return path / name
    if (path / RUN_CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"run directory {str(path)!r} has no {CHECKPOINT_NAME} yet: its training stopped "
            f"before the first epoch ended; continue it with: probae train --run-dir {path} "
            "--resume"
        )
    raise FileNotFoundError(
        f"{str(path)!r} holds no saved model: expected {MODEL_NAME} (probae.save) or "
        f"{CHECKPOINT_NAME} (a training run)"
    )


def _stored_config(state: dict, folder: Path):
    """The model configuration: inside the file, or (files of probae 0.1.0) the run's
    config.json of flat command-line options."""
    if state.get("model") is not None:
        return state["model"]
    run_config = folder / RUN_CONFIG_NAME
    if run_config.is_file():
        try:
            options = json.loads(run_config.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{run_config} is not valid JSON ({error})") from None
        if not isinstance(options, dict):
            raise ValueError(f"{run_config} must hold a JSON object of options")
        return {"run_options": options}
    return None


#: builds a model from a command-line run's options: :func:`probae.models.families.build`,
#: set by ``import probae``, so that saving needs no import of the model families
RUN_BUILDERS = []


def build(config: dict):
    """Builds an untrained model from a stored configuration (a model's ``config``,
    or ``{"run_options": ...}`` of a command-line run)."""
    if "run_options" in config:
        (builder,) = RUN_BUILDERS
        return builder(dict(config["run_options"]))
    return _config.build(config)


def load(path, device=None, model=None) -> torch.nn.Module:
    """Loads a model saved by :func:`save`, or the latest checkpoint of a training run
    (a ``probae train`` run directory, a ``fit(checkpoint_dir=...)`` folder).

    :param path: the folder (or the ``.pt`` file itself).
    :param device: where to put the model (default: CPU). A checkpoint written on a
        GPU loads on a machine without one.
    :param model: a model built by hand to load the weights into, for models with parts
        probae cannot rebuild (networks of the user's own); by default the model is
        rebuilt from its stored configuration.
    :returns: the model, with its weights, in eval mode.
    :raises FileNotFoundError: if ``path`` holds no saved model.
    :raises ValueError: if the file is corrupt, or its weights do not fit ``model``.
    """
    path = Path(path)
    file = _weights_file(path)
    state = read_checkpoint(file, map_location="cpu")
    if file.name == MODEL_NAME:
        _check_manifest(file, state)
    if model is None:
        config = _stored_config(state, file.parent)
        if config is None:
            raise ValueError(
                f"{str(file)!r} holds weights only (the model was not a probae model): build "
                "the model yourself and pass it, probae.load(path, model=my_model)"
            )
        where = file.parent / RUN_CONFIG_NAME if "run_options" in config else file
        _check_shapes(config, state.get("module"), where)
        try:
            model = build(config)
        except (ValueError, TypeError, KeyError, RuntimeError, MemoryError) as error:
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"cannot rebuild the model from {str(where)!r}: {detail}") from None
    elif not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        model.load_state_dict(state["module"])
    except (KeyError, RuntimeError) as error:
        detail = " ".join(str(error).split())  # one line: torch lists the keys on many
        raise ValueError(
            f"the weights in {str(file)!r} do not fit {type(model).__name__} ({detail})"
        ) from None
    if device is not None:
        model.to(torch.device(device))
    return model.eval()


def _check_shapes(config: dict, weights, where: Path) -> None:
    """Builds the model on PyTorch's meta device (shapes, no memory) and refuses a
    configuration asking for far more weights than the file stores (a crafted or
    mismatched file asking for terabytes) before a model of that size is allocated."""
    if not isinstance(weights, dict) or not meta_device_works():
        return
    try:
        with torch.device("meta"):
            fresh = build(config).state_dict()
    except Exception:  # a part that cannot be built without memory: the real build decides
        return
    asked = sum(v.numel() * v.element_size() for v in fresh.values())
    stored = sum(
        v.numel() * v.element_size() for v in weights.values() if isinstance(v, torch.Tensor)
    )
    if asked > 2 * stored + _SLACK_BYTES:
        raise ValueError(
            f"cannot rebuild the model from {str(where)!r}: its options ask for "
            f"{asked / 2**30:.1f} GiB of weights, the file stores {stored / 2**20:.1f} MiB "
            "(the options and the weights are not of one model)"
        )


def meta_device_works() -> bool:
    """Whether tensors made under ``torch.device("meta")`` are on the meta device (an
    emulated device may take the default device over)."""
    try:
        with torch.device("meta"):
            return torch.empty(1).device.type == "meta"
    except Exception:
        return False


#: weights a model may hold beyond twice those stored (state a fresh model allocates
#: before it is fitted) before a configuration is refused as not the file's
_SLACK_BYTES = 2**30


def _check_manifest(file: Path, state: dict) -> None:
    """Checks that the ``model.json`` beside a ``model.pt`` describes it: the same
    model options and, for saves that record it, the same save (checksum and time).
    A save interrupted between its two files, a file replaced by one of another save,
    or a hand-edited ``model.json`` is refused, naming the file that is wrong."""
    manifest_path = file.with_name(MODEL_CONFIG_NAME)
    if not manifest_path.is_file():
        return  # model.pt alone: a copy of the weights file, checked by its checksum
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(manifest_path)!r} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{str(manifest_path)!r} must hold a JSON object")
    recorded = manifest.get("weights")
    if isinstance(recorded, dict):
        then, now = recorded.get(SAVED_AT_KEY), state.get(SAVED_AT_KEY)
        if then != now or recorded.get(CHECKSUM_KEY) != state.get(CHECKSUM_KEY):
            if isinstance(then, int) and isinstance(now, int) and then != now:
                stale, other = (manifest_path, file) if then < now else (file, manifest_path)
                why = f"{stale.name} is from an earlier save than {other.name}"
            else:
                stale = file
                why = f"{file.name} is not the file {manifest_path.name} was saved with"
            raise ValueError(
                f"the saved model in {str(file.parent)!r} is inconsistent: {why} (a save "
                f"was interrupted, or a file was replaced); the wrong file is "
                f"{str(stale)!r}: save the model again"
            )
    difference = _first_difference(manifest.get("model"), state.get("model"))
    if difference is not None:
        key, then, now = difference
        raise ValueError(
            f"{str(manifest_path)!r} does not describe the model in {str(file)!r}: its {key} "
            f"is {then!r}, the weights file's is {now!r} (model.json was edited or belongs to "
            "another save); the wrong file is model.json: save the model again"
        )
