"""Dense CRF inference on numpy arrays: DenseCRF, DenseCRF2D and refine()."""

from __future__ import annotations

import enum
import numbers
import threading

import numpy as np

from . import _checks
from ._native import _C
from .features import _unary_from_probs, _unary_job, check_prob_range
from .lattice import PermutohedralLattice


class Normalization(enum.IntEnum):
    """How a pairwise kernel is normalised (Kraehenbuehl's NormalizationType).

    With n = K 1 (the filter of a constant one) and D = diag(n):
    NONE filters with K; BEFORE with K D^-1; AFTER with D^-1 K; SYMMETRIC
    with D^-1/2 K D^-1/2 (the default, as in pydensecrf).
    """

    NONE = 0
    BEFORE = 1
    AFTER = 2
    SYMMETRIC = 3


class KernelType(enum.IntEnum):
    """Kraehenbuehl's KernelType: how kernel parameters would be learned.

    It does not change inference; it is kept for API compatibility.
    """

    CONST = 0
    DIAG = 1
    FULL = 2


def _enum_arg(value, enum_cls, name):
    if isinstance(value, str):
        try:
            return enum_cls[value.upper()]
        except KeyError:
            opts = ", ".join(repr(m.name.lower()) for m in enum_cls)
            raise ValueError(f"{name} must be one of {opts}, got {value!r}") from None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        try:
            return enum_cls(int(value))
        except ValueError:
            raise ValueError(f"{name} must be one of {[int(m) for m in enum_cls]}, got {int(value)}") from None
    raise TypeError(f"{name} must be a string or an integer, got {type(value).__name__}")


def _compat_arg(compat, n_labels: int):
    """Returns (kind, flat float32 values) for a Potts number, a [K] diagonal or a [K, K] matrix."""
    if isinstance(compat, numbers.Real) and not isinstance(compat, (bool, np.bool_)):
        return 0, np.array([_checks.finite_scalar(compat, "compat")], dtype=np.float32)
    c = _checks.as_f32(compat, "compat")
    if c.ndim == 0:
        return 0, c.reshape(1)
    if c.ndim == 1:
        if c.shape[0] != n_labels:
            raise ValueError(f"a diagonal compat must have {n_labels} values (one per label), got shape {_checks.shape_str(c.shape)}")
        return 1, c
    if c.ndim == 2:
        if c.shape != (n_labels, n_labels):
            raise ValueError(f"a matrix compat must have shape ({n_labels}, {n_labels}), got {_checks.shape_str(c.shape)}")
        return 2, c.ravel()
    raise ValueError(f"compat must be a number, a [K] vector or a [K, K] matrix, got shape {_checks.shape_str(c.shape)}")


