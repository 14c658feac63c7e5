"""Backends: one problem description, a CPU and a CUDA backend object with the same methods.

- :mod:`.problem`: the refine arguments checked once into a :class:`Problem`
  (no arrays, no array library);
- :mod:`.cpu`: :class:`CpuBackend`, on host arrays with native threads;
- :mod:`.cuda`: :class:`CudaBackend`, on device buffers; the CUDA build and
  device checks (:func:`cuda_available`, :func:`require_cuda`);
- :mod:`.pipeline`: the one refine pipeline over both.

Array libraries are converted by :mod:`densecrf.arrays`, not here. Nothing
here imports torch or CuPy.
"""

from __future__ import annotations

from .cpu import CpuBackend
from .cuda import CudaBackend, cuda_available, require_cuda
from .pipeline import refine, refine_batch
from .problem import KernelType, Normalization, Problem, Term

__all__ = [
    "CpuBackend",
    "CudaBackend",
    "KernelType",
    "Normalization",
    "Problem",
    "Term",
    "cuda_available",
    "refine",
    "refine_batch",
    "require_cuda",
]
