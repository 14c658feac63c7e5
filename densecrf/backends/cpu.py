"""The CPU backend: lattices, pairwise terms and mean field on host arrays.

Arrays arrive as C-contiguous float32 numpy arrays (or views of them,
converted by :mod:`densecrf.arrays`); every native call runs on ``threads``
native threads (0: :func:`densecrf.get_num_threads`). The same inputs give
the same bits whatever the thread count.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import _checks
from .._native import _C
from ..features import _unary_from_probs, _unary_job, check_prob_range
from ..lattice import PermutohedralLattice
from .problem import Normalization, Problem


class _PositionTerms:
    """Built pairwise terms over grid positions alone (a Gaussian term has no
    image in its features), kept for the next image of the same grid.

    Such a term depends only on the grid's shape, its bandwidths, its
    compatibility, normalisation and label count, not on the image or the
    probabilities, so every frame of a dataset of one size would otherwise
    rebuild the same lattice: 5.8 ms of a 480 x 360 frame's ~100 ms on one
    thread (benchmarks/RESULTS.md, "Whole datasets on this machine,
    2026-12-06"). Lattices and terms do not depend on thread counts, so a
    kept term gives the same bits as a fresh one. At most ``slots`` terms
    and ``max_points`` grid points in all are kept (a 2-D term holds 29
    bytes per point in its lattice, measured at 480 x 360, and 8-20 in its
    normalisation: at most ~210 MB), the least recently used going
    first; a grid larger than ``max_points`` is never kept. A built term is
    read-only, so threads may share it.
    """

    def __init__(self, slots: int = 4, max_points: int = 1 << 22):
        self.slots, self.max_points = slots, max_points
        self._kept: OrderedDict = OrderedDict()  # key -> (n points, native term, lattice)
        self._lock = threading.Lock()

    @staticmethod
    def key(spatial, t, labels: int) -> tuple:
        """What a position-only term is a function of."""
        return (
            tuple(spatial),
            tuple(float(s) for s in t.sxy),
            int(t.compat_kind),
            t.compat.tobytes(),
            int(t.normalization),
            int(labels),
        )

    def get(self, key):
        """The kept (native term, lattice) under ``key``, or None."""
        with self._lock:
            hit = self._kept.get(key)
            if hit is None:
                return None
            self._kept.move_to_end(key)
            return hit[1], hit[2]

    def put(self, key, n: int, built) -> None:
        """Keeps ``built`` (native term, lattice) of an ``n``-point grid."""
        if n > self.max_points or self.slots <= 0:
            return
        with self._lock:
            self._kept[key] = (n, built[0], built[1])
            self._kept.move_to_end(key)
            while len(self._kept) > self.slots or sum(v[0] for v in self._kept.values()) > self.max_points:
                self._kept.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)


position_terms = _PositionTerms()


class CpuBackend:
    """Dense-CRF work on the host with ``threads`` native threads (None: all cores).

    Methods (the CUDA backend has the same): :meth:`refine` for a checked
    :class:`Problem` over a batch, :meth:`mean_field` over built terms,
    :meth:`lattice` and :meth:`filter`; :meth:`term` builds one pairwise term.
    """

    def __init__(self, threads: int | None = None):
        self.threads = _checks.threads_arg(threads)  # 0: the native default

    # -- building blocks ----------------------------------------------------
    def lattice(self, features: np.ndarray, threads: int | None = None) -> PermutohedralLattice:
        """The lattice of checked (C-contiguous, finite float32) features ``[N, d]``."""
        return PermutohedralLattice._of_checked(features, (self.threads if threads is None else threads) or None)

    def term(self, features: np.ndarray, spec, labels: int, threads: int | None = None, lattice=None):
        """A pairwise term over checked features ``[N, d]``: ``spec`` is (compat kind,
        float32 values, normalization, kernel type). Returns (native term, lattice).
        Touches nothing shared, so two terms may be built at once on two Python threads."""
        kind, values, norm, _ = spec
        threads = self.threads if threads is None else threads
        lat = self.lattice(features, threads) if lattice is None else lattice
        return _C.PairwiseTerm(getattr(lat, "_lat", lat), int(norm), kind, values, labels, threads), lat

    def message(self, term, q: np.ndarray) -> np.ndarray:
        """A built term's message compat(filter(Q)) ``[N, K]`` (an energy)."""
        return term.apply(q, False, self.threads)

    def filter(self, lattice, values: np.ndarray, transpose: bool = False, normalization=None) -> np.ndarray:
        """``values`` ``[N, C]`` filtered by ``lattice`` (a native lattice or a
        :class:`PermutohedralLattice`): K, or the kernel normalised as ``normalization``."""
        lat = getattr(lattice, "_lat", lattice)
        if normalization is None:
            return lat.filter(values, bool(transpose), self.threads)
        return self.normalized(lat, normalization).filter(values, bool(transpose), self.threads)

    def normalized(self, lattice, normalization: int):
        """A native term whose ``filter(values, transpose, threads)`` applies the
        normalised kernel, the scales folded into the splat and slice weights."""
        return _C.PairwiseTerm(
            getattr(lattice, "_lat", lattice), int(normalization), 0, np.ones(1, np.float32), 1, self.threads
        )

    def mean_field(
        self,
        unary: np.ndarray,
        terms,
        n_iter: int,
        q: np.ndarray | None = None,
        *,
        start=None,
        check_finite: bool = True,
        compats=(),
    ) -> np.ndarray:
        """Q ``[N, K]`` after ``n_iter`` fused iterations from softmax(-unary), or from
        ``q`` (not written), or from ``start`` (a ``_C.StartQ`` of the same unary).

        With ``check_finite`` the native loop flags rows whose logits overflowed
        while it writes them; that raises ValueError naming the magnitudes of
        the unary and of ``compats`` (the terms' compatibility values).
        """
        if not check_finite:
            return _C.mean_field(unary, list(terms), n_iter, q, self.threads)
        try:
            return _C.mean_field(unary, list(terms), n_iter, q, self.threads, check_finite=True, start=start)
        except FloatingPointError:
            u = float(np.abs(unary).max())
            c = max((float(np.abs(v).max()) for v in compats), default=0.0)
            raise ValueError(
                f"mean-field inference overflowed float32 (the logits reached infinity): unary energies up to "
                f"{u:g} and compatibilities up to {c:g} in magnitude are too large; scale them down"
            ) from None

    # -- the refine problem --------------------------------------------------
    def refine(self, problem: Problem, items) -> list:
        """Refined probabilities of a batch, laid out as its probabilities.

        ``items``: list of (image, probs, count, spatial), float32 host arrays
        of ``count`` images of shape ``spatial``, channels and labels first or
        last as ``problem.channels_first``; arrays with one axis more than an
        image's hold ``count`` images stacked. One image runs on all threads
        (refine's schedule); several run side by side, one per thread (two
        one-thread refines side by side beat two two-thread ones: the lattice
        builds and the mean field's splat gain least from a second thread),
        each image on ``threads // workers`` native threads, taken first come
        first served. The same bits either way. Returns one array per item.
        """
        jobs: list[tuple] = []  # (item, image or None, image array, probs array, spatial)
        for j, (image, probs, count, spatial) in enumerate(items):
            if probs.ndim == len(spatial) + 2:
                jobs += [(j, i, image[i], probs[i], spatial) for i in range(count)]
            else:
                jobs.append((j, None, image, probs, spatial))
        total = self.threads or _C.get_num_threads()
        workers = min(len(jobs), total)
        if workers <= 1:
            done = [self._refine_one(problem, im, p, sp) for _, _, im, p, sp in jobs]
        else:
            each = CpuBackend(max(1, total // workers))
            with ThreadPoolExecutor(workers, thread_name_prefix="densecrf-image") as pool:
                done = list(pool.map(lambda job: each._refine_one(problem, *job[2:]), jobs))
        results = iter(done)  # in the jobs' order, item after item
        outs = []
        for _image, probs, count, spatial in items:
            if probs.ndim != len(spatial) + 2:
                outs.append(next(results))
            elif count:
                outs.append(np.stack([next(results) for _ in range(count)]))
            else:
                outs.append(np.empty(probs.shape, np.float32))
        return outs

    def _refine_one(self, problem: Problem, image: np.ndarray, probs: np.ndarray, spatial) -> np.ndarray:
        spatial = tuple(spatial)
        if problem.channels_first:
            probs = np.moveaxis(probs, 0, -1)
            if image.ndim == len(spatial) + 1:
                image = np.ascontiguousarray(np.moveaxis(image, 0, -1))
        if image.shape == spatial:
            image = image[..., None]
        q = self._refine_labels_last(problem, image, probs, spatial)
        return np.ascontiguousarray(np.moveaxis(q, -1, 0)) if problem.channels_first else q

    def _refine_labels_last(self, problem: Problem, im: np.ndarray, p_last: np.ndarray, spatial) -> np.ndarray:
        """One image: ``im`` float32 C-contiguous ``[*spatial, C]``, ``p_last``
        float32 ``[*spatial, K]`` (any strides). Returns Q ``[*spatial, K]``."""
        k, clip, scale = problem.labels, problem.clip, problem.scale
        # Features built here from the checked image: finite by construction.
        # Every parameter was checked by describe(); the probabilities are
        # checked with the unary, below.
        terms: list = []  # (features, or None for a kept term; the term's spec)
        built: list = [None] * len(problem.terms)
        keys: list = [None] * len(problem.terms)
        n_points = int(np.prod(spatial))
        for i, t in enumerate(problem.terms):
            # the bandwidths as checked by describe(): the values grid_features takes
            if t.srgb is None:
                keys[i] = position_terms.key(spatial, t, k)
                built[i] = position_terms.get(keys[i])
                feats = (
                    None
                    if built[i] is not None
                    else _C.grid_features(list(spatial), list(t.sxy), None, [], self.threads)
                )
            else:
                feats = _C.grid_features(
                    list(spatial), list(t.sxy), im.reshape(-1, im.shape[-1]), list(t.srgb), self.threads
                )
            terms.append((feats, (t.compat_kind, t.compat, t.normalization, t.kernel)))
        # On 2 or 3 threads: the last term's lattice (the bilateral one, the
        # costliest) first on all threads; then its normalisation on this thread
        # beside the other term (lattice and normalisation) on a helper thread
        # with one native thread; then both share the unary pass, in chunks of
        # rows taken first come first served (_C.UnaryJob), so whichever
        # finishes first takes more of it. The Gaussian lattice gains nothing
        # from a second thread, the bilateral one 1.6x; two one-thread jobs side
        # by side nearly 2x (benchmarks/RESULTS.md, "Speed work"). The same
        # bits either way: lattices, terms and the unary do not depend on
        # thread counts.
        total = self.threads or _C.get_num_threads()
        # (a kept position-only term leaves only the other one to build: no split)
        split = len(terms) == 2 and 2 <= total <= 3 and built[0] is None and built[1] is None
        helper = last_lattice = job = None
        if split:
            job = _unary_job(p_last, clip=clip, scale=scale)  # None: the unary stays on this thread
            last_lattice = self.lattice(terms[1][0], total)
            f0, spec0 = terms[0]
            helper = _TermBuilder(self, f0, spec0, k, 1, then=None if job is None else (lambda: job.run(1)))
        mine = total - 1 if helper else self.threads
        try:
            if split:
                f1, spec1 = terms[1]
                built[1] = self.term(f1, spec1, k, mine, lattice=last_lattice)
            unary, (lo, hi, worst), start = _unary_from_probs(
                p_last, clip=clip, scale=scale, with_stats=True, threads=mine, with_start=True, job=job
            )
            if worst > 1e-2:
                # 1e-2: a float16 softmax is off by up to ~K * 5e-4; anything more is
                # not a probability distribution (logits or sigmoid scores, say).
                sums = p_last.sum(axis=-1, dtype=np.float64)
                raise ValueError(sums_message(sums, problem.label_axis))
            check_prob_range(lo, hi, p_last.size)
            if not split:
                for i, (f, spec) in enumerate(terms):
                    if built[i] is None:
                        built[i] = self.term(f, spec, k, mine)
        finally:
            if helper is not None:
                helper.join()
        if helper is not None:
            built[0] = helper.result()
        for i, key in enumerate(keys):
            if key is not None:
                position_terms.put(key, n_points, built[i])
        # unary: checked above (finite, from probabilities in [0, 1] summing to
        # one); start: softmax(-unary) from the same pass. The terms in their
        # order: the fused pass adds them in it.
        q = self.mean_field(
            unary, [b[0] for b in built], problem.n_iter, start=start, compats=[t.compat for t in problem.terms]
        )
        return q.reshape(p_last.shape)


def sums_message(sums: np.ndarray, label_axis) -> str:
    """The error for probabilities whose sums over the labels (``sums``, float64) are not one."""
    worst = float(sums.ravel()[np.argmax(np.abs(sums - 1.0))]) if sums.size else 1.0
    return (
        f"probs must sum to one over the label axis (axis {label_axis}); the worst pixel sums to "
        f"{worst:g}. Pass softmax probabilities, or build the unary yourself and use DenseCRF"
    )


class _TermBuilder(threading.Thread):
    """Builds one term (:meth:`CpuBackend.term`) on a thread of its own,
    then runs ``then`` (a callable of no arguments) if given."""

    def __init__(self, backend, f, spec, labels, threads, then=None):
        super().__init__(name="densecrf-term", daemon=True)
        self._job = (backend, f, spec, labels, threads, then)
        self._out = self._err = None
        self.start()

    def run(self):
        backend, f, spec, labels, threads, then = self._job
        try:
            self._out = backend.term(f, spec, labels, threads)
            if then is not None:
                then()
        except BaseException as exc:  # every exception, KeyboardInterrupt too, is re-raised by result()
            self._err = exc

    def result(self):
        if self._err is not None:
            raise self._err
        return self._out


__all__ = ["CpuBackend", "Normalization"]