class DenseCRF:
    r"""A fully connected CRF over N points and K labels (Kraehenbuehl and Koltun 2011).

    Energy: :math:`E(x) = \sum_i U_i(x_i) + \sum_t \sum_{i \ne j} \mu_t(x_i, x_j)\, k_t(f^t_i, f^t_j)`
    with Gaussian kernels :math:`k_t` over per-term features. Mean-field
    inference iterates

    .. math:: Q_i \leftarrow \operatorname{softmax}\big(-U_i - \textstyle\sum_t \mu_t\, (\bar K_t Q)_i\big)

    where :math:`\bar K_t` is the lattice filter with the term's
    normalisation. A Potts compatibility ``w`` means :math:`\mu = -w I`
    (adds ``+w * filtered Q`` to the logits, pydensecrf's sign); a diagonal
    ``[K]`` or matrix ``[K, K]`` compatibility is used as given (an energy).
    Results match pydensecrf with the same parameters (same lattice, same
    weights, float32 arithmetic).

    Args:
        n_points: N >= 0 (N = 0 gives empty results).
        n_labels: K >= 1.
        threads: threads for native work (default: all cores).
    """

    def __init__(self, n_points: int, n_labels: int, *, threads: int | None = None):
        self.n_points = _checks.positive_int(n_points, "n_points", minimum=0)
        self.n_labels = _checks.positive_int(n_labels, "n_labels")
        self._threads = _checks.threads_arg(threads)
        self._unary = None
        self._start = None  # a _C.StartQ for the next inference (set by refine), or None
        self._terms = []
        self._term_info = []

    # -- energy -----------------------------------------------------------
    def set_unary(self, unary) -> None:
        """Sets the unary energies ``[N, K]`` (e.g. -log p, see :func:`unary_from_softmax`)."""
        u = _checks.as_f32(unary, "unary")
        if u.shape != (self.n_points, self.n_labels):
            raise ValueError(f"unary must have shape ({self.n_points}, {self.n_labels}) = (N, K), got {_checks.shape_str(u.shape)}")
        self._unary = u
        self._start = None

    def add_pairwise(self, features, compat, *, kernel="diag", normalization="symmetric") -> None:
        """Adds a Gaussian pairwise term over ``features`` ``[N, d]`` (already divided by the bandwidths).

        ``compat``: Potts weight (number), diagonal ``[K]`` or matrix ``[K, K]``.
        ``normalization``: 'symmetric' (default), 'before', 'after' or 'none'
        (or a :class:`Normalization`). ``kernel`` ('const', 'diag', 'full') is
        accepted for compatibility and does not change inference.
        """
        f = _checks.as_f32(features, "features", ndim=2)
        if f.shape[0] != self.n_points:
            raise ValueError(f"features must have shape ({self.n_points}, d) = (N, d), got {_checks.shape_str(f.shape)}")
        if not 1 <= f.shape[1] <= 32:
            raise ValueError(f"features must have 1 to 32 columns, got shape {_checks.shape_str(f.shape)}")
        self._add_term(f, compat, kernel, normalization)

    def _add_term(self, f, compat, kernel, normalization) -> None:
        # f: [N, d] C-contiguous finite float32 (checked by the caller, or
        # built here from checked inputs).
        self._append_term(self._build_term(f, self._term_args(compat, kernel, normalization), self._threads))

    def _term_args(self, compat, kernel, normalization) -> tuple:
        """Checked (compat kind, compat values, Normalization, KernelType) of a term."""
        kind, values = _compat_arg(compat, self.n_labels)
        return kind, values, _enum_arg(normalization, Normalization, "normalization"), _enum_arg(kernel, KernelType, "kernel")

    def _build_term(self, f, args, threads: int, lattice=None) -> tuple:
        """Native work of a term (lattice build, unless given, and normalisation) on
        checked arguments; touches nothing shared, so two terms may be built at once
        on two Python threads."""
        kind, values, norm, ktype = args
        lat = PermutohedralLattice._of_checked(f, threads or None) if lattice is None else lattice
        term = _C.PairwiseTerm(lat._lat, int(norm), kind, values, self.n_labels, threads)
        return term, {"lattice": lat, "normalization": norm, "kernel": ktype, "compat": values.copy(), "compat_kind": kind,
                      "features": f}

    def _append_term(self, built) -> None:
        self._terms.append(built[0])
        self._term_info.append(built[1])

    @property
    def terms(self) -> list:
        """Per-term information: lattice, normalization, kernel type and compatibility."""
        return list(self._term_info)

    # -- inference --------------------------------------------------------
    def _unary_or_zero(self) -> np.ndarray:
        if self._unary is None:
            self._unary = np.zeros((self.n_points, self.n_labels), dtype=np.float32)
        return self._unary

    def inference(self, n_iter: int = 5, *, device="cpu") -> np.ndarray:
        """Runs ``n_iter`` mean-field iterations from softmax(-U); returns Q ``[N, K]`` float32.

        ``device``: 'cpu', or 'cuda' / 'cuda:N' to run on the CUDA backend.
        """
        n_iter = _checks.positive_int(n_iter, "n_iter", minimum=0)
        if device is not None and str(device) != "cpu":
            from . import cuda

            pairwise = []
            for info in self._term_info:
                v, kind = info["compat"], info["compat_kind"]
                c = float(v[0]) if kind == 0 else v if kind == 1 else v.reshape(self.n_labels, self.n_labels)
                pairwise.append((info["features"], c, info["normalization"]))
            return cuda.mean_field(self._unary_or_zero(), pairwise, n_iter=n_iter, device=device)
        return self._mean_field(n_iter, None)

    def start_inference(self) -> np.ndarray:
        """The initial distribution Q = softmax(-U), ``[N, K]``."""
        return _C.mean_field(self._unary_or_zero(), self._terms, 0, None, self._threads)

    def step_inference(self, Q) -> np.ndarray:
        """One mean-field iteration from ``Q`` ``[N, K]``; returns a new array (Q is not modified)."""
        q = self._check_q(Q)
        return self._mean_field(1, q)

    def _mean_field(self, n_iter: int, q) -> np.ndarray:
        # The native loop flags rows whose logits overflowed (they come out
        # NaN) while it writes them, instead of a second pass over Q here.
        start, self._start = (self._start if q is None else None), None
        try:
            return _C.mean_field(self._unary_or_zero(), self._terms, n_iter, q, self._threads, check_finite=True,
                                 start=start)
        except FloatingPointError:
            u = float(np.abs(self._unary_or_zero()).max())
            c = max((float(np.abs(t["compat"]).max()) for t in self._term_info), default=0.0)
            raise ValueError(
                f"mean-field inference overflowed float32 (the logits reached infinity): unary energies up to "
                f"{u:g} and compatibilities up to {c:g} in magnitude are too large; scale them down"
            ) from None

    def map(self, n_iter: int = 5, *, device="cpu") -> np.ndarray:
        """MAP labels ``[N]`` (int64) after ``n_iter`` iterations (on ``device``, see inference)."""
        return np.argmax(self.inference(n_iter, device=device), axis=1)

    def pairwise_messages(self, Q) -> list:
        """Each term's message compat(filter(Q)) ``[N, K]`` (an energy, Kraehenbuehl's sign)."""
        q = self._check_q(Q)
        return [t.apply(q, False, self._threads) for t in self._terms]

    def kl_divergence(self, Q) -> float:
        r"""KL divergence of Q from the CRF distribution up to the log-partition constant.

        :math:`\sum_i \sum_l Q_{il} \log Q_{il} + \sum Q U + \sum_t \sum Q \cdot \mu_t(\bar K_t Q)`,
        accumulated in float64, as Kraehenbuehl's ``klDivergence``.
        """
        q = self._check_q(Q)
        q64 = q.astype(np.float64)
        kl = float(np.sum(q64 * np.log(np.maximum(q64, 1e-20))))
        kl += float(np.sum(self._unary_or_zero().astype(np.float64) * q64))
        for m in self.pairwise_messages(q):
            kl += float(np.sum(q64 * m))
        return kl

    def _check_q(self, Q) -> np.ndarray:
        q = _checks.as_f32(Q, "Q")
        if q.shape != (self.n_points, self.n_labels):
            raise ValueError(f"Q must have shape ({self.n_points}, {self.n_labels}) = (N, K), got {_checks.shape_str(q.shape)}")
        return q


