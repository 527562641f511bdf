"""Property-based checks of argument validation over the public API and the command
line: a bad value of any argument gets a ValueError or TypeError naming that argument
(a one-line error from the command line), never an error from deep inside PyTorch,
NumPy or Pyro and never silent acceptance; a good value, integer NumPy and PyTorch
scalars included, is accepted.

The default run draws a few hundred examples; ``-m slow`` runs the deep version."""

from __future__ import annotations

import math
import numbers
import tempfile
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import probae
from probae import (
    AE,
    CVAE,
    VAE,
    ContractiveAE,
    DenoisingAE,
    KSparseAE,
    SparseAE,
    cli,
    corruption,
    evaluate,
    likelihoods,
    nets,
    priors,
    viz,
)

# -- what a good value is ---------------------------------------------------------------


def _int_like(v) -> bool:
    if isinstance(v, torch.Tensor):
        return v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _real(v) -> float | None:
    if isinstance(v, torch.Tensor):
        return float(v.item()) if v.dim() == 0 and v.dtype != torch.bool else None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        return None
    return float(v)


def pos_int(v, high=math.inf) -> bool:
    return _int_like(v) and 1 <= int(v) <= high


def nonneg_int(v) -> bool:
    return _int_like(v) and int(v) >= 0


def pos_real(v) -> bool:
    r = _real(v)
    return r is not None and math.isfinite(r) and r > 0


def unit_open(v) -> bool:
    r = _real(v)
    return r is not None and 0 < r < 1


def unit_closed(v) -> bool:
    r = _real(v)
    return r is not None and 0 <= r <= 1


def flag(v) -> bool:
    return isinstance(v, (bool, np.bool_)) or (
        isinstance(v, torch.Tensor) and v.dtype == torch.bool and v.dim() == 0
    )


def widths(v) -> bool:
    if isinstance(v, torch.Tensor) and v.dim() == 1:  # a sequence of 0-d tensors
        return all(pos_int(w) for w in v)
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
        return False
    return all(pos_int(w) for w in v)


def shape(v) -> bool:
    return widths(v) and len(v) > 0


def seed(v) -> bool:
    return v is None or (_int_like(v) and 0 <= int(v) < 2**32)


# -- the values tried -------------------------------------------------------------------

SCALARS = st.one_of(
    st.integers(-3, 12),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(
        [
            0,
            -1,
            2.5,
            1.0,
            float("nan"),
            float("inf"),
            -float("inf"),
            10**30,
            -(2**70),
            2**64,
            True,
            False,
            None,
            "3",
            "abc",
            "",
            b"2",
            np.int64(3),
            np.int32(2),
            np.uint8(4),
            np.float32(0.5),
            np.float64(2.0),
            np.bool_(True),
            torch.tensor(3),
            torch.tensor(0.25),
            torch.tensor(True),
            torch.tensor([2, 3]),
            object(),
            [2],
        ]
    ),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(
        st.one_of(st.integers(-2, 6), st.sampled_from([2.5, "x", None, np.int64(3)])), max_size=3
    ),
    st.lists(st.integers(-2, 6), max_size=3).map(tuple),
)

X4 = torch.rand(12, 4).round()
C3 = torch.eye(3)[torch.arange(12) % 3]


_PICTURES = tempfile.TemporaryDirectory()


def _png():
    return _PICTURES.name + "/grid.png"


def _vae():
    torch.manual_seed(0)
    return VAE((4,), 2, hidden=(3,))


