"""Dense CRF inference on numpy arrays: DenseCRF, DenseCRF2D, refine() and refine_batch()."""

from __future__ import annotations

import numpy as np

from . import _checks, cuda
from .backends import cpu64, pipeline
from .backends.cpu import CpuBackend
from .backends.problem import KernelType, Normalization, compat_arg, compat_value, enum_arg
from .features import _grid_features

# The names other modules and tests knew here.
_compat_arg, _enum_arg = compat_arg, enum_arg


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
        dtype: the computation dtype, ``numpy.float32`` (None, the default:
            the fast path, pydensecrf's arithmetic) or ``numpy.float64``:
            unary, features, compatibilities, lattice, filters and mean
            field all in float64 (the same lattice computed in double, a
            simple scalar path several times slower); inference then
            returns float64, on the CPU or (``device='cuda'``) on the GPU
            (the double instantiation of the CUDA kernels).
    """

    def __init__(self, n_points: int, n_labels: int, *, threads: int | None = None, dtype=None):
        self.n_points = _checks.positive_int(n_points, "n_points", minimum=0)
        self.n_labels = _checks.positive_int(n_labels, "n_labels")
        self.dtype = _checks.dtype_arg(dtype)
        self._f64 = self.dtype == np.float64
        self._backend = CpuBackend(threads)
        self._threads = self._backend.threads
        self._unary: np.ndarray | None = None
        self._terms: list = []  # native pairwise terms, in the order their messages are summed
        self._term_info: list[dict] = []

    # -- energy -----------------------------------------------------------
    def set_unary(self, unary) -> None:
        """Sets the unary energies ``[N, K]`` (e.g. -log p, see :func:`unary_from_softmax`)."""
        u = self._as_dtype(unary, "unary")
        if u.shape != (self.n_points, self.n_labels):
            raise ValueError(
                f"unary must have shape ({self.n_points}, {self.n_labels}) = (N, K), got {_checks.shape_str(u.shape)}"
            )
        self._unary = u

    def add_pairwise(self, features, compat, *, kernel="diag", normalization="symmetric") -> None:
        """Adds a Gaussian pairwise term over ``features`` ``[N, d]`` (already divided by the bandwidths).

        ``compat``: Potts weight (number), diagonal ``[K]`` or matrix ``[K, K]``.
        ``normalization``: 'symmetric' (default), 'before', 'after' or 'none'
        (or a :class:`Normalization`). ``kernel`` ('const', 'diag', 'full') is
        accepted for compatibility and does not change inference.
        """
        f = self._as_dtype(features, "features", ndim=2)
        if f.shape[0] != self.n_points:
            raise ValueError(
                f"features must have shape ({self.n_points}, d) = (N, d), got {_checks.shape_str(f.shape)}"
            )
        if not 1 <= f.shape[1] <= 32:
            raise ValueError(f"features must have 1 to 32 columns, got shape {_checks.shape_str(f.shape)}")
        self._add_term(f, compat, kernel, normalization)

    def _as_dtype(self, x, name: str, ndim: int | None = None) -> np.ndarray:
        """x as a checked C-contiguous finite array in the CRF's dtype."""
        return _checks.as_f64(x, name, ndim) if self._f64 else _checks.as_f32(x, name, ndim)

    def _add_term(self, f, compat, kernel, normalization) -> None:
        # f: [N, d] C-contiguous finite float32 (checked by the caller, or
        # built here from checked inputs).
        self._append_term(self._build_term(f, self._term_args(compat, kernel, normalization), self._threads))

    def _term_args(self, compat, kernel, normalization) -> tuple:
        """Checked (compat kind, compat values, Normalization, KernelType) of a term."""
        kind, values = compat_arg(compat, self.n_labels, self.dtype)
        return (
            kind,
            values,
            enum_arg(normalization, Normalization, "normalization"),
            enum_arg(kernel, KernelType, "kernel"),
        )

    def _build_term(self, f, args, threads: int, lattice=None) -> tuple:
        """Native work of a term (lattice build, unless given, and normalisation) on
        checked arguments (the CPU backend's)."""
        kind, values, norm, ktype = args
        if self._f64:
            lat = cpu64.lattice64(f, threads) if lattice is None else lattice
            term = cpu64.Term64(lat, norm, kind, values, self.n_labels, threads)
        else:
            term, lat = self._backend.term(f, args, self.n_labels, threads, lattice)
        return term, {
            "lattice": lat,
            "normalization": norm,
            "kernel": ktype,
            "compat": values.copy(),
            "compat_kind": kind,
            "features": f,
        }

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
            self._unary = np.zeros((self.n_points, self.n_labels), dtype=self.dtype)
        return self._unary

    def inference(self, n_iter: int = 5, *, device="cpu") -> np.ndarray:
        """Runs ``n_iter`` mean-field iterations from softmax(-U); returns Q ``[N, K]``
        in the CRF's dtype (float32 unless made with ``dtype=numpy.float64``).

        ``device``: 'cpu', or 'cuda' / 'cuda:N' to run on the CUDA backend
        (in the CRF's dtype).
        """
        n_iter = _checks.positive_int(n_iter, "n_iter", minimum=0)
        if device is not None and str(device) != "cpu":
            pairwise = [
                (
                    info["features"],
                    compat_value(info["compat_kind"], info["compat"], self.n_labels),
                    info["normalization"],
                )
                for info in self._term_info
            ]
            return cuda.mean_field(self._unary_or_zero(), pairwise, n_iter=n_iter, device=device, dtype=self.dtype)
        return self._mean_field(n_iter, None)

    def start_inference(self) -> np.ndarray:
        """The initial distribution Q = softmax(-U), ``[N, K]``."""
        if self._f64:
            return cpu64.softmax_neg(self._unary_or_zero())
        return self._backend.mean_field(self._unary_or_zero(), self._terms, 0, check_finite=False)

    def step_inference(self, Q) -> np.ndarray:
        """One mean-field iteration from ``Q`` ``[N, K]``; returns a new array (Q is not modified)."""
        q = self._check_q(Q)
        return self._mean_field(1, q)

    def _mean_field(self, n_iter: int, q) -> np.ndarray:
        # The native loop flags rows whose logits overflowed (they come out
        # NaN) while it writes them, instead of a second pass over Q here.
        if self._f64:
            return cpu64.mean_field(self._unary_or_zero(), self._terms, n_iter, q)
        return self._backend.mean_field(
            self._unary_or_zero(), self._terms, n_iter, q, compats=[t["compat"] for t in self._term_info]
        )

    def map(self, n_iter: int = 5, *, device="cpu") -> np.ndarray:
        """MAP labels ``[N]`` (int64) after ``n_iter`` iterations (on ``device``, see inference)."""
        return np.argmax(self.inference(n_iter, device=device), axis=1)

    def pairwise_messages(self, Q) -> list:
        """Each term's message compat(filter(Q)) ``[N, K]`` (an energy, Kraehenbuehl's sign)."""
        q = self._check_q(Q)
        if self._f64:
            return [t.apply(q) for t in self._terms]
        return [self._backend.message(t, q) for t in self._terms]

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
        q = self._as_dtype(Q, "Q")
        if q.shape != (self.n_points, self.n_labels):
            raise ValueError(
                f"Q must have shape ({self.n_points}, {self.n_labels}) = (N, K), got {_checks.shape_str(q.shape)}"
            )
        return q


class DenseCRF2D(DenseCRF):
    """A dense CRF on a ``width`` x ``height`` image grid (points in row-major pixel order).

    Position features are (x, y) = (column, row), as in pydensecrf's DenseCRF2D.
    """

    def __init__(self, width: int, height: int, n_labels: int, *, threads: int | None = None, dtype=None):
        self.width = _checks.positive_int(width, "width")
        self.height = _checks.positive_int(height, "height")
        super().__init__(self.width * self.height, n_labels, threads=threads, dtype=dtype)

    def _positions(self, sxy) -> np.ndarray:
        if self._f64:
            return cpu64.grid_features64((self.height, self.width), _checks.per_axis(sxy, 2, "sxy"))
        return grid_positions((self.height, self.width), sxy)

    def add_pairwise_gaussian(self, sxy, compat, *, kernel="diag", normalization="symmetric") -> None:
        """Smoothness term: Gaussian over (x/sx, y/sy); ``sxy`` a number or (sx, sy)."""
        self._add_term(self._positions(sxy), compat, kernel, normalization)

    def add_pairwise_bilateral(self, sxy, srgb, image, compat, *, kernel="diag", normalization="symmetric") -> None:
        """Appearance term: Gaussian over (x/sx, y/sy, c_1/s_1, ..., c_C/s_C).

        ``image``: ``[height, width, C]`` (any number of channels, any real
        dtype, uint8 used as 0..255) or ``[height, width]``; ``srgb`` a number
        or one bandwidth per channel.
        """
        im = self._as_dtype(image, "image")
        if im.ndim == 2:
            im = im[..., None]
        if im.ndim != 3 or im.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"image must have shape ({self.height}, {self.width}, C) = (height, width, channels), got {_checks.shape_str(im.shape)}"
            )
        c = im.shape[2]
        if not 1 <= c <= 30:
            raise ValueError(f"image must have 1 to 30 channels, got {c}")
        if self._f64:
            feats = cpu64.grid_features64(
                (self.height, self.width), _checks.per_axis(sxy, 2, "sxy"), im, _checks.per_axis(srgb, c, "srgb")
            )
        else:
            feats = _grid_features((self.height, self.width), sxy, im, srgb, self._threads or None)
        self._add_term(
            feats,
            compat,
            kernel,
            normalization,
        )

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
            self.add_pairwise_bilateral(
                kw["bilateral_sxy"], kw["bilateral_srgb"], image, kw["bilateral_compat"], normalization=p.normalization
            )
        return p.n_iter