class DenseCRF2D(DenseCRF):
    """A dense CRF on a ``width`` x ``height`` image grid (points in row-major pixel order).

    Position features are (x, y) = (column, row), as in pydensecrf's DenseCRF2D.
    """

    def __init__(self, width: int, height: int, n_labels: int, *, threads: int | None = None):
        self.width = _checks.positive_int(width, "width")
        self.height = _checks.positive_int(height, "height")
        super().__init__(self.width * self.height, n_labels, threads=threads)

    def _positions(self, sxy) -> np.ndarray:
        return grid_positions((self.height, self.width), sxy)

    def add_pairwise_gaussian(self, sxy, compat, *, kernel="diag", normalization="symmetric") -> None:
        """Smoothness term: Gaussian over (x/sx, y/sy); ``sxy`` a number or (sx, sy)."""
        self._add_term(self._positions(sxy), compat, kernel, normalization)

    def add_pairwise_bilateral(self, sxy, srgb, image, compat, *, kernel="diag",
                               normalization="symmetric") -> None:
        """Appearance term: Gaussian over (x/sx, y/sy, c_1/s_1, ..., c_C/s_C).

        ``image``: ``[height, width, C]`` (any number of channels, any real
        dtype, uint8 used as 0..255) or ``[height, width]``; ``srgb`` a number
        or one bandwidth per channel.
        """
        im = _checks.as_f32(image, "image")
        if im.ndim == 2:
            im = im[..., None]
        if im.ndim != 3 or im.shape[:2] != (self.height, self.width):
            raise ValueError(f"image must have shape ({self.height}, {self.width}, C) = (height, width, channels), got {_checks.shape_str(im.shape)}")
        c = im.shape[2]
        if not 1 <= c <= 30:
            raise ValueError(f"image must have 1 to 30 channels, got {c}")
        self._add_term(_grid_features((self.height, self.width), sxy, im, srgb, self._threads or None), compat, kernel,
                       normalization)

    def add_params(self, params, image) -> int:
        """Adds the terms of a :class:`densecrf.params.CRFParams` (or its dict
        or JSON path): the Gaussian and bilateral terms it keeps, with its
        normalisation. Returns its ``n_iter`` for :meth:`inference`."""
        from .params import as_params

        p = as_params(params)
        kw = p.refine_kwargs()
        if kw["gaussian_compat"] is not None:
            self.add_pairwise_gaussian(kw["gaussian_sxy"], kw["gaussian_compat"], normalization=p.normalization)
        if kw["bilateral_compat"] is not None:
            self.add_pairwise_bilateral(kw["bilateral_sxy"], kw["bilateral_srgb"], image, kw["bilateral_compat"],
                                        normalization=p.normalization)
        return p.n_iter


