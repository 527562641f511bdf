"""Code in the docs runs as it stands: the snippets of "Writing your own pair"
(docs/model_guide.rst), and every Python block of README.md and docs/quickstart.rst."""

import importlib.util
import re
import warnings
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "model_guide.rst"


def _snippets():
    text = DOC.read_text()
    section = text[text.index("Writing your own pair\n---") : text.index("**References**")]
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", section)
    return ["\n".join(line[3:] for line in block.splitlines()) for block in blocks]


def test_writing_your_own_pair_snippets_run():
    snippets = _snippets()
    assert len(snippets) >= 6
    namespace = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for code in snippets:
            exec(compile(code, str(DOC), "exec"), namespace)
    assert any("model sites ['s'] are not in the guide" in str(w.message) for w in caught)
    assert namespace["ll"].values.shape == (64,)
    assert namespace["per_point"].shape == (40,)  # the padded sequences, in order


# -- README.md and docs/quickstart.rst: every Python block, as pasted --------------------------

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
NEEDS = "# Needs MNIST"  # the first line of a block that reads data from outside the clone


def _markdown_blocks(path):
    return re.findall(r"^```python\n(.*?)^```$", path.read_text(), flags=re.S | re.M)


def _rst_blocks(path):
    blocks = re.findall(r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", path.read_text(), re.M)
    return ["\n".join(line[3:] for line in block.splitlines()) + "\n" for block in blocks]


def _run_in_order(blocks, where, tmp_path, monkeypatch, data_blocks=True):
    """Runs the blocks one after the other in one namespace (a reader pasting them into
    one session), in an empty folder; a block that needs MNIST runs where the shared
    data has it (linked as ``data/``) and ``data_blocks`` allows, and is skipped
    otherwise. Returns the namespace and the blocks skipped."""
    monkeypatch.chdir(tmp_path)
    has_mnist = (SHARED_DATA / "MNIST" / "raw").is_dir()
    if has_mnist:
        (tmp_path / "data").symlink_to(SHARED_DATA, target_is_directory=True)
    namespace, skipped = {"__name__": "__main__"}, []
    for index, code in enumerate(blocks):
        if code.startswith(NEEDS) and not (has_mnist and data_blocks):
            skipped.append(index)
            continue
        exec(compile(code, f"{where}, block {index + 1}", "exec"), namespace)
    return namespace, skipped


def test_every_readme_python_block_runs_as_pasted(tmp_path, monkeypatch):
    blocks = _markdown_blocks(ROOT / "README.md")
    assert len(blocks) >= 3
    # a block that needs outside data says so in its first line, and only such blocks do
    assert [b.startswith(NEEDS) for b in blocks] == ["torchvision" in b for b in blocks]
    has_tensorboard = importlib.util.find_spec("tensorboard") is not None  # the data block's
    namespace, skipped = _run_in_order(
        blocks, "README.md", tmp_path, monkeypatch, data_blocks=has_tensorboard
    )
    assert (tmp_path / "runs" / "my-vae" / "model.pt").is_file()
    assert len(namespace["history"].train_loss) >= 1
    if not skipped:
        assert (tmp_path / "rd.png").is_file() and (tmp_path / "kl.png").is_file()
        assert any((tmp_path / "runs" / "tb").iterdir())
    else:
        pytest.skip(f"README blocks {skipped} need MNIST under {SHARED_DATA} and tensorboard")


def test_every_quickstart_python_block_runs_as_pasted(tmp_path, monkeypatch):
    blocks = _rst_blocks(ROOT / "docs" / "quickstart.rst")
    assert len(blocks) >= 4
    namespace, skipped = _run_in_order(blocks, "quickstart.rst", tmp_path, monkeypatch)
    assert not skipped
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()
    assert namespace["ll"].values.shape == (360,)
