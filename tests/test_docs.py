"""The user guide's examples run as doctests, so the documentation cannot rot."""

import doctest
import os

import pytest

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")


@pytest.mark.parametrize("page", ["guide.rst"])
def test_guide_examples(page):
    path = os.path.join(DOCS, page)
    if not os.path.exists(path):
        pytest.skip(f"{page} not found")
    result = doctest.testfile(path, module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10  # the page really has examples
    assert result.failed == 0
