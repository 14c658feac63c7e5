"""Sphinx configuration for densecrf's documentation (built with -W: warnings are errors)."""

import densecrf

project = "densecrf"
author = "densecrf developers"
release = densecrf.__version__
version = release
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]
