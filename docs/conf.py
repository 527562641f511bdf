"""Sphinx configuration of the probae documentation.

Build with warnings as errors from the repository root:

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import argparse
import os
import sys

from docutils import nodes
from docutils.parsers.rst import Directive

sys.path.insert(0, os.path.abspath(".."))

import probae  # noqa: E402

project = "probae"
author = "the probae authors"
copyright = "2025, the probae authors"
version = release = probae.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
exclude_patterns = ["_build"]
nitpicky = False
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Type hints already appear in the signatures; the docstrings say the rest.
autodoc_typehints = "signature"
html_theme = "alabaster"
html_theme_options = {
    "description": "Probabilistic-programming autoencoders",
    "fixed_sidebar": True,
}
html_static_path = []


class ProbaeHelp(Directive):
    """``.. probae-help:: COMMAND`` renders ``probae COMMAND --help`` as a literal block,
    so the command-line page never drifts from the parser."""

    required_arguments = 1

    def run(self):
        from probae import cli

        os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal width
        parser = cli.build_parser()
        command = self.arguments[0]
        if command != "probae":
            parser = next(
                action.choices[command]
                for action in parser._actions
                if isinstance(action, argparse._SubParsersAction)
            )
        text = parser.format_help()
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app):
    app.add_directive("probae-help", ProbaeHelp)