def grid_positions(spatial, sdims) -> np.ndarray:
    """Position features of a grid in (x, y, z, ...) order: the last axis first.

    For a 2-D image this is (column / sx, row / sy), pydensecrf's DenseCRF2D order.
    Returns ``[prod(spatial), len(spatial)]`` float32.
    """
    return _grid_features(spatial, sdims)


def refine(
    image,
    probs,
    *,
    channel_axis: int = -1,
    n_iter: int = 5,
    gaussian_sxy=3.0,
    gaussian_compat=3.0,
    bilateral_sxy=80.0,
    bilateral_srgb=13.0,
    bilateral_compat=10.0,
    clip: float = 1e-5,
    scale: float | None = None,
    normalization="symmetric",
    threads: int | None = None,
    device="cpu",
    params=None,
    volume: bool = False,
    image_range=None,
    dtype=None,
) -> np.ndarray:
    """Refines per-pixel class probabilities with a dense CRF along the image's edges.

    Args:
        image: ``[*spatial, C]`` image, or ``[*spatial]`` for one channel, in
            0..255 units: ``bilateral_srgb`` is a colour difference on that
            scale. uint8 images are right as they are; a float image in 0..1
            needs ``image_range=(0, 1)`` (a float RGB image whose largest
            value is at most 1 gets a UserWarning otherwise).
        probs: ``[*spatial, K]`` probabilities summing to one over labels (label
            axis at ``channel_axis``), e.g. a network's softmax.
        channel_axis: the label axis of ``probs`` (``0`` for ``[K, H, W]``).
        n_iter: mean-field iterations.
        gaussian_sxy, gaussian_compat: smoothness term (bandwidth in pixels,
            Potts weight, or a [K] / [K, K] compatibility); compat None drops the term.
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance term; srgb
            a number or one bandwidth per channel; compat None drops the term.
        clip, scale: see :func:`unary_from_softmax`.
        normalization: kernel normalisation of both terms.
        threads: native threads (default: all cores).
        device: 'cpu', or 'cuda' / 'cuda:N' for the CUDA backend (which also
            takes torch and CuPy arrays and returns the same kind, see
            :mod:`densecrf.cuda`).
        params: a :class:`densecrf.params.CRFParams`, a dict in its JSON
            layout or a path to its JSON file (what ``densecrf.fit`` writes);
            its values replace ``n_iter``, the five term arguments and
            ``normalization``.
        volume: must be True for 3 or more spatial axes (``[D, H, W, C]``
            volumes, smoothed across all axes). Without it such input is
            refused, so that a stack of frames ``[B, H, W, C]`` is not taken
            for one volume by accident: refine a stack with
            :func:`refine_batch`.
        image_range: what the image's values span. None (default): 0..255
            units. ``(lo, hi)``: the values span lo..hi and are used as if
            mapped onto 0..255 (the colour bandwidths are scaled by
            ``(hi - lo) / 255``; the image itself is not copied or changed),
            e.g. ``(0, 1)`` for a float image in 0..1. ``'raw'``: the values
            as they are, ``bilateral_srgb`` in the image's own units (no
            warning). Images with other than 3 channels (medical
            intensities, feature maps) are always in the caller's units and
            never warned about.
        dtype: the computation dtype: ``numpy.float32`` (None, the default;
            the fast path, pydensecrf's answers, whatever the inputs' dtype)
            or ``numpy.float64`` (unary, features, lattice and mean field in
            float64, the same lattice in double, on the CPU backend or a CUDA
            ``device``; several times slower). Other values raise ValueError.

    Returns:
        Refined probabilities in ``dtype`` (float32 by default), the same shape as ``probs``.

    The defaults are pydensecrf's classic parameters; for a 2-D image the
    result equals pydensecrf's DenseCRF2D with addPairwiseGaussian(3, 3) and
    addPairwiseBilateral(80, 13, image, 10) after 5 iterations.
    """
    return pipeline.refine(
        image,
        probs,
        channel_axis=channel_axis,
        volume=volume,
        device=device,
        threads=threads,
        params=params,
        image_range=image_range,
        dtype=dtype,
        n_iter=n_iter,
        gaussian_sxy=gaussian_sxy,
        gaussian_compat=gaussian_compat,
        bilateral_sxy=bilateral_sxy,
        bilateral_srgb=bilateral_srgb,
        bilateral_compat=bilateral_compat,
        clip=clip,
        scale=scale,
        normalization=normalization,
    )


