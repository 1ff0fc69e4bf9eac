"""Sphinx configuration. CI builds with -W: a warning fails the build."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "itkdeepreg"
author = "the itkdeepreg developers"
copyright = "2026, the itkdeepreg developers"

# pictures: made by running the library while the docs build (docs/_ext/pictures.py)
extensions = ["myst_parser", "sphinx.ext.autodoc", "pictures"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext"]
autodoc_member_order = "bysource"
# signatures show the annotations as written (the modules use `from __future__ import annotations`)
autodoc_typehints = "signature"
html_theme = "alabaster"
