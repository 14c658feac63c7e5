"""Loads the compiled extension with an actionable error if it is missing."""

try:
    from . import _C  # noqa: F401
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "densecrf's compiled extension (densecrf._C) could not be imported. "
        "Install the package with `pip install .` (or `pip install -e .` for development) "
        f"rather than importing it from a source checkout. Original error: {exc}"
    ) from exc

from ._C import build_info, get_num_threads, hardware_threads  # noqa: E402,F401


def set_num_threads(n) -> None:
    """Sets the default number of native worker threads; ``None`` or 0 means all cores."""
    from . import _checks

    _C.set_num_threads(0 if n is None or (not isinstance(n, bool) and n == 0) else _checks.threads_arg(n))

_C = _C
