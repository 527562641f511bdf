"""The CVAE examples run end to end with a tiny budget and write their pictures."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script, extra, picture",
    [
        ("cvae_digits_classes.py", [], "classes.png"),
        ("cvae_quadrants.py", ["--observed", "2"], "completions_q2.png"),
    ],
)
def test_example_runs(tmp_path, script, extra, picture):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--epochs", "1", "--out", str(tmp_path)]
        + extra,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nats" in result.stdout or "log p(x|c)" in result.stdout
    png = tmp_path / picture
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
