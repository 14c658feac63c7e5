"""float16 inputs are widened natively (_C.half_to_float) to exactly what numpy's cast gives."""

from __future__ import annotations

import numpy as np
import pytest

import densecrf
from densecrf import _checks
from densecrf._native import _C

ALL_HALVES = np.arange(2**16, dtype=np.uint32).astype(np.uint16)


@pytest.mark.parametrize("vectorized", [True, False])
def test_every_half_converts_as_numpy_does(vectorized):
    got = _C.half_to_float(ALL_HALVES, vectorized)
    want = ALL_HALVES.view(np.float16).astype(np.float32)
    assert got.dtype == np.float32 and got.shape == want.shape
    nan = np.isnan(want)
    assert nan.sum() == 2 * (2**10 - 1)  # the NaN encodings of binary16: exponent 31, mantissa != 0, both signs
    assert np.array_equal(np.isnan(got), nan)
    # Exact: the same bits for all 63490 non-NaN halves (zeros of both signs, subnormals, infinities).
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_the_f16c_and_portable_loops_agree_at_every_length():
    rng = np.random.default_rng(0)
    for n in list(range(40)) + [4095, 4096, 4097]:  # tails of 0-7 after 8-wide blocks
        bits = rng.integers(0, 2**16, size=n, dtype=np.uint16)
        a, b = _C.half_to_float(bits, True), _C.half_to_float(bits, False)
        nan = np.isnan(b)
        assert np.array_equal(np.isnan(a), nan)
        assert np.array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32)), n


def test_shape_is_kept_and_other_dtypes_are_refused():
    bits = ALL_HALVES[:24].reshape(2, 3, 4)
    assert _C.half_to_float(bits).shape == (2, 3, 4)
    with pytest.raises(TypeError):
        _C.half_to_float(np.zeros(8, np.float32))  # only the uint16 view of a float16 array


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p,  # C-contiguous, native path
        lambda p: p.transpose(1, 0, 2),  # strided view: copied, then widened natively
        lambda p: p.astype(">f2"),  # byte-swapped: numpy's cast
        lambda p: p[:8, :8],  # below _HALF_NATIVE_MIN elements: numpy's cast
    ],
)
def test_as_f32_of_float16_is_numpy_cast_and_leaves_the_input_alone(make):
    rng = np.random.default_rng(1)
    p = make(rng.random((60, 70, 5)).astype(np.float16))
    before = p.copy()
    out = _checks.as_f32(p, "probs")
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == p.shape
    assert np.array_equal(out, p.astype(np.float32))
    assert np.array_equal(p, before) and p.dtype == before.dtype


def test_as_f32_of_float16_still_reports_non_finite_values():
    p = np.full((64, 64, 2), 0.5, np.float16)
    p[3, 5, 1] = np.inf
    with pytest.raises(ValueError, match=r"probs must be finite.*\(3, 5, 1\)"):
        _checks.as_f32(p, "probs")


def test_refine_of_float16_probabilities_equals_refine_of_their_float32_cast():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    logits = rng.normal(size=(50, 60, 4))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    p16 = p.astype(np.float16)
    a = densecrf.refine(img, p16, n_iter=3, threads=1)
    b = densecrf.refine(img, p16.astype(np.float32), n_iter=3, threads=1)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