def grid_positions(spatial, sdims) -> np.ndarray:
    """Position features of a grid in (x, y, z, ...) order: the last axis first.

    For a 2-D image this is (column / sx, row / sy), pydensecrf's DenseCRF2D order.
    Returns ``[prod(spatial), len(spatial)]`` float32.
    """
    return _grid_features(spatial, sdims)


def _grid_features(spatial, sdims, image=None, srgb=None, threads=None, srgb_name="srgb") -> np.ndarray:
    """``[N, ndim (+ C)]`` float32: grid positions / sdims (last axis first),
    then, with ``image`` (float32 ``[*spatial, C]``), the channels / srgb.

    Built natively in one parallel pass; every value is the float32
    quotient of the plain numpy expression.
    """
    spatial = tuple(_checks.positive_int(s, "spatial") for s in spatial)
    nd = len(spatial)
    s = _checks.per_axis(sdims, nd, "sxy")
    if image is None:
        return _C.grid_features(list(spatial), s, None, [], _checks.threads_arg(threads))
    c = image.shape[-1]
    sc = _checks.per_axis(srgb, c, srgb_name)
    return _C.grid_features(list(spatial), s, image.reshape(-1, c), sc, _checks.threads_arg(threads))


class _TermBuilder(threading.Thread):
    """Builds one term (``DenseCRF._build_term``) on a thread of its own,
    then runs ``then`` (a callable of no arguments) if given."""

    def __init__(self, crf, f, args, threads, then=None):
        super().__init__(name="densecrf-term", daemon=True)
        self._job = (crf, f, args, threads, then)
        self._out = self._err = None
        self.start()

    def run(self):
        crf, f, args, threads, then = self._job
        try:
            self._out = crf._build_term(f, args, threads)
            if then is not None:
                then()
        except BaseException as exc:  # handed to the caller by result()
            self._err = exc

    def result(self):
        if self._err is not None:
            raise self._err
        return self._out