def refine_batch(
    images,
    probs,
    *,
    channels_first: bool = False,
    device="cpu",
    n_iter: int = 5,
    gaussian_sxy=3.0,
    gaussian_compat=3.0,
    bilateral_sxy=80.0,
    bilateral_srgb=13.0,
    bilateral_compat=10.0,
    clip: float = 1e-5,
    scale: float | None = None,
    normalization="symmetric",
    threads: int | None = None,
    params=None,
    volume: bool = False,
    image_range=None,
    dtype=None,
):
    """Refines a batch of images with one set of CRF parameters, on the CPU or a GPU.

    Each image is refined on its own, exactly as :func:`refine` would refine
    it (the same bits on the CPU): nothing is smoothed across images.

    Args:
        images, probs: a batch array each, ``[B, *spatial, C]`` and ``[B, *spatial, K]``
            (``[B, C, *spatial]`` and ``[B, K, *spatial]`` with ``channels_first``),
            or two lists of per-image arrays (``[*spatial_b, C]`` and
            ``[*spatial_b, K]``, or channels first) whose sizes may differ. All
            images share K, C and the number of spatial axes; an image may also
            be ``[*spatial]`` (one channel).
        channels_first: the layout of both images and probabilities: False
            (numpy's, as :func:`refine`'s default) or True (torch's).
        device: 'cpu' (one image after the other, each on ``threads`` native
            threads), or 'cuda' / 'cuda:N': the whole batch in one lattice
            build and one mean-field run (each image with its own lattice),
            numpy arrays or device arrays as :mod:`densecrf.cuda` takes them.
        volume: True to allow 3 or more spatial axes per image (volumes).

    The CRF arguments (``n_iter``, the Gaussian and bilateral terms, ``clip``,
    ``scale``, ``normalization``, ``threads``, ``params``), ``image_range``
    (images in 0..255 units unless stated) and ``dtype`` (float32 by
    default, float64 when asked, on either backend) are :func:`refine`'s.

    Returns:
        Refined probabilities in the layout of ``probs``: one array (in ``dtype``) for
        a batch array (of the input's library on a GPU), a list for lists.
    """
    return pipeline.refine_batch(
        images,
        probs,
        channels_first=channels_first,
        volume=volume,
        device=device,
        threads=threads,
        params=params,
        image_range=image_range,
        dtype=dtype,
        n_iter=n_iter,
        gaussian_sxy=gaussian_sxy,
        gaussian_compat=gaussian_compat,
        bilateral_sxy=bilateral_sxy,
        bilateral_srgb=bilateral_srgb,
        bilateral_compat=bilateral_compat,
        clip=clip,
        scale=scale,
        normalization=normalization,
    )
