"""Shared fixtures, the CamVid location, and the rule for missing pieces.

A test whose required piece is absent (the CUDA host emulation build,
pydensecrf where the test extra installs it, the CamVid data) calls
``missing(reason)``: a skip on a developer's machine, a failure when
``DENSECRF_STRICT=1`` (set by ``.ci/run``), where each of these pieces is
expected and a skip would hide a broken build or a wrong path.

CamVid is looked for in ``DENSECRF_CAMVID`` if set, else in
``../shared/data/camvid`` beside the repository (``ROOT/../shared``).
"""

import os
import sys

import numpy as np
import pytest

import densecrf as _densecrf

#: The folder holding the densecrf package these tests imported: the installed one in CI,
#: a source tree with its built _C in development. A child Python must import that same
#: package: it gets this folder on PYTHONPATH and as its working directory (a child started
#: in the repository root would find the root's uncompiled densecrf/ first, through
#: sys.path[0] = the working directory).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(_densecrf.__file__)))

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

STRICT = os.environ.get("DENSECRF_STRICT", "") not in ("", "0")
CAMVID = os.environ.get("DENSECRF_CAMVID") or os.path.normpath(
    os.path.join(HERE, "..", "..", "shared", "data", "camvid")
)


def missing(reason: str):
    """Skips the calling test, or fails it under DENSECRF_STRICT=1."""
    if STRICT:
        pytest.fail(f"DENSECRF_STRICT=1, and a required piece is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def camvid_dir() -> str:
    """The CamVid folder (with val/ and valannot/), or missing()."""
    if not (os.path.isdir(os.path.join(CAMVID, "val")) and os.path.isdir(os.path.join(CAMVID, "valannot"))):
        missing(f"CamVid not found at {CAMVID} (set DENSECRF_CAMVID)")
    return CAMVID


def pydensecrf_required() -> bool:
    """Whether the test extra installs pydensecrf2 here (pyproject: python_version < '3.12')."""
    return sys.version_info < (3, 12)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
