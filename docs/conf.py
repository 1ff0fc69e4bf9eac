"""Sphinx configuration. CI builds with -W: a warning fails the build."""

project = "itkdeepreg"
author = "the itkdeepreg developers"
copyright = "2026, the itkdeepreg developers"

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"
html_theme = "alabaster"
