"""Every deterministic-autoencoder example runs end to end (one epoch) and writes its PNGs.

The examples run one after another in a single subprocess (``runpy``, each with its own
``sys.argv``), so the suite pays for importing torch, Pyro, scikit-learn and matplotlib
once rather than once per example; each example's output is checked on its own.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXAMPLES = {
    "ae": ("ae_digits.py", [], ["ae_filters.png"]),
    "denoising": ("denoising_ae_digits.py", [], ["dae_filters.png", "dae_vector_field.png"]),
    "sparse-l1": ("sparse_ae_digits.py", ["--penalty", "l1"], ["sparse_ae_l1_filters.png"]),
    "sparse-kl": ("sparse_ae_digits.py", ["--penalty", "kl"], ["sparse_ae_kl_filters.png"]),
    "ksparse": ("ksparse_ae_digits.py", [], ["ksparse_ae_filters.png"]),
    "contractive": ("contractive_ae_digits.py", [], ["contractive_ae_filters.png"]),
    "probe-table": ("autoencoders_linear_probe.py", ["--seeds", "1"], ["linear_probe.csv"]),
}

DRIVER = """
import runpy, sys, traceback
for name, script, args in {jobs!r}:
    sys.argv = [script, *args]
    print("=== start", name, flush=True)
    try:
        runpy.run_path(script, run_name="__main__")
        print("=== ok", name, flush=True)
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        print("=== failed", name, flush=True)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs every example with ``--epochs 1``; returns ``{name: (stdout, out_dir)}``."""
    base = tmp_path_factory.mktemp("examples")
    jobs = []
    for name, (script, extra, _) in EXAMPLES.items():
        out = base / name
        args = ["--epochs", "1", "--out", str(out), *extra]
        jobs.append((name, str(ROOT / "examples" / script), args))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER.format(jobs=jobs)],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    sections = {}
    for chunk in result.stdout.split("=== start ")[1:]:
        name, _, text = chunk.partition("\n")
        sections[name] = text
    assert result.returncode == 0, result.stderr
    return {name: (sections.get(name, ""), base / name) for name in EXAMPLES}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs(runs, name):
    stdout, out = runs[name]
    assert f"=== ok {name}" in stdout, stdout
    assert "accuracy" in stdout
    for written in EXAMPLES[name][2]:
        content = (out / written).read_bytes()
        if written.endswith(".png"):
            assert content[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert content.count(b"\n") == 1 + 6  # header and one row per autoencoder