#: name -> (call, baseline arguments, {argument: its good values}); each call builds
#: or computes something small
TARGETS = {
    "VAE": (VAE, dict(x_shape=(4,), z_dim=2, hidden=(3,)), dict(x_shape=shape, z_dim=pos_int, hidden=widths, beta=pos_real)),
    "CVAE": (CVAE, dict(x_shape=(4,), c_shape=(3,), z_dim=2, hidden=(3,), prior_hidden=(3,)), dict(x_shape=shape, c_shape=shape, z_dim=pos_int, hidden=widths, prior_hidden=widths, beta=pos_real)),
    "AE": (AE, dict(x_shape=(4,), z_dim=2, hidden=(3,)), dict(z_dim=pos_int, hidden=widths)),
    "DenoisingAE": (DenoisingAE, dict(x_shape=(4,), z_dim=2, hidden=(3,)), dict(z_dim=pos_int, hidden=widths)),
    "SparseAE-kl": (SparseAE, dict(x_shape=(4,), z_dim=2, penalty="kl", hidden=(3,)), dict(rho=unit_open, weight=lambda v: v is None or pos_real(v), z_dim=pos_int)),
    "SparseAE-l1": (SparseAE, dict(x_shape=(4,), z_dim=2, hidden=(3,)), dict(weight=lambda v: v is None or pos_real(v))),
    "KSparseAE": (KSparseAE, dict(x_shape=(4,), z_dim=4, k=2), dict(z_dim=lambda v: pos_int(v) and int(v) >= 2, k=lambda v: pos_int(v, 4))),
    "ContractiveAE": (ContractiveAE, dict(x_shape=(4,), z_dim=2), dict(weight=pos_real, z_dim=pos_int)),
    "StandardNormal": (priors.StandardNormal, dict(z_dim=2), dict(z_dim=pos_int)),
    "Normal": (priors.Normal, dict(z_dim=2), dict(z_dim=pos_int)),
    "GaussianMixture": (priors.GaussianMixture, dict(z_dim=2, components=3), dict(z_dim=pos_int, components=pos_int, init_scale=pos_real, seed=lambda v: v is not None and seed(v), enumerate=flag)),
    "Laplace-prior": (priors.Laplace, dict(z_dim=2), dict(z_dim=pos_int, scale=pos_real)),
    "Flow": (priors.Flow, dict(z_dim=2, transforms=1), dict(z_dim=pos_int, transforms=pos_int)),
    "Gaussian": (likelihoods.Gaussian, dict(), dict(scale=pos_real, learn_scale=flag)),
    "Laplace-likelihood": (likelihoods.Laplace, dict(), dict(scale=pos_real, learn_scale=flag)),
    "MLP": (nets.MLP, dict(in_dim=4, hidden=(3,), out_dim=2), dict(in_dim=pos_int, hidden=widths, out_dim=pos_int)),
    "MLPEncoder": (nets.MLPEncoder, dict(x_shape=(4,), z_dim=2, hidden=(3,)), dict(x_shape=shape, z_dim=pos_int, hidden=widths)),
    "GaussianNoise": (corruption.GaussianNoise, dict(), dict(sigma=pos_real)),
    "MaskingNoise": (corruption.MaskingNoise, dict(), dict(p=unit_closed, fixed=flag)),
    "SaltAndPepper": (corruption.SaltAndPepper, dict(), dict(p=unit_closed, fixed=flag)),
    "elbo": (lambda **k: evaluate.elbo(_vae(), X4, **k), dict(), dict(num_particles=lambda v: pos_int(v, 10**6), batch_size=pos_int)),
    "log_likelihood": (lambda **k: evaluate.log_likelihood(_vae(), X4, psis=False, **k), dict(num_samples=4), dict(num_samples=lambda v: pos_int(v, 10**6), chunk_size=lambda v: v is None or pos_int(v), batch_size=lambda v: v is None or pos_int(v))),
    "reconstruction_error": (lambda **k: evaluate.reconstruction_error(_vae(), X4, **k), dict(), dict(batch_size=pos_int)),
    "active_units": (lambda **k: evaluate.active_units(_vae(), X4, **k), dict(num_samples=3), dict(num_samples=lambda v: pos_int(v, 10**6), batch_size=pos_int)),
    "sample_grid": (lambda **k: viz.sample_grid(_vae(), path=_png(), image_shape=(1, 2, 2), **k), dict(n=4), dict(n=lambda v: pos_int(v, 10_000), nrow=lambda v: v is None or pos_int(v, 10_000))),
    "interpolation": (lambda **k: viz.interpolation(_vae(), X4[0], X4[1], path=_png(), image_shape=(1, 2, 2), **k), dict(), dict(steps=lambda v: pos_int(v, 10_000))),
    "binarize": (lambda **k: probae.data.binarize(torch.rand(3, 2), **k), dict(), dict(seed=seed)),
    "batches": (lambda **k: probae.data.batches(5, **k), dict(batch_size=2), dict(batch_size=pos_int)),
    "fit": (lambda **k: probae.fit(_vae(), X4, progress=False, **k), dict(epochs=1, batch_size=6), dict(epochs=pos_int, batch_size=pos_int, num_particles=lambda v: pos_int(v, 10**6), lr=lambda v: v is None or (pos_real(v) and _real(v) <= 1e6), beta_warmup=nonneg_int, seed=seed)),
}  # fmt: skip
#: arguments whose good values would make a call slow: only bad values are tried
EXPENSIVE = {
    ("fit", "epochs"),
    ("sample_grid", "n"),
    ("sample_grid", "nrow"),
    ("interpolation", "steps"),
    ("fit", "num_particles"),
    ("fit", "batch_size"),
    ("elbo", "num_particles"),
    ("log_likelihood", "num_samples"),
    ("active_units", "num_samples"),
    ("VAE", "x_shape"),
    ("CVAE", "x_shape"),
    ("CVAE", "c_shape"),
    ("MLPEncoder", "x_shape"),
    ("VAE", "hidden"),
    ("CVAE", "hidden"),
    ("CVAE", "prior_hidden"),
    ("AE", "hidden"),
    ("DenoisingAE", "hidden"),
    ("MLP", "hidden"),
    ("MLPEncoder", "hidden"),
    ("GaussianMixture", "components"),
    ("Flow", "transforms"),
}
CASES = [(t, arg) for t, (_, _, args) in TARGETS.items() for arg in args]


