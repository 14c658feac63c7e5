"""The fold-protocol figures that README.md and docs print are the recorded measurements.

The fold models' weights are not shipped (they would push the working tree
past what travels to a GPU machine), so their figures cannot be recomputed
here; what this checks is that every table the pages carry is exactly the one
tools/folds_table.py builds from the scores recorded with the runs
(benchmarks/results/folds_2026-12-04: tools/eval_folds.py's PNG scores,
tools/fit_folds.py's transfers, the runs' own JPEG scores where starred).
"""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "folds_2026-12-04")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import folds_table  # noqa: E402


def _page(name):
    with open(os.path.join(ROOT, name)) as fh:
        return fh.read()


@pytest.fixture(scope="module")
def tables():
    return folds_table.tables(RESULTS)


@pytest.mark.parametrize(
    "page, which",
    [("docs/models.md", "folds"), ("docs/models.md", "sparse"), ("docs/losses.md", "sparse"), ("README.md", "folds")],
)
def test_page_tables_are_the_recorded_scores(tables, page, which):
    assert tables[which] in _page(page), f"{page}: the {which} table differs from tools/folds_table.py's"


def test_crf_transfer_table(tables):
    if "crf" not in tables:
        pytest.skip("no crf_transfer.json recorded")
    assert tables["crf"] in _page("docs/models.md")
    assert tables["crf"] in _page("README.md")
