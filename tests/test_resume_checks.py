"""Resuming checks every option that changes a run's trajectory, and nothing
non-finite is recorded or saved."""

from __future__ import annotations

import math

import pytest
import torch

import probae
from probae import VAE, likelihoods, saving, schedules
from probae._runstate import ALLOWED_ON_RESUME, DEFINING

D = 6


def _x(device):
    return torch.rand(40, D, generator=torch.Generator().manual_seed(0)).round().to(device)


def _vae(device, **kwargs):
    torch.manual_seed(0)
    return VAE((D,), 2, hidden=(8,), **kwargs).to(device)


def _fit(device, folder, epochs, **options):
    options = {"batch_size": 20, "progress": False, "seed": 0, **options}
    return probae.fit(_vae(device), _x(device), epochs=epochs, checkpoint_dir=folder, **options)


def _sgd(params):
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


CHANGES = {
    "kl_schedule": (
        {"capacity": schedules.Capacity(5.0, 100)},
        {"capacity": schedules.Capacity(50.0, 100)},
    ),
    "clip_grad_norm": ({}, {"clip_grad_norm": 1.0}),
    "lr_schedule": ({"lr_schedule": "cosine"}, {"lr_schedule": "step"}),
    "lr_schedule ": ({"lr_schedule": schedules.Step(gamma=0.5)}, {}),
    "gradient": (
        {"loss": "iwae", "num_particles": 2},
        {"loss": "iwae", "num_particles": 2, "gradient": "stl"},
    ),
    "optimizer": ({"optimizer": _sgd}, {}),
    "optimizer ": ({}, {"optimizer": _sgd}),
    "precision": ({}, {"precision": "bf16"}),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_resuming_with_another_trajectory_option_is_refused_by_name(name, tmp_path, device):
    if name == "precision" and device.type != "cpu":
        pytest.skip("bf16 autocast is checked on the CPU")
    then, now = CHANGES[name]
    _fit(device, tmp_path, 1, **then)
    before = (tmp_path / saving.CHECKPOINT_NAME).read_bytes()
    with pytest.raises(ValueError, match=rf"{name.strip()}\b.*differs from the run's") as caught:
        _fit(device, tmp_path, 2, resume=True, **now)
    if name.startswith("optimizer"):  # the classes by name, not a KeyError from torch
        assert "SGD" in str(caught.value) and "Adam" in str(caught.value)
    assert (tmp_path / saving.CHECKPOINT_NAME).read_bytes() == before
    # the same options resume
    history = _fit(device, tmp_path, 2, resume=True, **then)
    assert history.epoch == [1, 2]


def test_what_may_change_on_resume_is_the_complement(tmp_path, device):
    import inspect

    arguments = set(inspect.signature(probae.fit).parameters)
    data_and_model = {"model", "data", "c", "condition", "observation", "checkpoint_dir",
                      "resume", "capacity", "optimizer"}  # fmt: skip
    covered = set(DEFINING) | set(ALLOWED_ON_RESUME) | data_and_model
    assert arguments <= covered, arguments - covered
    assert not set(DEFINING) & set(ALLOWED_ON_RESUME)
    # the allowed ones do change: check_data and validation here
    _fit(device, tmp_path, 1)
    history = _fit(device, tmp_path, 2, resume=True, check_data=False, validation=_x(device))
    assert history.epoch == [1, 2] and history.val_loss[0] is None
    assert math.isfinite(history.val_loss[1])


def test_a_non_finite_validation_loss_is_an_error_naming_the_validation_data(tmp_path, device):
    vae = _vae(device, likelihood=likelihoods.Gaussian(scale=1e-3))
    x = torch.rand(40, D, device=device)
    far = torch.full((10, D), 1e18, device=device)  # squared error 1e36 / 1e-6: inf in float32
    with pytest.raises(FloatingPointError, match="validation data's loss is not finite"):
        probae.fit(vae, x, epochs=2, batch_size=20, validation=far, checkpoint_dir=tmp_path,
                   progress=False)  # fmt: skip
    assert not (tmp_path / saving.CHECKPOINT_NAME).exists()  # nothing saved
    # a run that saved epoch 1 keeps it as it was
    vae = _vae(device, likelihood=likelihoods.Gaussian(scale=1e-3))
    probae.fit(vae, x, epochs=1, batch_size=20, validation=x, checkpoint_dir=tmp_path / "b",
               progress=False)  # fmt: skip
    before = (tmp_path / "b" / saving.CHECKPOINT_NAME).read_bytes()
    with pytest.raises(FloatingPointError, match=r"validation data.*last good checkpoint"):
        probae.fit(vae, x, epochs=2, batch_size=20, validation=far, checkpoint_dir=tmp_path / "b",
                   resume=True, progress=False)  # fmt: skip
    assert (tmp_path / "b" / saving.CHECKPOINT_NAME).read_bytes() == before
    state = saving.read_checkpoint(tmp_path / "b" / saving.CHECKPOINT_NAME)
    assert all(math.isfinite(v) for v in state["history"]["val_loss"])
