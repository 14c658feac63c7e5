"""The permutohedral lattice: a fast approximate high-dimensional Gaussian filter."""

from __future__ import annotations

import numpy as np

from . import _checks
from ._native import _C


class PermutohedralLattice:
    r"""Gaussian filtering of values carried by points in a d-dimensional feature space.

    Builds the permutohedral lattice of Adams, Baek and Davis (2010) once for
    the points' features, then filters any number of value arrays with it:

    .. math::  \text{out}_i \approx \sum_j \exp\!\big(-\tfrac12 \lVert f_i - f_j \rVert^2\big)\, v_j

    (the sum includes j = i). The features must already be divided by the
    bandwidths. The result is an approximation: splat to the d+1 vertices of
    the enclosing simplex, a [1/2, 1, 1/2] blur along each of the d+1 lattice
    axes, and slice back, scaled exactly as Kraehenbuehl's implementation
    (pydensecrf) does, so the same features give the same numbers.

    Args:
        features: ``[N, d]`` array (any real dtype, computed in ``dtype``), d in
            1..32. Extra leading dimensions are flattened: ``[..., d]``.
        threads: worker threads for the build (default: all cores, see
            :func:`densecrf.set_num_threads`).
        dtype: ``numpy.float32`` (None, the default: the fast lattice) or
            ``numpy.float64``: the same lattice built and applied in double
            (a simple single-threaded build), whose filter returns float64
            and whose transpose is the adjoint to float64 rounding.

    Output is deterministic: bit-identical across runs and thread counts.
    Memory: about ``(d+1) * 20`` bytes per point plus ``(d+1) * 8`` bytes per
    lattice vertex.
    """

    def __init__(self, features, *, threads: int | None = None, dtype=None):
        self._f64 = _checks.dtype_arg(dtype) == np.float64
        raw = _checks.as_array(features, "features")
        if (
            raw.ndim >= 2
            and raw.shape[-1] >= 1
            and raw.size // raw.shape[-1] > _checks._INT32_MAX // (raw.shape[-1] + 1)
        ):
            # Checked before the float32 copy: a broadcast array may be far
            # larger than the memory it takes.
            raise ValueError(
                f"features of shape {_checks.shape_str(raw.shape)} give N*(d+1) = "
                f"{raw.size // raw.shape[-1] * (raw.shape[-1] + 1)} lattice entries, over the 32-bit index limit 2^31-1"
            )
        f = _checks.as_f64(raw, "features") if self._f64 else _checks.as_f32(raw, "features")
        if f.ndim < 2:
            raise ValueError(f"features must have shape [N, d], got {_checks.shape_str(f.shape)}")
        self._lead_shape = f.shape[:-1]
        d = f.shape[-1]
        if not 1 <= d <= 32:
            raise ValueError(
                f"features must have 1 to 32 columns (feature dimension d), got shape {_checks.shape_str(f.shape)}"
            )
        self._build(f.reshape(-1, d), threads)

    @classmethod
    def _of_checked(cls, f: np.ndarray, threads) -> PermutohedralLattice:
        """The lattice of C-contiguous, finite float32 features ``[N, d]`` checked by
        the caller (DenseCRF's terms): no copy, no second finiteness pass."""
        self = cls.__new__(cls)
        self._f64 = False
        self._lead_shape = f.shape[:-1]
        self._build(f, threads)
        return self

    def _build(self, f: np.ndarray, threads) -> None:
        self._threads = _checks.threads_arg(threads)
        try:
            self._lat = _C.Lattice64(f, self._threads) if self._f64 else _C.Lattice(f, self._threads)
        except ValueError as exc:
            if f.size and "key range" in str(exc):
                at = np.unravel_index(int(np.argmax(np.abs(f))), f.shape)
                raise ValueError(
                    f"{exc}; largest |feature| = {float(np.abs(f[at])):g} at index "
                    f"{tuple(int(i) for i in at)}: use larger bandwidths or smaller coordinates"
                ) from None
            raise

    @property
    def n_points(self) -> int:
        """Number of points N."""
        return self._lat.n_points

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return self._lat.dim

    @property
    def n_vertices(self) -> int:
        """Number of lattice vertices M."""
        return self._lat.n_vertices

    @property
    def nbytes(self) -> int:
        """Bytes held by the lattice structure."""
        return self._lat.memory_bytes

    def filter(self, values, transpose: bool = False, *, threads: int | None = None) -> np.ndarray:
        """Filters ``values`` (``[N, C]``, ``[N]`` or ``[*lead, C]`` matching the features).

        ``transpose=True`` applies the adjoint filter (blur axes in reverse
        order); the forward filter is not exactly symmetric, its transpose is.
        Returns a new array of the input's shape, float32 (float64 for a
        lattice made with ``dtype=numpy.float64``).
        """
        v = _checks.as_f64(values, "values") if self._f64 else _checks.as_f32(values, "values")
        n = self.n_points
        if v.ndim == 1 and v.shape[0] == n:
            return self._lat.filter(v.reshape(n, 1), bool(transpose), self._thr(threads)).reshape(n)
        lead = self._lead_shape
        if v.ndim == len(lead) + 1 and v.shape[:-1] == lead:
            out = self._lat.filter(v.reshape(n, v.shape[-1]), bool(transpose), self._thr(threads))
            return out.reshape(v.shape)
        if v.ndim == 2 and v.shape[0] == n:
            return self._lat.filter(v, bool(transpose), self._thr(threads))
        raise ValueError(
            f"values must have shape [N, C] with N = {n} (or [*{_checks.shape_str(lead)}, C]), "
            f"got {_checks.shape_str(v.shape)}"
        )

    def _thr(self, threads):
        return _checks.threads_arg(threads) if threads is not None else self._threads

    def __repr__(self) -> str:
        return f"PermutohedralLattice(n_points={self.n_points}, dim={self.dim}, n_vertices={self.n_vertices})"