def _small(value) -> bool:
    """Good values small enough to build or compute with at once."""
    if isinstance(value, (list, tuple)):
        return len(value) <= 3 and all(_small(v) for v in value)
    r = _real(value)
    return r is None or not math.isfinite(r) or abs(r) <= 10**6


def outcome(target: str, arg: str, value) -> str:
    """Calls ``target`` with ``arg=value``: 'ok', 'named' (a ValueError/TypeError
    naming the argument) or a description of what went wrong."""
    call, base, args = TARGETS[target]
    good = args[arg](value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(**{**base, arg: value})
    except (ValueError, TypeError) as error:
        if good:
            return f"good value refused: {type(error).__name__}: {error}"
        if arg not in str(error):
            return f"error not naming {arg}: {type(error).__name__}: {error}"
        return "named"
    except Exception as error:  # noqa: BLE001 - any other class is the failure looked for
        return f"deep error: {type(error).__name__}: {error}"
    return "ok" if good else "bad value accepted"


def _check(target, arg, value):
    call, base, args = TARGETS[target]
    good = args[arg](value)
    assume(not good or ((target, arg) not in EXPENSIVE and _small(value)))
    result = outcome(target, arg, value)
    assert result in ("ok", "named"), f"{target}({arg}={value!r}): {result}"


FAST = settings(
    max_examples=12,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.filter_too_much,
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
    ],
)
DEEP = settings(FAST, max_examples=300, derandomize=False)


@pytest.mark.parametrize("target, arg", CASES, ids=[f"{t}-{a}" for t, a in CASES])
@FAST
@given(value=VALUES)
def test_each_argument_is_validated_and_named(target, arg, value):
    _check(target, arg, value)


@pytest.mark.slow
@pytest.mark.parametrize("target, arg", CASES, ids=[f"{t}-{a}" for t, a in CASES])
@DEEP
@given(value=VALUES)
def test_each_argument_is_validated_and_named_deep(target, arg, value):
    _check(target, arg, value)


@pytest.mark.parametrize(
    "value",
    [np.int64(2), np.int32(2), np.uint8(2), torch.tensor(2), torch.tensor(2, dtype=torch.int16)],
)
def test_integer_numpy_and_torch_scalars_are_integers(value):
    assert VAE((4,), value, hidden=(value,)).z_dim == 2
    assert priors.GaussianMixture(2, components=value).components == 2
    history = probae.fit(
        _vae(), X4, epochs=value, batch_size=value, num_particles=value, seed=value
    )
    assert history.epoch == [1, 2]
    assert evaluate.log_likelihood(_vae(), X4, num_samples=value, chunk_size=value).num_samples == 2


