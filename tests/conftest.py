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


def emulated_cuda_module():
    """The CUDA backend's source built for the host emulation (tests/cuda_emu),
    or missing() where it cannot be built (no compiler, no pybind11 headers)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emu"))
    try:
        import emulate
    finally:
        sys.path.pop(0)
    try:
        return emulate.build()
    except RuntimeError as exc:
        missing(f"CUDA host emulation unavailable: {exc}")


def host_cuda_backend():
    """densecrf.nn's CUDA backend object for CPU tensors over the emulated
    module (install that first: monkeypatch densecrf.backends.cuda's _C and
    _built_with_cuda, as tests/test_cuda.py's fixture does): host pointers
    stand in for device ones, and the filter's result, densecrf's own
    DeviceArray (host memory here), comes back as a tensor."""
    import torch

    import densecrf.nn as dnn
    from densecrf.backends import cuda as cuda_backend

    class HostCudaBackend(dnn._CudaBackend):
        def filter(self, lattice, values, transpose):
            place = self._place(values, lattice[2])
            out = cuda_backend.CudaBackend(place).filter(lattice[0], place.put(values, "values"), transpose)
            return torch.from_numpy(out.obj.numpy()).to(values.dtype)

    return HostCudaBackend(torch.device("cpu"))


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
