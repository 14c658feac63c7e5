"""Drop-in replacement for the ``pydensecrf`` package (``densecrf`` and ``utils`` submodules).

``import densecrf.compat.pydensecrf as dcrf`` also works: the classes and
constants of ``pydensecrf.densecrf`` are available here directly.
"""

from . import densecrf, utils
from .densecrf import (
    CONST_KERNEL,
    DIAG_KERNEL,
    FULL_KERNEL,
    NO_NORMALIZATION,
    NORMALIZE_AFTER,
    NORMALIZE_BEFORE,
    NORMALIZE_SYMMETRIC,
    ConstUnary,
    DenseCRF,
    DenseCRF2D,
    KernelType,
    NormalizationType,
    Unary,
)

__all__ = [
    "CONST_KERNEL",
    "DIAG_KERNEL",
    "FULL_KERNEL",
    "NORMALIZE_AFTER",
    "NORMALIZE_BEFORE",
    "NORMALIZE_SYMMETRIC",
    "NO_NORMALIZATION",
    "ConstUnary",
    "DenseCRF",
    "DenseCRF2D",
    "KernelType",
    "NormalizationType",
    "Unary",
    "densecrf",
    "utils",
]