def test_bad_data_and_conditions_are_named():
    with pytest.raises(TypeError, match=r"data has dtype torch.float64 but the model's"):
        probae.fit(_vae(), X4.double(), epochs=1)
    cvae = CVAE((4,), (3,), 2, hidden=(3,), prior_hidden=(3,))
    c = C3.clone()
    c[0, 0] = float("nan")
    with pytest.raises(ValueError, match="c contains NaN"):
        probae.fit(cvae, X4, c=c, epochs=1)
    with pytest.raises(ValueError, match="c contains NaN"):
        evaluate.elbo(cvae, X4, c=c)
    with pytest.raises(ValueError, match="prior 'conditional-normal' is the learned p\\(z\\|c\\)"):
        priors.get("conditional-normal", 2)
    with pytest.raises(TypeError, match="prior must be a probae prior"):
        VAE((4,), 2, prior=5)
    with pytest.raises(ValueError, match="num_samples=1000000000 is more than"):
        evaluate.log_likelihood(_vae(), X4, num_samples=10**9)


# -- the command line -------------------------------------------------------------------

#: option -> a predicate of its good values (as text); every other option stays at a
#: good value, with a folder that holds no run
CLI_OPTIONS = {
    "--z-dim": lambda t: (_int_text(t) or 0) >= 1,
    "--epochs": lambda t: (_int_text(t) or 0) >= 1,
    "--batch-size": lambda t: (_int_text(t) or 0) >= 1,
    "--num-particles": lambda t: (_int_text(t) or 0) >= 1,
    "--lr": lambda t: _float_text(t) is not None and 0 < _float_text(t) <= 1e6,
    "--seed": lambda t: _int_text(t) is not None and 0 <= _int_text(t) < 2**32,
    "--likelihood": lambda t: t.lower().replace("_", "-") in likelihoods._REGISTRY,
    "--prior": lambda t: (
        t.lower().replace("_", "-") in priors._REGISTRY
        and t.lower().replace("_", "-") != "conditional-normal"
    ),
    "--hidden": lambda t: (
        t.strip().lower() == "none"
        or all((_int_text(w) or 0) >= 1 for w in t.split(",") if w.strip())
        and any(w.strip() for w in t.split(","))
    ),
    "--beta": lambda t: _float_text(t) is not None and 0 < _float_text(t),
    "--device": lambda t: t in ("cpu", "auto"),
    "--model": lambda t: t in cli.FAMILIES,
    "--data": lambda t: t in probae.data.NAMES,
    "--threads": lambda t: _int_text(t) is not None and _int_text(t) >= 0,
    # any other name is a folder the run would be written to
    "--run-dir": lambda t: t.strip() != "" and "\x00" not in t and not t.startswith("/dev/null"),
}


def _int_text(t):
    try:
        return int(t)
    except ValueError:
        return None


CLI_TEXT = st.one_of(
    st.sampled_from(
        ["0", "-1", "2.5", "nan", "inf", "-inf", "1e400", "abc", "", " ", "BERNOULLI", "mps",
         "cuda:99", "conditional-normal", "Gaussian_Mixture", "4294967296", "-0", "1,-2", "0,3",
         "none,", "vae ", "/dev/null/x", "\x00"]
    ),
    st.text(alphabet="0123456789-.,eEaxnN ", max_size=6),
)  # fmt: skip


def _float_text(t):
    try:
        value = float(t)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def cli_outcome(option, text, tmp_path, capsys) -> str:
    run = tmp_path / "fuzz-run"
    argv = ["train", "--run-dir", str(run), "--epochs", "1", "--z-dim", "2", "--hidden", "4"]
    argv += ["--no-progress", "--threads", "1", f"{option}={text}"]
    try:
        status = cli.main(argv)
    except SystemExit as exit:  # argparse's own one-line usage error
        status = exit.code
    except BaseException as error:  # noqa: BLE001
        return f"traceback: {type(error).__name__}: {error}"
    err = capsys.readouterr().err.strip().splitlines()
    if status == 0:
        return "accepted"
    if not err or not err[-1].startswith("probae"):
        return f"status {status} without a one-line error: {err}"
    return "one-line error"


