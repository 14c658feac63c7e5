"""The refine problem, described once for every backend.

:func:`settings` resolves the caller's CRF arguments (or a ``params=``
file); :func:`probs_layout` and :func:`image_layout` check the shapes of one
image and its probabilities; :func:`describe` checks every parameter against
those shapes and returns a :class:`Problem`: the unary source (clip, scale),
the pairwise terms (bandwidths, compatibility, normalisation) and the
iterations. It holds no array and knows no array library: the CPU and CUDA
backends take the same :class:`Problem` and build the features, lattices and
mean field each in its own memory.
"""

from __future__ import annotations

import enum
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from .. import _checks


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


def enum_arg(value, enum_cls, name):
    """A member of ``enum_cls`` from its name (any case) or its integer value."""
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


# Compatibility kinds, as the native terms number them.
POTTS, DIAGONAL, MATRIX = 0, 1, 2


def compat_arg(compat, n_labels: int, dtype=np.float32):
    """Returns (kind, flat values) for a Potts number, a [K] diagonal or a [K, K]
    matrix; the values in ``dtype`` (float32, or float64 for the float64 backend)."""
    if isinstance(compat, numbers.Real) and not isinstance(compat, (bool, np.bool_)):
        return POTTS, np.array([_checks.finite_scalar(compat, "compat")], dtype=dtype)
    zero_d = np.ndim(compat) == 0  # a 0-d array is a Potts number (the conversion below makes it [1])
    c = _checks.as_f64(compat, "compat") if np.dtype(dtype) == np.float64 else _checks.as_f32(compat, "compat")
    if zero_d:
        return POTTS, c.reshape(1)
    if c.ndim == 1:
        if c.shape[0] != n_labels:
            raise ValueError(
                f"a diagonal compat must have {n_labels} values (one per label), got shape {_checks.shape_str(c.shape)}"
            )
        return DIAGONAL, c
    if c.ndim == 2:
        if c.shape != (n_labels, n_labels):
            raise ValueError(
                f"a matrix compat must have shape ({n_labels}, {n_labels}), got {_checks.shape_str(c.shape)}"
            )
        return MATRIX, c.ravel()
    raise ValueError(
        f"compat must be a number, a [K] vector or a [K, K] matrix, got shape {_checks.shape_str(c.shape)}"
    )


def compat_value(kind: int, values: np.ndarray, n_labels: int):
    """The caller's form of a checked compatibility: a float, a [K] or a [K, K] array."""
    return float(values[0]) if kind == POTTS else values if kind == DIAGONAL else values.reshape(n_labels, n_labels)


@dataclass(frozen=True)
class Term:
    """One Gaussian pairwise term of a grid: features are the positions
    divided by ``sxy`` (last axis first, as :func:`densecrf.grid_positions`),
    then, for a bilateral term, the image channels divided by ``srgb``."""

    name: str  # 'gaussian' or 'bilateral'
    sxy: tuple  # one positional bandwidth per spatial axis (floats as given)
    srgb: tuple | None  # one bandwidth per image channel (bilateral terms), else None
    compat_kind: int  # POTTS, DIAGONAL or MATRIX
    compat: np.ndarray  # [1], [K] or [K * K], in the problem's dtype (float32 unless float64 was asked)
    normalization: Normalization
    kernel: KernelType = KernelType.DIAG

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return len(self.sxy) + (len(self.srgb) if self.srgb is not None else 0)


_F32 = np.dtype(np.float32)


@dataclass(frozen=True)
class Problem:
    """A checked dense-CRF refinement: what every backend needs besides the arrays.

    The probabilities of each image are the unary source:
    :math:`U = -\\log \\max(p', \\text{clip})` with :math:`p' = \\text{scale}\\, p +
    (1 - \\text{scale}) / K` when ``scale`` is given; ``clip`` None takes
    :math:`-\\log p'` as it is.
    """

    labels: int  # K
    ndim: int  # spatial axes
    channels: int  # image channels C
    terms: tuple  # Term, in the order the messages are summed
    n_iter: int
    clip: float | None
    scale: float | None
    channels_first: bool = False  # items laid out [K, *spatial] / [C, *spatial] (else channels last)
    label_axis: int = -1  # the caller's label axis, for messages only
    dtype: np.dtype = _F32  # the computation dtype (float64: the CPU's float64 backend)


