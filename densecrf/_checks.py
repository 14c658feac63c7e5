"""Argument checking shared by the public API.

Every public entry point validates here, in Python, before native code runs:
bad input raises ValueError or TypeError naming the argument and the shape or
value at fault. Arrays are converted to C-contiguous float32 without ever
writing into the caller's array.
"""

from __future__ import annotations

import numbers

import numpy as np

_INT32_MAX = 2**31 - 1
# More threads than this is a typo, not a machine: each one is an OS thread.
MAX_THREADS = 1024
_F32_MAX = float(np.finfo(np.float32).max)
# float16 arrays of at least this many elements are widened natively
# (_C.half_to_float, F16C where the CPU has it: 0.5-0.8 ms against numpy's
# 6-7 ms for a 480 x 360 x 11 map); smaller ones by numpy, where the call's
# overhead would weigh more. Both are exact, so the bits are the same.
_HALF_NATIVE_MIN = 4096


def _widen_half(a: np.ndarray) -> np.ndarray:
    from ._native import _C

    return _C.half_to_float(np.ascontiguousarray(a).view(np.uint16))


def shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def as_array(x, name: str) -> np.ndarray:
    """Returns x as an ndarray of a real numeric dtype (bool and integers allowed)."""
    if hasattr(x, "__cuda_array_interface__") or (hasattr(x, "device") and "cuda" in str(getattr(x, "device", ""))):
        raise TypeError(
            f"{name} is a GPU array; the numpy API takes host arrays: pass device='cuda' to refine or "
            "refine_batch to run where it is, or copy it to the host"
        )
    try:
        a = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic array-likes
        raise TypeError(f"{name} could not be converted to a numpy array: {exc}") from exc
    if a.dtype == object:
        raise TypeError(f"{name} has dtype object; expected a real numeric array")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"{name} has complex dtype {a.dtype}; expected real values")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"{name} has dtype {a.dtype}; expected a real numeric array")
    return a


def as_f32(x, name: str, ndim: int | None = None, *, finite: bool = True) -> np.ndarray:
    """C-contiguous float32 view or copy of x (never the caller's buffer to write)."""
    a = as_array(x, name)
    if a.dtype == np.bool_:
        raise TypeError(f"{name} has dtype bool; expected floating-point values")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {shape_str(a.shape)}")
    if np.issubdtype(a.dtype, np.floating) and a.dtype.itemsize > 4:
        big = np.abs(a[np.isfinite(a)]) if a.size else a
        if big.size and float(big.max()) > _F32_MAX:
            raise ValueError(f"{name} has values beyond the float32 range (max |x| = {float(big.max()):g})")
    if a.dtype == np.float16 and a.size >= _HALF_NATIVE_MIN:  # native byte order only ('<f2' here)
        out = _widen_half(a)
    else:
        out = np.ascontiguousarray(a, dtype=np.float32)
    if finite and not np.issubdtype(a.dtype, np.integer):  # integers convert to finite floats
        check_finite(out, name)
    return out


def as_f64(x, name: str, ndim: int | None = None) -> np.ndarray:
    """C-contiguous float64 view or copy of x, checked finite (never the caller's buffer to write)."""
    a = as_array(x, name)
    if a.dtype == np.bool_:
        raise TypeError(f"{name} has dtype bool; expected floating-point values")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {shape_str(a.shape)}")
    out = np.ascontiguousarray(a, dtype=np.float64)
    if out.size and not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise ValueError(f"{name} must be finite; found {out[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    return out


def dtype_arg(dtype) -> np.dtype:
    """The computation dtype named by a ``dtype=`` argument: float32 (None, the
    default) or float64; anything else raises ValueError naming it."""
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64 (None: float32), got {dtype!r}")
    return dt


def check_finite(a: np.ndarray, name: str) -> None:
    """Raises ValueError naming the first NaN or infinite element of a float array.

    One pass without temporaries: a float64 sum of float32 values cannot
    overflow, so it is finite exactly when every element is.
    """
    if a.size and not np.isfinite(np.add.reduce(a, axis=None, dtype=np.float64)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name} must be finite; found {a[tuple(bad)]} at index {tuple(int(i) for i in bad)}")


def positive_scalar(x, name: str) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    v = float(x)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be positive and finite, got {v}")
    return v


def finite_scalar(x, name: str) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    v = float(x)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def positive_int(x, name: str, minimum: int = 1) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    v = int(x)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if v > _INT32_MAX:
        raise ValueError(f"{name} = {v} exceeds the supported maximum 2^31-1")
    return v


def per_axis(x, n: int, name: str) -> list[float]:
    """A positive scalar broadcast to n values, or a sequence of n positive values."""
    if isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)):
        return [positive_scalar(x, name)] * n
    try:
        vals = list(np.asarray(x, dtype=np.float64).ravel()) if not isinstance(x, (str, bytes)) else None
    except (TypeError, ValueError):
        vals = None
    if vals is None:
        raise TypeError(f"{name} must be a number or a sequence of {n} numbers, got {x!r}")
    if len(vals) != n:
        raise ValueError(f"{name} must have {n} values (one per axis or channel), got {len(vals)}")
    return [positive_scalar(float(v), name) for v in vals]


def threads_arg(threads) -> int:
    if threads is None:
        return 0
    n = positive_int(threads, "threads")
    if n > MAX_THREADS:
        raise ValueError(f"threads = {n} exceeds the supported maximum {MAX_THREADS}")
    return n


def holdout_split(n: int, holdout, rng) -> tuple[list[int], list[int]]:
    """(fitting indices, held-out indices) of n items: ``holdout`` a fraction in (0, 1), drawn with ``rng``,
    or a list of held-out indices (densecrf.fit and densecrf.fit_instances)."""
    if isinstance(holdout, numbers.Real) and not isinstance(holdout, bool):
        frac = float(holdout)
        if not 0 < frac < 1:
            raise ValueError(f"holdout must be a fraction in (0, 1) or a list of indices, got {holdout!r}")
        n_hold = min(n - 1, max(1, round(frac * n)))
        perm = rng.permutation(n)
        hold = sorted(int(i) for i in perm[:n_hold])
    else:
        try:
            hold = sorted({int(i) for i in holdout})
        except TypeError:
            raise ValueError(f"holdout must be a fraction in (0, 1) or a list of indices, got {holdout!r}") from None
        if not hold or len(hold) >= n or hold[0] < 0 or hold[-1] >= n:
            raise ValueError(f"holdout indices must be a non-empty proper subset of 0..{n - 1}, got {holdout!r}")
    fit_idx = [i for i in range(n) if i not in set(hold)]
    return fit_idx, hold