@settings(FAST, max_examples=6)
@given(text=CLI_TEXT)
@pytest.mark.parametrize("option", list(CLI_OPTIONS))
def test_a_bad_command_line_value_is_a_one_line_error(option, text, tmp_path_factory, capsys):
    assume("\x00" not in text or option in ("--run-dir", "--device"))
    assume(not CLI_OPTIONS[option](text))
    tmp = tmp_path_factory.mktemp("cli")
    result = cli_outcome(option, text, tmp, capsys)
    assert result == "one-line error", f"{option}={text!r}: {result}"
    assert not (tmp / "fuzz-run" / "checkpoint.pt").exists()


@pytest.mark.slow
@settings(DEEP, max_examples=60)
@given(text=CLI_TEXT)
@pytest.mark.parametrize("option", list(CLI_OPTIONS))
def test_a_bad_command_line_value_is_a_one_line_error_deep(option, text, tmp_path_factory, capsys):
    assume("\x00" not in text or option in ("--run-dir", "--device"))
    assume(not CLI_OPTIONS[option](text))
    tmp = tmp_path_factory.mktemp("cli")
    result = cli_outcome(option, text, tmp, capsys)
    assert result == "one-line error", f"{option}={text!r}: {result}"


# -- files a user points probae at ------------------------------------------------------


def _write_png_folder(root, cut: bool):
    from PIL import Image

    folder = root / "train" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(folder / "a.png")
    blob = (folder / "a.png").read_bytes()
    (folder / "b.png").write_bytes(blob[: len(blob) // 2] if cut else b"not a png")
    return folder / "b.png"


def _bad_file(case, tmp):
    """Writes a bad input of one kind; returns (a call that reads it, a word the error
    must hold)."""
    from probae import data, saving

    if case in ("corrupt-png", "not-a-png"):
        pytest.importorskip("PIL")
        bad = _write_png_folder(tmp, cut=case == "corrupt-png")
        return lambda: data.load(str(tmp)), str(bad)
    if case in ("labels-shorter", "labels-longer"):
        labels = torch.arange(3 if case == "labels-shorter" else 5)
        torch.save({"x": torch.rand(4, 2), "y": labels}, tmp / "d.pt")
        return lambda: data.load(str(tmp / "d.pt")), "one per point"
    if case == "complex-npy":
        np.save(tmp / "d.npy", np.ones((4, 2), dtype=np.complex128))
        return lambda: data.load(str(tmp / "d.npy")), "complex128"
    if case == "pt-is-a-pickle":
        import pickle

        (tmp / "d.pt").write_bytes(pickle.dumps({"x": [[1.0, 2.0]]}))
        return lambda: data.load(str(tmp / "d.pt")), "d.pt"
    if case == "dataset-labels":
        return lambda: data.Dataset(torch.rand(4, 2), torch.arange(3)), "y must hold one row"
    folder = probae.save(VAE((4,), 2, hidden=(3,)), tmp / "m")
    state = torch.load(folder / "model.pt", weights_only=True)
    (folder / "model.json").unlink()  # model.pt alone, as a copied file
    if case == "terabyte-tensor":  # a stride-0 view: 10^14 elements over one stored float
        key = next(iter(state["module"]))
        state["module"][key] = torch.zeros(1).expand(10**7, 10**7)
        state["checksum"] = "0" * 64  # re-signed by whoever crafted it
        torch.save(state, folder / "model.pt")
        return lambda: probae.load(folder), "bytes stored"
    if case == "terabyte-options":  # options asking for a huge network, signed correctly
        if not saving.meta_device_works():
            pytest.skip("the meta device is taken over here (an emulated device)")
        state["model"]["options"]["hidden"] = [10**9]
        state["checksum"] = saving.checksum(state)
        torch.save(state, folder / "model.pt")
        return lambda: probae.load(folder), "GiB of weights"
    raise AssertionError(case)


BAD_FILES = [
    "corrupt-png", "not-a-png", "labels-shorter", "labels-longer", "complex-npy",
    "pt-is-a-pickle", "dataset-labels", "terabyte-tensor", "terabyte-options",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_or_mismatched_input_is_one_clear_error(case, tmp_path):
    read, word = _bad_file(case, tmp_path)
    with pytest.raises((ValueError, TypeError)) as caught:
        read()
    message = str(caught.value)
    assert word in message, message
    assert len(message.splitlines()) == 1, message
