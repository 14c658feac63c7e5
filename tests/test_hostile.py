"""Hostile inputs at every public entry point: numpy API, pydensecrf compat module, CLI.

Each case is a row of the table in docs/hostile_inputs.md (regenerate it with
``python tools/hostile_table.py > docs/hostile_inputs.md``; a test below keeps
the two in sync). A case either raises a given exception type whose message
names the offending shape or value, or returns a documented correct result
that ``check`` verifies. In every case the caller's arrays are left unmodified.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest

import densecrf
import densecrf.cli
from densecrf.compat.pydensecrf import densecrf as dcrf
from densecrf.compat.pydensecrf import utils as dutils

H, W, K = 6, 7, 4


def _image(dtype=np.uint8, channels=3):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (H, W, channels)).astype(dtype)


def _probs(dtype=np.float32):
    rng = np.random.default_rng(2)
    p = rng.random((H, W, K)) + 0.05
    return (p / p.sum(-1, keepdims=True)).astype(dtype)


def _onehot(dtype):
    labels = np.random.default_rng(3).integers(0, K, (H, W))
    return np.eye(K, dtype=dtype)[labels]


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


class _FakeGpuArray:
    """An array-like that claims to live on a GPU (as a CuPy array or CUDA tensor does)."""

    __cuda_array_interface__: ClassVar[dict] = {"shape": (H, W, K), "typestr": "<f4", "data": (0, False), "version": 3}
    shape = (H, W, K)


def _refine_ref(**kw):
    return densecrf.refine(_image(), _probs(), **kw)


def _same_as(expected_fn):
    """Check: the result is bit-identical to a plain float32/uint8 C-contiguous call."""

    def check(result, args):
        exp = expected_fn()
        assert result.dtype == exp.dtype and result.shape == exp.shape
        assert np.array_equal(result, exp)

    return check


def _is_distribution(shape):
    """Check: finite probabilities of the given shape, each pixel summing to one."""

    def check(result, args):
        assert result.shape == shape and result.dtype == np.float32
        assert np.isfinite(result).all() and (result >= 0).all()
        # 1e-5: float32 softmax of K <= 4 labels sums to one within a few ulp.
        np.testing.assert_allclose(result.sum(-1), 1.0, atol=1e-5)

    return check


def _is_empty(shape):
    def check(result, args):
        assert result.shape == shape and result.size == 0

    return check


@dataclasses.dataclass(frozen=True)
class Case:
    name: str  # the hostile input, as a user would describe it
    entry: str  # "numpy", "compat" or "cli"
    call: Callable[..., Any]
    args: Callable[[str], tuple]  # args(tmpdir) -> the positional inputs
    error: type | None = None  # expected exception type (None: a result)
    match: str = ""  # regex the message must contain (names the shape/value)
    check: Callable | None = None  # for results: verifies the documented result
    result: str = ""  # for results: what the user gets, for the docs table


def _refine(image, probs, kw=None):
    return densecrf.refine(image, probs, **(kw or {}))


def _crf_with_unary(unary):
    crf = densecrf.DenseCRF(*np.shape(unary))
    crf.set_unary(unary)
    return crf


def _lattice_filter(features, values):
    return densecrf.PermutohedralLattice(features).filter(values)


def _crf_overflow(unary, compat):
    crf = _crf_with_unary(unary)
    crf.add_pairwise(np.zeros((unary.shape[0], 2), np.float32), compat)
    return crf.inference(2)


def _step(q):
    crf = densecrf.DenseCRF(5, 2)
    return crf.step_inference(q)


def _compat_unary(u):
    d = dcrf.DenseCRF(5, 2)
    d.setUnaryEnergy(u)
    return d.inference(2)


def _compat_bilateral(im):
    d = dcrf.DenseCRF2D(W, H, 3)
    d.addPairwiseBilateral(10, 10, im, 5)
    return d.inference(1)


def _compat_step(q):
    d = dcrf.DenseCRF(5, 2)
    d.stepInference(q)


def _compat_energy(features):
    d = dcrf.DenseCRF(features.shape[1], 2)
    d.addPairwiseEnergy(features, 3)
    return d.inference(1)


def _cli(*argv):
    return densecrf.cli.main([str(a) for a in argv])


def _files(tmp, image=None, probs=None, raw_probs=None, raw_image=None):
    """Writes an image (.png) and probabilities (.npy) into tmp; returns their paths and an output path."""
    from PIL import Image

    ip, pp = os.path.join(tmp, "image.png"), os.path.join(tmp, "probs.npy")
    if raw_image is not None:
        with open(ip, "wb") as fh:
            fh.write(raw_image)
    else:
        Image.fromarray(_image() if image is None else image).save(ip)
    if raw_probs is not None:
        with open(pp, "wb") as fh:
            fh.write(raw_probs)
    else:
        np.save(pp, _probs() if probs is None else probs)
    return ip, pp, os.path.join(tmp, "out.npy")


def _text(tmp, name, text):
    """Writes a text file into tmp; returns its path."""
    path = os.path.join(tmp, name)
    with open(path, "w") as fh:
        fh.write(text)
    return path


def _cli_args(tmp, *extra, **files):
    ip, pp, op = _files(tmp, **files)
    return (ip, pp, "-o", op, *extra)


_nan_probs = _probs()
_nan_probs[2, 3, 1] = np.nan
_inf_image = _image(np.float32)
_inf_image[0, 1, 2] = np.inf
_neg_probs = _probs()
_neg_probs[1, 1] = [-0.5, 1.5, 0.0, 0.0]
_unary_nan = np.zeros((3, 2), np.float32)
_unary_nan[1, 0] = np.nan

CASES = [
    # ---- refine(): shapes -------------------------------------------------
    Case(
        "probs 1-D (no spatial axis)",
        "numpy",
        _refine,
        lambda t: (_image(), _probs()[0, 0]),
        ValueError,
        r"at least one spatial axis, got shape \(4,\)",
    ),
    Case(
        "image and probs sizes differ",
        "numpy",
        _refine,
        lambda t: (_image()[:5], _probs()),
        ValueError,
        r"\(6, 7, C\).*got \(5, 7, 3\)",
    ),
    Case(
        "K = 0 labels",
        "numpy",
        _refine,
        lambda t: (_image(), np.zeros((H, W, 0), np.float32)),
        ValueError,
        r"at least one label.*\(6, 7, 0\)",
    ),
    Case(
        "N = 0 pixels",
        "numpy",
        _refine,
        lambda t: (np.zeros((0, W, 3)), np.zeros((0, W, K))),
        ValueError,
        r"one pixel.*\(0, 7, 4\)",
    ),
    Case(
        "channel_axis out of range",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"channel_axis": 3}),
        ValueError,
        r"channel_axis=3 is out of range.*\(6, 7, 4\)",
    ),
    # ---- refine(): values -------------------------------------------------
    Case(
        "NaN in probs",
        "numpy",
        _refine,
        lambda t: (_image(), _nan_probs.copy()),
        ValueError,
        r"probs must be finite; found nan at index \(2, 3, 1\)",
    ),
    Case(
        "infinity in image",
        "numpy",
        _refine,
        lambda t: (_inf_image.copy(), _probs()),
        ValueError,
        r"image must be finite; found inf at index \(0, 1, 2\)",
    ),
    Case(
        "probs sum to 2, not 1",
        "numpy",
        _refine,
        lambda t: (_image(), _probs() * 2),
        ValueError,
        r"sum to one.*sums to 2",
    ),
    Case(
        "negative probabilities (rows still sum to 1)",
        "numpy",
        _refine,
        lambda t: (_image(), _neg_probs.copy()),
        ValueError,
        r"\[0, 1\].*-0.5",
    ),
    Case(
        "gaussian_sxy = 0",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"gaussian_sxy": 0}),
        ValueError,
        r"sxy must be positive and finite, got 0",
    ),
    Case(
        "bilateral_sxy negative",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"bilateral_sxy": -1.0}),
        ValueError,
        r"sxy must be positive and finite, got -1",
    ),
    Case(
        "bilateral_srgb NaN",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"bilateral_srgb": float("nan")}),
        ValueError,
        r"bilateral_srgb must be positive and finite, got nan",
    ),
    Case(
        "one srgb per channel, wrong count",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"bilateral_srgb": [13, 13]}),
        ValueError,
        r"bilateral_srgb must have 3 values.*got 2",
    ),
    Case(
        "gaussian_compat NaN",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"gaussian_compat": float("nan")}),
        ValueError,
        r"compat must be finite, got nan",
    ),
    Case(
        "bilateral_compat infinite",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"bilateral_compat": float("inf")}),
        ValueError,
        r"compat must be finite, got inf",
    ),
    Case(
        "compat [K, K] matrix with NaN",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"gaussian_compat": np.full((K, K), np.nan)}),
        ValueError,
        r"compat must be finite; found nan at index \(0, 0\)",
    ),
    Case(
        "compat vector of the wrong length",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"gaussian_compat": np.ones(3)}),
        ValueError,
        r"4 values \(one per label\), got shape \(3,\)",
    ),
    Case(
        "compat = 0 (both terms)",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"gaussian_compat": 0, "bilateral_compat": 0}),
        check=_same_as(lambda: _refine_ref(gaussian_compat=None, bilateral_compat=None)),
        result="the terms have no effect: same bits as dropping them (compat=None)",
    ),
    Case(
        "negative compat (attractive -> repulsive)",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"gaussian_compat": -3.0}),
        check=_is_distribution((H, W, K)),
        result="a valid result: finite probabilities summing to one",
    ),
    Case(
        "compat 3e38 (logits overflow float32)",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"gaussian_compat": 3e38, "bilateral_compat": 3e38}),
        ValueError,
        r"overflowed float32.*compatibilities up to 3e\+38",
    ),
    Case(
        "bandwidth 1e-30 (features beyond the lattice key range)",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"bilateral_srgb": 1e-30}),
        ValueError,
        r"key range.*largest \|feature\| = [0-9.e+]+ at index",
    ),
    Case(
        "n_iter = -1",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"n_iter": -1}),
        ValueError,
        r"n_iter must be >= 0, got -1",
    ),
    Case(
        "n_iter = 2.5",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"n_iter": 2.5}),
        TypeError,
        r"n_iter must be an integer, got float",
    ),
    Case(
        "threads = 0",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"threads": 0}),
        ValueError,
        r"threads must be >= 1, got 0",
    ),
    Case(
        "threads = 10**6",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(), {"threads": 10**6}),
        ValueError,
        r"threads = 1000000 exceeds the supported maximum 1024",
    ),
    # ---- refine(): layouts and dtypes -------------------------------------
    Case(
        "non-contiguous probs (Fortran order, strided image)",
        "numpy",
        _refine,
        lambda t: (np.repeat(_image(), 2, axis=1)[:, ::2], np.asfortranarray(_probs())),
        check=_same_as(_refine_ref),
        result="converted: same bits as C-contiguous input",
    ),
    Case(
        "read-only image and probs",
        "numpy",
        _refine,
        lambda t: (_readonly(_image()), _readonly(_probs())),
        check=_same_as(_refine_ref),
        result="accepted: same bits as writable input",
    ),
    Case(
        "big-endian probs (>f4) and image (>u2)",
        "numpy",
        _refine,
        lambda t: (_image().astype(">u2"), _probs().astype(">f4")),
        check=_same_as(_refine_ref),
        result="converted: same bits as native-endian input",
    ),
    Case(
        "zero-stride probs (np.broadcast_to)",
        "numpy",
        _refine,
        lambda t: (_image(), np.broadcast_to(_probs()[:1, :1], (H, W, K))),
        check=_same_as(
            lambda: densecrf.refine(_image(), np.ascontiguousarray(np.broadcast_to(_probs()[:1, :1], (H, W, K))))
        ),
        result="converted: same bits as the materialised array",
    ),
    Case(
        "zero-stride image (np.broadcast_to)",
        "numpy",
        _refine,
        lambda t: (np.broadcast_to(_image()[:1, :1], (H, W, 3)), _probs()),
        check=_same_as(
            lambda: densecrf.refine(np.ascontiguousarray(np.broadcast_to(_image()[:1, :1], (H, W, 3))), _probs())
        ),
        result="converted: same bits as the materialised array",
    ),
    Case(
        "probs float16",
        "numpy",
        _refine,
        lambda t: (_image(), _probs(np.float16)),
        check=_same_as(lambda: densecrf.refine(_image(), _probs(np.float16).astype(np.float32))),
        result="accepted: computed from the float16 values in float32",
    ),
    Case(
        "probs uint8 one-hot",
        "numpy",
        _refine,
        lambda t: (_image(), _onehot(np.uint8)),
        check=_same_as(lambda: densecrf.refine(_image(), _onehot(np.float32))),
        result="accepted: same bits as the float32 one-hot",
    ),
    Case(
        "probs int64 one-hot",
        "numpy",
        _refine,
        lambda t: (_image(), _onehot(np.int64)),
        check=_same_as(lambda: densecrf.refine(_image(), _onehot(np.float32))),
        result="accepted: same bits as the float32 one-hot",
    ),
    Case(
        "probs bool",
        "numpy",
        _refine,
        lambda t: (_image(), _onehot(bool)),
        TypeError,
        r"probs has dtype bool; expected floating-point",
    ),
    Case(
        "image complex128",
        "numpy",
        _refine,
        lambda t: (_image(np.complex128), _probs()),
        TypeError,
        r"image has complex dtype complex128",
    ),
    Case(
        "image dtype object",
        "numpy",
        _refine,
        lambda t: (_image(object), _probs()),
        TypeError,
        r"image has dtype object",
    ),
    Case(
        "image float16",
        "numpy",
        _refine,
        lambda t: (_image(np.float16), _probs()),
        check=_same_as(_refine_ref),
        result="accepted: same bits as uint8 (0..255 exactly representable)",
    ),
    Case(
        "image int64",
        "numpy",
        _refine,
        lambda t: (_image(np.int64), _probs()),
        check=_same_as(_refine_ref),
        result="accepted: same bits as uint8",
    ),
    Case(
        "image with 1 channel",
        "numpy",
        _refine,
        lambda t: (_image(channels=1), _probs()),
        check=_is_distribution((H, W, K)),
        result="a valid result (bilateral term over 1 channel)",
    ),
    Case(
        "image with 2 channels",
        "numpy",
        _refine,
        lambda t: (_image(channels=2), _probs()),
        check=_is_distribution((H, W, K)),
        result="a valid result (bilateral term over 2 channels)",
    ),
    Case(
        "image with 4 channels (RGBA)",
        "numpy",
        _refine,
        lambda t: (_image(channels=4), _probs()),
        check=_is_distribution((H, W, K)),
        result="a valid result (bilateral term over 4 channels)",
    ),
    Case(
        "image 2-D (no channel axis)",
        "numpy",
        _refine,
        lambda t: (_image(channels=1)[..., 0], _probs()),
        check=_same_as(lambda: densecrf.refine(_image(channels=1), _probs())),
        result="treated as one channel: same bits as [H, W, 1]",
    ),
    Case(
        "GPU array (__cuda_array_interface__)",
        "numpy",
        _refine,
        lambda t: (_image(), _FakeGpuArray()),
        TypeError,
        r"probs is a GPU array; the numpy API takes host arrays",
    ),
    # ---- DenseCRF / lattice / features -------------------------------------
    Case(
        "DenseCRF with K = 0", "numpy", densecrf.DenseCRF, lambda t: (5, 0), ValueError, r"n_labels must be >= 1, got 0"
    ),
    Case(
        "DenseCRF with N = 0, inference",
        "numpy",
        lambda n, k: densecrf.DenseCRF(n, k).inference(3),
        lambda t: (0, 3),
        check=_is_empty((0, 3)),
        result="an empty [0, K] result",
    ),
    Case(
        "DenseCRF with N = 2^31 (32-bit index overflow)",
        "numpy",
        densecrf.DenseCRF,
        lambda t: (2**31, 2),
        ValueError,
        r"n_points = 2147483648 exceeds the supported maximum 2\^31-1",
    ),
    Case(
        "DenseCRF2D 70000 x 70000 (N overflows 32 bits)",
        "numpy",
        densecrf.DenseCRF2D,
        lambda t: (70000, 70000, 3),
        ValueError,
        r"n_points = 4900000000 exceeds",
    ),
    Case(
        "unary with NaN",
        "numpy",
        _crf_with_unary,
        lambda t: (_unary_nan.copy(),),
        ValueError,
        r"unary must be finite; found nan at index \(1, 0\)",
    ),
    Case(
        "unary float64 1e300 (beyond float32)",
        "numpy",
        _crf_with_unary,
        lambda t: (np.array([[1e300, 0.0]]),),
        ValueError,
        r"beyond the float32 range \(max \|x\| = 1e\+300\)",
    ),
    Case(
        "unary transposed [K, N]",
        "numpy",
        lambda u: densecrf.DenseCRF(5, 2).set_unary(u),
        lambda t: (np.zeros((2, 5), np.float32),),
        ValueError,
        r"unary must have shape \(5, 2\) = \(N, K\), got \(2, 5\)",
    ),
    Case(
        "unary and compat 3e38 (logits overflow float32)",
        "numpy",
        _crf_overflow,
        lambda t: (np.array([[3e38, -3e38]] * 3, np.float32), 3e38),
        ValueError,
        r"overflowed float32.*unary energies up to 3e\+38",
    ),
    Case(
        "Q of the wrong shape for step_inference",
        "numpy",
        _step,
        lambda t: (np.full((2, 5), 0.5, np.float32),),
        ValueError,
        r"Q must have shape \(5, 2\) = \(N, K\), got \(2, 5\)",
    ),
    Case(
        "pairwise normalization 'foo'",
        "numpy",
        lambda f: densecrf.DenseCRF(5, 2).add_pairwise(f, 3.0, normalization="foo"),
        lambda t: (np.zeros((5, 2)),),
        ValueError,
        r"normalization must be one of 'none', 'before', 'after', 'symmetric', got 'foo'",
    ),
    Case(
        "features with d = 0 columns",
        "numpy",
        densecrf.PermutohedralLattice,
        lambda t: (np.zeros((5, 0)),),
        ValueError,
        r"1 to 32 columns.*got shape \(5, 0\)",
    ),
    Case(
        "features with d = 33 columns",
        "numpy",
        densecrf.PermutohedralLattice,
        lambda t: (np.zeros((5, 33)),),
        ValueError,
        r"1 to 32 columns.*got shape \(5, 33\)",
    ),
    Case(
        "features 1-D",
        "numpy",
        densecrf.PermutohedralLattice,
        lambda t: (np.zeros(5),),
        ValueError,
        r"features must have shape \[N, d\], got \(5,\)",
    ),
    Case(
        "features with infinity",
        "numpy",
        densecrf.PermutohedralLattice,
        lambda t: (np.array([[0.0, np.inf]]),),
        ValueError,
        r"features must be finite; found inf at index \(0, 1\)",
    ),
    Case(
        "features 2^29 x 5 (N*(d+1) overflows 32 bits; zero-stride)",
        "numpy",
        densecrf.PermutohedralLattice,
        lambda t: (np.broadcast_to(np.zeros(5, np.float32), (2**29, 5)),),
        ValueError,
        r"3221225472 lattice entries, over the 32-bit index limit",
    ),
    Case(
        "lattice over N = 0 points, filter",
        "numpy",
        _lattice_filter,
        lambda t: (np.zeros((0, 3)), np.zeros((0, 2))),
        check=_is_empty((0, 2)),
        result="an empty [0, C] result",
    ),
    Case(
        "filter values with the wrong N",
        "numpy",
        _lattice_filter,
        lambda t: (np.zeros((5, 2)), np.zeros((4, 2))),
        ValueError,
        r"N = 5.*got \(4, 2\)",
    ),
    Case(
        "filter values with NaN",
        "numpy",
        _lattice_filter,
        lambda t: (np.zeros((5, 2)), np.full((5, 1), np.nan)),
        ValueError,
        r"values must be finite; found nan at index \(0, 0\)",
    ),
    Case(
        "unary_from_softmax with K = 0",
        "numpy",
        densecrf.unary_from_softmax,
        lambda t: (np.zeros((3, 0)),),
        ValueError,
        r"at least one label, got shape \(3, 0\)",
    ),
    Case(
        "unary_from_labels with fractional labels",
        "numpy",
        densecrf.unary_from_labels,
        lambda t: (np.array([0.5, 1.0]), 3),
        TypeError,
        r"labels must be integers, got dtype float64",
    ),
    Case(
        "unary_from_labels label out of range",
        "numpy",
        densecrf.unary_from_labels,
        lambda t: (np.array([0, 5]), 3),
        ValueError,
        r"labels must be in \[0, 3\).*found 5",
    ),
    Case(
        "gaussian_features with a 0-length axis",
        "numpy",
        densecrf.gaussian_features,
        lambda t: ((0, 3), 1.0),
        ValueError,
        r"shape must be >= 1, got 0",
    ),
    Case(
        "grid_positions with a negative size",
        "numpy",
        densecrf.grid_positions,
        lambda t: ((-2, 3), 1.0),
        ValueError,
        r"spatial must be >= 1, got -2",
    ),
    Case(
        "bilateral_features with NaN in the image",
        "numpy",
        densecrf.bilateral_features,
        lambda t: (np.full((2, 2, 3), np.nan), 1.0, 1.0),
        ValueError,
        r"image must be finite; found nan",
    ),
    Case(
        "set_num_threads(-1)",
        "numpy",
        densecrf.set_num_threads,
        lambda t: (-1,),
        ValueError,
        r"threads must be >= 1, got -1",
    ),
    Case(
        "set_num_threads('4')",
        "numpy",
        densecrf.set_num_threads,
        lambda t: ("4",),
        TypeError,
        r"threads must be an integer, got str",
    ),
    # ---- pydensecrf compat module ------------------------------------------
    Case(
        "compat: unary [N, K] instead of [K, N]",
        "compat",
        _compat_unary,
        lambda t: (np.zeros((5, 2), np.float32),),
        ValueError,
        r"Need \(2, 5\), got \(5, 2\)",
    ),
    Case(
        "compat: unary with NaN",
        "compat",
        _compat_unary,
        lambda t: (np.where(np.arange(5) == 2, np.nan, 0.0).astype(np.float32)[None].repeat(2, 0),),
        ValueError,
        r"unary energy must be finite; found nan at index \(0, 2\)",
    ),
    Case(
        "compat: big-endian float64 unary",
        "compat",
        _compat_unary,
        lambda t: (np.linspace(0, 1, 10).reshape(2, 5).astype(">f8"),),
        check=_same_as(lambda: _compat_unary(np.linspace(0, 1, 10).reshape(2, 5).astype(np.float32))),
        result="converted: same bits as float32 (pydensecrf rejects it)",
    ),
    Case(
        "compat: DenseCRF with 0 labels",
        "compat",
        dcrf.DenseCRF,
        lambda t: (5, 0),
        ValueError,
        r"n_labels must be >= 1, got 0",
    ),
    Case(
        "compat: 4-channel image to addPairwiseBilateral",
        "compat",
        _compat_bilateral,
        lambda t: (_image(channels=4),),
        ValueError,
        r"only works for RGB images",
    ),
    Case(
        "compat: float image to addPairwiseBilateral",
        "compat",
        _compat_bilateral,
        lambda t: (_image(np.float64),),
        TypeError,
        r"rgbim must be uint8 as in pydensecrf, got float64",
    ),
    Case(
        "compat: addPairwiseGaussian sxy = 0",
        "compat",
        lambda s: dcrf.DenseCRF2D(W, H, 3).addPairwiseGaussian(s, 3),
        lambda t: (0,),
        ValueError,
        r"sxy must be positive and finite, got 0",
    ),
    Case(
        "compat: addPairwiseEnergy features with NaN",
        "compat",
        _compat_energy,
        lambda t: (np.full((2, 4), np.nan, np.float32),),
        ValueError,
        r"features must be finite; found nan",
    ),
    Case(
        "compat: inference(-1)",
        "compat",
        lambda n: dcrf.DenseCRF(5, 2).inference(n),
        lambda t: (-1,),
        ValueError,
        r"n_iter must be >= 0, got -1",
    ),
    Case(
        "compat: stepInference with a float64 Q",
        "compat",
        _compat_step,
        lambda t: (np.full((2, 5), 0.5),),
        ValueError,
        r"writable float32 array of shape \(2, 5\)",
    ),
    Case(
        "compat utils: unary_from_softmax with NaN",
        "compat",
        dutils.unary_from_softmax,
        lambda t: (np.full((2, 3), np.nan),),
        ValueError,
        r"sm must be finite; found nan at index \(0, 0\)",
    ),
    Case(
        "compat utils: unary_from_softmax with 0 classes",
        "compat",
        dutils.unary_from_softmax,
        lambda t: (np.zeros((0, 3)),),
        ValueError,
        r"at least one\) as its first axis, got shape \(0, 3\)",
    ),
    Case(
        "compat utils: unary_from_softmax dtype object",
        "compat",
        dutils.unary_from_softmax,
        lambda t: (np.array([[None, 1.0]], dtype=object),),
        TypeError,
        r"sm has dtype object",
    ),
    Case(
        "compat utils: create_pairwise_gaussian sdims 0",
        "compat",
        dutils.create_pairwise_gaussian,
        lambda t: ((0, 1), (2, 2)),
        ValueError,
        r"sdims must be positive and finite, got 0",
    ),
    Case(
        "compat utils: create_pairwise_bilateral schan count != channels",
        "compat",
        dutils.create_pairwise_bilateral,
        lambda t: ((1, 1), (1, 1), np.ones((2, 2, 3)), 2),
        ValueError,
        r"schan must have 3 values.*got 2",
    ),
    Case(
        "compat utils: create_pairwise_bilateral NaN image",
        "compat",
        dutils.create_pairwise_bilateral,
        lambda t: ((1, 1), (1, 1, 1), np.full((2, 2, 3), np.nan), 2),
        ValueError,
        r"img must be finite; found nan",
    ),
    Case(
        "compat utils: unary_from_labels negative label",
        "compat",
        dutils.unary_from_labels,
        lambda t: (np.array([-1, 2]), 3, 0.5),
        ValueError,
        r"labels must be in \[0, 3\], found values in \[-1, 2\]",
    ),
    # ---- CLI ---------------------------------------------------------------
    Case(
        "cli: image file missing",
        "cli",
        _cli,
        lambda t: ("refine", os.path.join(t, "nope.png"), os.path.join(t, "p.npy"), "-o", "x.npy"),
        SystemExit,
        r"IMAGE not found: <tmp>/nope.png",
    ),
    Case(
        "cli: image file is not an image",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, raw_image=b"not a png")),
        SystemExit,
        r"IMAGE <tmp>/image.png is not a readable image file",
    ),
    Case(
        "cli: probs file is not .npy",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, raw_probs=b"\x93NUMPY garbage")),
        SystemExit,
        r"could not read PROBS from <tmp>/probs.npy \(expected a .npy or .npz array\)",
    ),
    Case(
        "cli: probs file empty",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, raw_probs=b"")),
        SystemExit,
        r"could not read PROBS from <tmp>/probs.npy.*No data left in file",
    ),
    Case(
        "cli: probs saved as a pickled object array",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, probs=np.array([{"a": 1}], dtype=object))),
        SystemExit,
        r"allow_pickle=False",
    ),
    Case(
        "cli: probs size differs from the image",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, probs=_probs()[:5])),
        SystemExit,
        r"PROBS <tmp>/probs.npy has shape \(5, 7, 4\) but the image is 6 x 7",
    ),
    Case(
        "cli: probs with NaN",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, probs=_nan_probs)),
        SystemExit,
        r"probs must be finite; found nan",
    ),
    Case(
        "cli: --iters -1",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, "--iters", "-1")),
        SystemExit,
        r"n_iter must be a non-negative integer, got -1",
    ),
    Case(
        "cli: --bilateral-srgb nan",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, "--bilateral-srgb", "nan")),
        SystemExit,
        r"bilateral srgb must be a positive number, got nan",
    ),
    Case(
        "cli: output directory missing",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t)[:3], os.path.join(t, "no", "dir", "out.npy")),
        SystemExit,
        r"output folder does not exist: <tmp>/no/dir",
    ),
    Case(
        "cli: unknown option",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t), "--frobnicate"),
        SystemExit,
        r"unrecognized arguments: --frobnicate",
    ),
    Case(
        "cli: required arguments missing",
        "cli",
        _cli,
        lambda t: ("refine",),
        SystemExit,
        r"the following arguments are required: image, probs",
    ),
    Case(
        "cli: --iters not a number",
        "cli",
        _cli,
        lambda t: ("demo", "--iters", "five"),
        SystemExit,
        r"invalid int value: 'five'",
    ),
    Case(
        "cli: probs do not sum to one",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, probs=_probs() * 2)),
        SystemExit,
        r"probs must sum to one over the label axis",
    ),
    Case(
        "cli: probs .npy of 2-D floats",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, probs=_probs()[..., 0])),
        SystemExit,
        r"must be \[H, W, K\] probabilities.*got an array of shape \(6, 7\)",
    ),
    Case(
        "cli: label map without --n-labels",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, probs=np.zeros((H, W), np.int64))),
        SystemExit,
        r"is a label map: give the number of labels \(n_labels / --n-labels K\)",
    ),
    Case(
        "cli: --params file not JSON",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, "--params", _text(t, "p.json", "{n_iter: 3"))),
        SystemExit,
        r"<tmp>/p.json is not valid JSON",
    ),
    Case(
        "cli: --params file with an unknown key",
        "cli",
        _cli,
        lambda t: ("refine", *_cli_args(t, "--params", _text(t, "p.json", '{"n_iters": 3}'))),
        SystemExit,
        r"unknown keys in CRF parameters: \['n_iters'\]",
    ),
    Case(
        "cli: eval DATA_DIR without val/",
        "cli",
        _cli,
        lambda t: ("eval", t),
        SystemExit,
        r"<tmp> has no val/ and valannot/ folders",
    ),
]


def _arrays(obj):
    """The numpy arrays among the (possibly nested) inputs."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _arrays(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _arrays(o)


