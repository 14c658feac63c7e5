"""Loads the compiled extension with an actionable error if it is missing."""

try:
    from . import _C
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "densecrf's compiled extension (densecrf._C) could not be imported. "
        "Install the package with `pip install .` (or `pip install -e .` for development) "
        f"rather than importing it from a source checkout. Original error: {exc}"
    ) from exc

from ._C import build_info, get_num_threads, hardware_threads  # noqa: F401

_C = _C
