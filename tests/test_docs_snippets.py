"""The snippets of "Writing your own pair" (docs/model_guide.rst) run as they stand."""

import re
import warnings
from pathlib import Path

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
