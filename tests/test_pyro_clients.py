"""Pyro's own example pairs (held out: vae, vae_comparison, cvae, ss_vae_M2) run through
probae as bench/pyro_clients.py runs them; skipped without a checkout of them."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = ROOT.parent / "shared" / "clients" / "pyro-examples" / "examples"
BENCH = ROOT / "bench" / "pyro_clients.py"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench():
    if not (CLIENTS / "vae" / "vae.py").is_file():
        pytest.skip(f"Pyro's examples not found under {CLIENTS}")
    spec = importlib.util.spec_from_file_location("pyro_clients", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vae_clients_and_cvae_give_pyros_elbo_on_the_same_weights(bench, mnist_root):
    rows = bench.main(
        [
            "--clients", str(CLIENTS), "--root", str(mnist_root), "--train", "1000",
            "--test", "200", "--epochs", "1", "--num-samples", "50",
            "--only", "vae", "vae_comparison", "cvae",
        ]
    )  # fmt: skip
    assert len(rows) == 3
    for row in rows:
        numbers = row["numbers"]
        # 10-particle ELBOs of 200 points: Monte Carlo error well under a nat
        assert numbers["probae_elbo"] == pytest.approx(numbers["pyro_elbo_same_weights"], abs=1.0)
        assert numbers["iwae"] > numbers["probae_elbo"]
    assert all(row["adapter"].startswith("none") for row in rows)


def test_ss_vae_m2_client_trains_in_one_run(bench):
    rows = bench.main(["--clients", str(CLIENTS), "--only", "ss_vae_M2", "--m2-epochs", "8"])
    numbers = rows[0]["numbers"]
    assert numbers["probae_accuracy"] > 0.3  # chance is 0.1
    # the pair alone, no adapter: probae's ELBO is Pyro's on the same weights
    alone = rows[1]["numbers"]
    assert alone["probae_elbo"] == pytest.approx(alone["pyro_elbo_same_weights"], abs=1.0)
