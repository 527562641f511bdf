"""Every script in examples/ runs to the end on a tiny budget and writes pictures that open.

The scripts run one after another in a single subprocess (``runpy``, each with its own
``sys.argv``), so the suite pays for importing torch, Pyro, scikit-learn and matplotlib
once rather than once per script; each script's outcome is checked on its own.
"""

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from conftest import DEVICE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

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
    """Runs every example with ``--epochs 1`` on the suite's device (``--device``);
    returns ``({stem: output}, base, stderr)``."""
    base = tmp_path_factory.mktemp("examples")
    jobs = [
        (
            path.stem,
            str(path),
            ["--epochs", "1", "--out", str(base / path.stem), "--device", str(DEVICE)],
        )
        for path in EXAMPLES
    ]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # keeps an emulator
    env = {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER.format(jobs=jobs)],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    sections = {}
    for chunk in result.stdout.split("=== start ")[1:]:
        name, _, body = chunk.partition("\n")
        sections[name.strip()] = body
    return sections, base, result.stderr


def test_there_are_examples():
    names = {path.name for path in EXAMPLES}
    assert {"vae_digits.py", "custom_model_guide.py"} <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs(script, runs):
    sections, base, stderr = runs
    output = sections.get(script.stem)
    assert output is not None, f"{script.name} never started:\n{stderr[-3000:]}"
    assert f"=== ok {script.stem}" in output, f"{script.name} failed:\n{output[-3000:]}"
    # whatever pictures an example writes are PNGs that open
    out = base / script.stem
    for picture in out.rglob("*.png") if out.exists() else ():
        assert matplotlib.image.imread(picture).size > 0