REFINE_DEFAULTS = {
    "n_iter": 5,
    "gaussian_sxy": 3.0,
    "gaussian_compat": 3.0,
    "bilateral_sxy": 80.0,
    "bilateral_srgb": 13.0,
    "bilateral_compat": 10.0,
    "clip": 1e-5,
    "scale": None,
    "normalization": "symmetric",
}


def settings(params=None, **kwargs) -> dict:
    """The refine arguments: :data:`REFINE_DEFAULTS` updated by ``kwargs``, then by
    ``params`` (a :class:`densecrf.params.CRFParams`, its dict or its JSON path),
    whose values replace ``n_iter``, the five term arguments and ``normalization``."""
    unknown = set(kwargs) - set(REFINE_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    s = dict(REFINE_DEFAULTS)
    s.update(kwargs)
    if params is not None:
        from ..params import as_params

        kw = as_params(params).refine_kwargs()
        for key in (
            "n_iter",
            "normalization",
            "gaussian_sxy",
            "gaussian_compat",
            "bilateral_sxy",
            "bilateral_srgb",
            "bilateral_compat",
        ):
            s[key] = kw[key]
    return s


def probs_layout(shape, channel_axis: int, *, volume: bool = False):
    """(label axis >= 0, spatial shape, K) of probabilities of ``shape`` with
    the labels at ``channel_axis``; ValueError naming the shape otherwise."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(
            f"probs must be [*spatial, K] with at least one spatial axis, got shape {_checks.shape_str(shape)}"
        )
    if not -len(shape) <= channel_axis < len(shape):
        raise ValueError(f"channel_axis={channel_axis} is out of range for probs of shape {_checks.shape_str(shape)}")
    axis = channel_axis % len(shape)
    spatial, k = shape[:axis] + shape[axis + 1 :], shape[axis]
    if k < 1 or min(spatial) < 1:
        raise ValueError(f"probs must have at least one label and one pixel, got shape {_checks.shape_str(shape)}")
    if len(spatial) > 2 and not volume:
        raise ValueError(
            f"probs of shape {_checks.shape_str(shape)} have {len(spatial)} spatial axes: refine treats them as one "
            f"{len(spatial)}-D volume and smooths across all of them. For a stack of images use "
            "densecrf.refine_batch(images, probs); for a volume pass volume=True"
        )
    return axis, spatial, k


def image_layout(shape, spatial, probs_shape, label_axis: int) -> int:
    """The channel count C of an image ``[*spatial, C]`` (or ``[*spatial]``: C = 1)
    for probabilities over ``spatial``; ValueError naming the likely cause otherwise."""
    shape = tuple(int(s) for s in shape)
    spatial = tuple(spatial)
    if shape == spatial:
        return 1
    if len(shape) == len(spatial) + 1 and shape[:-1] == spatial:
        return shape[-1]
    msg = (
        f"image must have shape ({', '.join(map(str, spatial))}, C) matching probs' spatial shape, "
        f"got {_checks.shape_str(shape)}"
    )
    probs_shape = tuple(int(s) for s in probs_shape)
    for a in range(len(probs_shape)):
        rest = probs_shape[:a] + probs_shape[a + 1 :]
        if a != label_axis and rest in (shape[:-1], shape):
            msg += (
                f". probs has shape {_checks.shape_str(probs_shape)} and is read with its labels on axis "
                f"{label_axis}; if they are on axis {a}, pass channel_axis={a}"
            )
            break
    else:
        if len(shape) == len(spatial) + 1 and shape[1:] == spatial:
            msg += ". The image looks channels-first: refine takes [*spatial, C] (np.moveaxis(image, 0, -1))"
    return _raise(msg)


def _raise(msg: str):
    raise ValueError(msg)


# bilateral_srgb (and CRFasRNN's srgb bandwidth) is measured in the units of
# an 8-bit image: a colour channel spans 0..255.
IMAGE_SPAN = 255.0


def image_range_factor(image_range) -> float:
    """The factor the colour bandwidths are multiplied by for images whose
    values span ``image_range``: 1 for None (0..255 units) and ``'raw'``,
    ``(hi - lo) / 255`` for a pair ``(lo, hi)``. Scaling the bandwidth is
    the same as mapping ``lo..hi`` onto ``0..255`` (a Gaussian kernel sees
    differences only), without touching the caller's image."""
    if image_range is None or (isinstance(image_range, str) and image_range == "raw"):
        return 1.0
    if isinstance(image_range, str):
        raise ValueError(f"image_range must be None, 'raw' or a pair (lo, hi), got {image_range!r}")
    try:
        lo, hi = image_range
    except (TypeError, ValueError):
        raise ValueError(f"image_range must be None, 'raw' or a pair (lo, hi), got {image_range!r}") from None
    lo = _checks.finite_scalar(lo, "image_range[0]")
    hi = _checks.finite_scalar(hi, "image_range[1]")
    if not hi > lo:
        raise ValueError(f"image_range must be a pair (lo, hi) with hi > lo, got {image_range!r}")
    return (hi - lo) / IMAGE_SPAN


def warn_image_units(image_range, channels: int, is_float: bool, peak, *, what: str, stacklevel: int) -> None:
    """A UserWarning when a float 3-channel (RGB) image looks like 0..1 values
    while the colour bandwidth is in 0..255 units: its colour term would be
    all but switched off (colour differences 255 times smaller than meant).

    Only when ``image_range`` is None (the caller stated no range), the
    image is floating point and has 3 channels; ``peak()`` (its largest value,
    computed only then) in (0, 1] warns. Other channel counts (medical
    intensities, feature maps) are in the caller's units: never a warning.
    """
    if image_range is not None or channels != 3 or not is_float:
        return
    m = float(peak())
    if 0.0 < m <= 1.0:
        warnings.warn(
            f"{what} is a float RGB image with values up to {m:.3g}, but the colour bandwidth (srgb) is in "
            "0..255 units, so the colour term is all but switched off. Pass image_range=(0, 1) for an "
            "image in 0..1 (or multiply it by 255), or image_range='raw' if the bandwidth is in the "
            "image's own units",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


def uses_image(problem: Problem) -> bool:
    """Whether the problem has a bilateral term (the only one that reads the image)."""
    return any(t.srgb is not None for t in problem.terms)


def describe(
    s: dict,
    *,
    labels: int,
    ndim: int,
    channels: int,
    channels_first: bool = False,
    label_axis: int = -1,
    image_range=None,
    dtype=np.float32,
) -> Problem:
    """Checks the settings ``s`` (from :func:`settings`) for images with ``ndim``
    spatial axes and ``channels`` channels and ``labels`` labels. ``image_range``
    (None, ``'raw'`` or ``(lo, hi)``, see :func:`image_range_factor`) scales
    the colour bandwidths. ``dtype``: the computation dtype (checked, see
    :func:`densecrf._checks.dtype_arg`)."""
    dtype = _checks.dtype_arg(dtype)
    n_iter = _checks.positive_int(s["n_iter"], "n_iter", minimum=0)
    factor = image_range_factor(image_range)
    terms = []
    if s["gaussian_compat"] is not None:
        terms.append(_term("gaussian", s, labels, ndim, None, dtype=dtype))
    if s["bilateral_compat"] is not None:
        terms.append(_term("bilateral", s, labels, ndim, channels, factor, dtype=dtype))
    clip = scale = None
    if s["clip"] is not None:
        clip = _checks.positive_scalar(s["clip"], "clip")
        if clip > 1:
            raise ValueError(f"clip must be in (0, 1], got {clip}")
    if s["scale"] is not None:
        scale = _checks.positive_scalar(s["scale"], "scale")
        if scale > 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
    return Problem(
        labels=labels,
        ndim=ndim,
        channels=channels,
        terms=tuple(terms),
        n_iter=n_iter,
        clip=clip,
        scale=scale,
        channels_first=channels_first,
        label_axis=label_axis,
        dtype=dtype,
    )


def _term(
    name: str, s: dict, labels: int, ndim: int, channels: int | None, factor: float = 1.0, dtype=np.float32
) -> Term:
    sxy = tuple(_checks.per_axis(s[f"{name}_sxy"], ndim, f"{name}_sxy"))
    srgb = None
    if channels is not None:
        srgb = tuple(_checks.per_axis(s["bilateral_srgb"], channels, "bilateral_srgb"))
        if factor != 1.0:  # 1.0: the bandwidths exactly as given (the same bits as before image_range)
            srgb = tuple(float(v) * factor for v in srgb)
        if ndim + channels > 32:
            raise ValueError(
                f"the bilateral features would have {ndim} positions + {channels} channels = "
                f"{ndim + channels} dimensions; at most 32 are supported"
            )
    kind, values = compat_arg(s[f"{name}_compat"], labels, dtype)
    norm = enum_arg(s["normalization"], Normalization, "normalization")
    return Term(name, sxy, srgb, kind, values, norm)
