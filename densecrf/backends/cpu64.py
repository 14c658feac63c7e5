r"""The CPU backend in float64: lattices, pairwise terms and mean field for ``dtype=float64``.

The float64 lattice (``_C.Lattice64``, csrc/lattice_f64.cpp) is the same
permutohedral lattice as the float32 one (same elevation, rounding, vertices
and blur), computed in double; normalisation, compatibilities, softmax and
the mean-field loop run here in numpy, in float64. It serves
:func:`densecrf.refine` / :func:`densecrf.refine_batch` / :class:`densecrf.DenseCRF`
with ``dtype=numpy.float64`` and densecrf.nn's float64 tensors (filters
only). Deterministic: the same inputs give the same bits whatever the thread
count. Not a tuned path: the float32 backend (:mod:`.cpu`) stays the fast one.

Semantics are the float32 backend's: a term's message is
:math:`\mu(\bar K Q)`, an energy (a Potts weight ``w`` gives
:math:`-w \bar K Q`, a diagonal ``w`` gives :math:`w \odot \bar K Q`, a
matrix ``W`` gives :math:`W \bar K Q` per point), :math:`\bar K` normalised as
``'symmetric'`` :math:`D^{-1/2} K D^{-1/2}`, ``'before'`` :math:`K D^{-1}`,
``'after'`` :math:`D^{-1} K` or ``'none'``, :math:`D = \mathrm{diag}(K 1 + 10^{-20})`;
mean field iterates :math:`Q = \mathrm{softmax}(-U - \sum_t \text{message}_t(Q))`
from :math:`\mathrm{softmax}(-U)`, the row maximum subtracted.
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from .._native import _C
from ..features import check_prob_range
from .problem import DIAGONAL, POTTS, Normalization, Problem

F64 = np.float64


def lattice64(features: np.ndarray, threads: int = 0):
    """The float64 lattice (``_C.Lattice64``) of checked C-contiguous finite float64 features ``[N, d]``."""
    try:
        return _C.Lattice64(features, threads)
    except ValueError as exc:
        if features.size and "key range" in str(exc):
            at = np.unravel_index(int(np.argmax(np.abs(features))), features.shape)
            raise ValueError(
                f"{exc}; largest |feature| = {float(np.abs(features[at])):g} at index "
                f"{tuple(int(i) for i in at)}: use larger bandwidths or smaller coordinates"
            ) from None
        raise


def is_lattice64(x) -> bool:
    """Whether ``x`` is a float64 lattice (``_C.Lattice64``)."""
    return isinstance(x, _C.Lattice64)


class Term64:
    """One pairwise term in float64 over a built ``_C.Lattice64``: the
    normalised filter and the message (see the module's docstring).

    ``compat``: the checked values of :func:`densecrf.backends.problem.compat_arg`
    (1, K or K*K numbers of ``compat_kind``), kept in float64.
    """

    def __init__(self, lattice, normalization, compat_kind: int, compat, n_labels: int, threads: int = 0):
        self.lattice = lattice
        self.normalization = Normalization(int(normalization))
        self.compat_kind = int(compat_kind)
        self.compat = np.asarray(compat, dtype=F64).ravel()
        self.n_labels = int(n_labels)
        self.threads = threads
        n = lattice.n_points
        # [N]: the filter of ones, K 1 (before any scaling)
        self.norm = lattice.filter(np.ones((n, 1), F64), False, threads)[:, 0] if n else np.zeros(0, F64)
        v = self.norm + 1e-20  # Kraehenbuehl's guard: an isolated point stays finite
        mode = self.normalization
        # [N] the per-point scale: 1/sqrt(n) (symmetric) or 1/n (before, after); unused for 'none'
        self.scale: np.ndarray = 1.0 / np.sqrt(v) if mode == Normalization.SYMMETRIC else 1.0 / v

    def filter(self, values: np.ndarray, transpose: bool = False) -> np.ndarray:
        """``[N, C]`` float64 -> the normalised filter (its adjoint with ``transpose``)."""
        mode = self.normalization
        before = mode == Normalization.SYMMETRIC or mode == (Normalization.AFTER if transpose else Normalization.BEFORE)
        after = mode == Normalization.SYMMETRIC or mode == (Normalization.BEFORE if transpose else Normalization.AFTER)
        x = values * self.scale[:, None] if before else values
        out = self.lattice.filter(np.ascontiguousarray(x, F64), bool(transpose), self.threads)
        if after:
            out *= self.scale[:, None]
        return out

    def apply(self, q: np.ndarray) -> np.ndarray:
        """The message compat(filter(Q)) ``[N, K]``, an energy."""
        s = self.filter(q)
        if self.compat_kind == POTTS:
            return -self.compat[0] * s
        if self.compat_kind == DIAGONAL:
            return s * self.compat[None, :]
        return s @ self.compat.reshape(self.n_labels, self.n_labels).T


def softmax_neg(unary: np.ndarray) -> np.ndarray:
    """softmax(-U) per row, the row's max subtracted, float64."""
    z = -unary
    z = z - z.max(axis=1, keepdims=True) if z.size else z
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def mean_field(unary: np.ndarray, terms, n_iter: int, q: np.ndarray | None = None) -> np.ndarray:
    """Q ``[N, K]`` float64 after ``n_iter`` iterations from softmax(-unary), or from ``q`` (not written)."""
    u = np.asarray(unary, F64)
    out = softmax_neg(u) if q is None else np.array(q, dtype=F64)
    for _ in range(n_iter):
        energy = u.copy()
        for t in terms:
            energy += t.apply(out)
        out = softmax_neg(energy)
    if out.size and not np.isfinite(out).all():
        raise ValueError(
            "mean-field inference overflowed float64 (the logits reached infinity): "
            f"unary energies up to {float(np.abs(u).max()):g} in magnitude are too large"
        )
    return out


def grid_features64(spatial, sxy, image: np.ndarray | None = None, srgb=None) -> np.ndarray:
    """``[N, nd (+ C)]`` float64: grid positions / sxy (last axis first, as
    :func:`densecrf.grid_positions`), then the image channels ``[N, C]`` / srgb."""
    spatial = tuple(int(s) for s in spatial)
    axes = np.meshgrid(*[np.arange(s, dtype=F64) for s in spatial], indexing="ij")
    cols = [axes[a].ravel() / float(sxy[len(spatial) - 1 - a]) for a in reversed(range(len(spatial)))]
    if image is not None:
        img = image.reshape(-1, image.shape[-1])
        cols += [img[:, c] / float(srgb[c]) for c in range(img.shape[1])]
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=F64)