def run_case(case: Case, tmp: str, capsys=None):
    """Runs one case; returns (kind, message) where kind is the exception name or 'result'."""
    args = case.args(tmp)
    # Zero-stride axes are collapsed first: a broadcast array may describe far
    # more elements than the memory behind it (one case has 2^29 x 5).
    arrays = [a[tuple(slice(0, 1) if st == 0 else slice(None) for st in a.strides)] for a in _arrays(args)]
    before = [(a, a.copy(), a.flags.writeable) for a in arrays]
    if case.entry == "cli":
        rc = case.call(*args)
        err = capsys.readouterr().err if capsys is not None else ""
        kind, msg = f"exit code {rc}", err.strip().splitlines()[-1] if err.strip() else ""
        outcome = (kind, msg.replace(tmp, "<tmp>"), err, rc)
    elif case.error is not None:
        with pytest.raises(case.error) as info:
            case.call(*args)
        outcome = (type(info.value).__name__, str(info.value).splitlines()[0], None, None)
    else:
        result = case.call(*args)
        case.check(result, args)
        outcome = ("result", case.result, None, None)
    for a, copy, writeable in before:
        assert a.dtype == copy.dtype and a.shape == copy.shape
        assert np.array_equal(a, copy, equal_nan=a.dtype.kind in "fc"), f"{case.name}: an input was modified"
        assert a.flags.writeable == writeable
    return outcome


