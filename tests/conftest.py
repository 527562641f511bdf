"""Shared fixtures. The suite runs on the device named by PROBAE_DEVICE (default cpu)."""

import os
from pathlib import Path

import pyro
import pytest
import torch

# The networks under test are small: one thread avoids oversubscribing small machines,
# where two busy threads per process slow these tests down several times.
torch.set_num_threads(1)

DEVICE = torch.device(os.environ.get("PROBAE_DEVICE", "cpu"))
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    raise RuntimeError("PROBAE_DEVICE=cuda but no CUDA device is available")

#: where the MNIST-family gzip files live (../shared/data beside the checkout)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """scikit-learn's small fits (probes, mixtures) likewise run on one BLAS thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(autouse=True)
def _fresh_rng_and_store():
    """Each test starts from a seeded RNG and an empty Pyro param store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield


@pytest.fixture
def mnist_root():
    """The data root if the MNIST files are present, else skip the test."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST files not found under {SHARED_DATA}")
    return SHARED_DATA