def unary64(p_last: np.ndarray, clip, scale, label_axis) -> np.ndarray:
    """-log(max(p', clip)) ``[N, K]`` float64 of probabilities ``[*spatial, K]``
    (``p' = scale p + (1 - scale) / K`` with a scale), checked as the float32
    backend checks them: finite, in [0, 1], summing to one per pixel."""
    from .cpu import sums_message

    k = p_last.shape[-1]
    p = _checks.as_f64(p_last, "probs").reshape(-1, k)
    sums = p.sum(axis=1)
    if sums.size and float(np.abs(sums - 1.0).max()) > 1e-2:
        # 1e-2: the float32 backend's bound (a float16 softmax is off by up to ~K * 5e-4)
        raise ValueError(sums_message(sums, label_axis))
    if p.size:
        check_prob_range(float(p.min()), float(p.max()), p.size)
    if scale is not None:
        p = scale * p + (1.0 - scale) / k
    if clip is not None:
        p = np.maximum(p, clip)
    elif p.size and float(p.min()) <= 0:
        raise ValueError("probs contains zeros and clip=None: -log(0) is infinite")
    return -np.log(p)


class Cpu64Backend:
    """:class:`densecrf.backends.CpuBackend`'s refine, in float64 (``threads`` native
    threads for the lattice filters; None: all cores)."""

    def __init__(self, threads: int | None = None):
        self.threads = _checks.threads_arg(threads)

    def refine(self, problem: Problem, items) -> list:
        """As :meth:`CpuBackend.refine`, the images one after the other; float64 results."""
        outs = []
        for image, probs, count, spatial in items:
            if probs.ndim == len(spatial) + 2:
                res = [self._refine_one(problem, image[i], probs[i], spatial) for i in range(count)]
                outs.append(np.stack(res) if res else np.empty(probs.shape, F64))
            else:
                outs.append(self._refine_one(problem, image, probs, spatial))
        return outs

    def _refine_one(self, problem: Problem, image, probs, spatial) -> np.ndarray:
        spatial = tuple(spatial)
        if problem.channels_first:
            probs = np.moveaxis(probs, 0, -1)
            if image.ndim == len(spatial) + 1:
                image = np.moveaxis(image, 0, -1)
        if image.shape == spatial:
            image = image[..., None]
        k = problem.labels
        u = unary64(probs, problem.clip, problem.scale, problem.label_axis)
        terms = []
        for t in problem.terms:
            if t.srgb is None:
                f = grid_features64(spatial, t.sxy)
            else:
                f = grid_features64(spatial, t.sxy, _checks.as_f64(image, "image"), t.srgb)
            lat = lattice64(f, self.threads)
            terms.append(Term64(lat, t.normalization, t.compat_kind, t.compat, k, self.threads))
        q = mean_field(u, terms, problem.n_iter).reshape(probs.shape)
        return np.ascontiguousarray(np.moveaxis(q, -1, 0)) if problem.channels_first else q


__all__ = ["Cpu64Backend", "Term64", "is_lattice64", "lattice64", "mean_field"]