def test_enough_distinct_cases():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case, tmp_path, capsys):
    _, msg, err, rc = run_case(case, str(tmp_path), capsys)
    if case.entry == "cli":
        # What the README promises: exit status 2, no traceback, and one line on
        # stderr, `densecrf <command>: error: ...`, argparse's errors included.
        assert rc == 2
        assert "Traceback" not in err and "usage:" not in err
        assert len(err.strip().splitlines()) == 1, err
        assert re.match(r"densecrf (refine|demo|eval): error: ", msg), msg
        assert re.search(case.match, msg), msg
    elif case.error is not None:
        assert re.search(case.match, msg), msg


def test_docs_table_in_sync():
    """docs/hostile_inputs.md is the output of tools/hostile_table.py."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, "tools", "hostile_table.py")):
        pytest.skip("needs a source checkout (tools/hostile_table.py beside tests/)")
    sys.path.insert(0, os.path.join(root, "tools"))
    try:
        import hostile_table
    finally:
        sys.path.pop(0)
    with open(os.path.join(root, "docs", "hostile_inputs.md"), encoding="utf-8") as fh:
        assert fh.read() == hostile_table.render(), (
            "docs/hostile_inputs.md is stale: run `python tools/hostile_table.py > docs/hostile_inputs.md`"
        )


def test_import_without_a_gpu(tmp_path):
    # `import densecrf` must work on a CPU-only machine, and say so. Run from
    # an empty directory so that the source tree cannot shadow the install.
    import subprocess

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    code = "import densecrf; print(densecrf.cuda_available())"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # No GPU is visible to the child (CUDA_VISIBLE_DEVICES=""), so the answer is False, whatever the build.
    assert r.stdout.strip() == "False"
    assert "Traceback" not in r.stderr