def refine(image, probs, *, channel_axis: int = -1, n_iter: int = 5,
           gaussian_sxy=3.0, gaussian_compat=3.0,
           bilateral_sxy=80.0, bilateral_srgb=13.0, bilateral_compat=10.0,
           clip: float = 1e-5, scale: float | None = None, normalization="symmetric",
           threads: int | None = None, device="cpu", params=None) -> np.ndarray:
    """Refines per-pixel class probabilities with a dense CRF along the image's edges.

    Args:
        image: ``[*spatial, C]`` image or volume (uint8 0..255 or float in the
            same units as ``bilateral_srgb``), or ``[*spatial]`` for one channel.
        probs: ``[*spatial, K]`` probabilities summing to one over labels (label
            axis at ``channel_axis``), e.g. a network's softmax.
        n_iter: mean-field iterations.
        gaussian_sxy, gaussian_compat: smoothness term (bandwidth in pixels,
            Potts weight, or a [K] / [K, K] compatibility); compat None drops the term.
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance term; srgb
            a number or one bandwidth per channel; compat None drops the term.
        clip, scale: see :func:`unary_from_softmax`.
        normalization: kernel normalisation of both terms.
        threads: native threads (default: all cores).
        device: 'cpu', or 'cuda' / 'cuda:N' for the CUDA backend (see
            :func:`densecrf.cuda.refine`, which also takes torch and CuPy arrays).
        params: a :class:`densecrf.params.CRFParams`, a dict in its JSON
            layout or a path to its JSON file (what ``densecrf.fit`` writes);
            its values replace ``n_iter``, the five term arguments and
            ``normalization``.

    Returns:
        Refined probabilities, float32, the same shape as ``probs``.

    The defaults are pydensecrf's classic parameters; for a 2-D image the
    result equals pydensecrf's DenseCRF2D with addPairwiseGaussian(3, 3) and
    addPairwiseBilateral(80, 13, image, 10) after 5 iterations.
    """
    if params is not None:
        from .params import as_params

        kw = as_params(params).refine_kwargs()
        n_iter, normalization = kw["n_iter"], kw["normalization"]
        gaussian_sxy, gaussian_compat = kw["gaussian_sxy"], kw["gaussian_compat"]
        bilateral_sxy, bilateral_srgb, bilateral_compat = kw["bilateral_sxy"], kw["bilateral_srgb"], kw["bilateral_compat"]
    if device is not None and str(device) != "cpu":
        from . import cuda

        return cuda.refine(image, probs, channel_axis=channel_axis, device=device, n_iter=n_iter,
                           gaussian_sxy=gaussian_sxy, gaussian_compat=gaussian_compat,
                           bilateral_sxy=bilateral_sxy, bilateral_srgb=bilateral_srgb,
                           bilateral_compat=bilateral_compat, clip=clip, scale=scale,
                           normalization=normalization)
    p = _checks.as_f32(probs, "probs", finite=False)  # finiteness: checked natively with the unary
    if p.ndim < 2:
        raise ValueError(f"probs must be [*spatial, K] with at least one spatial axis, got shape {_checks.shape_str(p.shape)}")
    if not -p.ndim <= channel_axis < p.ndim:
        raise ValueError(f"channel_axis={channel_axis} is out of range for probs of shape {_checks.shape_str(p.shape)}")
    p_last = np.moveaxis(p, channel_axis, -1)
    spatial, k = p_last.shape[:-1], p_last.shape[-1]
    if k < 1 or min(spatial) < 1:
        raise ValueError(f"probs must have at least one label and one pixel, got shape {_checks.shape_str(p.shape)}")
    im = _checks.as_f32(image, "image")
    if im.shape == spatial:
        im = im[..., None]
    if im.ndim != len(spatial) + 1 or im.shape[:-1] != spatial:
        raise ValueError(f"image must have shape ({', '.join(map(str, spatial))}, C) matching probs' spatial shape, got {_checks.shape_str(im.shape)}")
    n = int(np.prod(spatial))
    crf = DenseCRF(n, k, threads=threads)
    # Features built here from the checked image: finite by construction.
    # Every parameter is checked before any lattice is built; the
    # probabilities are checked with the unary, below.
    terms = []
    if gaussian_compat is not None:
        terms.append((_grid_features(spatial, gaussian_sxy, threads=threads), crf._term_args(gaussian_compat, "diag", normalization)))
    if bilateral_compat is not None:
        feats = _grid_features(spatial, bilateral_sxy, im, bilateral_srgb, threads, srgb_name="bilateral_srgb")
        terms.append((feats, crf._term_args(bilateral_compat, "diag", normalization)))
    # On 2 or 3 threads: the last term's lattice (the bilateral one, the
    # costliest) first on all threads; then its normalisation on this thread
    # beside the other term (lattice and normalisation) on a helper thread
    # with one native thread; then both share the unary pass, in chunks of
    # rows taken first come first served (_C.UnaryJob), so whichever
    # finishes first takes more of it. The Gaussian lattice gains nothing
    # from a second thread, the bilateral one 1.6x; two one-thread jobs side
    # by side nearly 2x (benchmarks/RESULTS.md, "Speed work", sessions 4 and
    # 6). The same bits either way: lattices, terms and the unary do not
    # depend on thread counts.
    total = crf._threads or _C.get_num_threads()
    split = len(terms) == 2 and 2 <= total <= 3
    helper = last_lattice = job = None
    if split:
        job = _unary_job(p_last, clip=clip, scale=scale)  # None: the unary stays on this thread
        last_lattice = PermutohedralLattice._of_checked(terms[1][0], total)
        helper = _TermBuilder(crf, *terms[0], 1, then=None if job is None else (lambda: job.run(1)))
    mine = total - 1 if helper else crf._threads
    built = [None] * len(terms)
    try:
        if split:
            built[1] = crf._build_term(*terms[1], mine, lattice=last_lattice)
        try:
            unary, (lo, hi, worst), start = _unary_from_probs(p_last, clip=clip, scale=scale, with_stats=True,
                                                              threads=mine, with_start=True, job=job)
        except ValueError as exc:
            if "finite" in str(exc):  # report the index in the caller's layout
                _checks.check_finite(p, "probs")
            raise
        if worst > 1e-2:
            # 1e-2: a float16 softmax is off by up to ~K * 5e-4; anything more is
            # not a probability distribution (logits or sigmoid scores, say).
            sums = p_last.sum(axis=-1, dtype=np.float64)
            raise ValueError(
                f"probs must sum to one over the label axis (axis {channel_axis}); the worst pixel sums to "
                f"{float(sums.ravel()[np.argmax(np.abs(sums - 1.0))]):g}. Pass softmax probabilities, "
                "or build the unary yourself and use DenseCRF"
            )
        check_prob_range(lo, hi, p.size)
        crf._unary = unary  # checked above: finite, from probabilities in [0, 1] summing to one
        crf._start = start  # softmax(-unary) from the same pass, used by the first inference
        if not split:
            for i, (f, args) in enumerate(terms):
                built[i] = crf._build_term(f, args, mine)
    finally:
        if helper is not None:
            helper.join()
    if helper is not None:
        built[0] = helper.result()
    for b in built:  # in the terms' order: the fused pass adds them in it
        crf._append_term(b)
    q = crf.inference(n_iter).reshape(p_last.shape)
    return np.ascontiguousarray(np.moveaxis(q, -1, channel_axis))
