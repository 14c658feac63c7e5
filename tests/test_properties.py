"""Property-based tests (hypothesis) over shapes, dtypes and parameters.

For any valid input: no crash; outputs finite, non-negative and summing to
one over the labels; MAP labels in range; the caller's arrays unmodified; the
pydensecrf-compatible module and the native API give the same bits.
Examples are few and small (the suite must stay fast); the deadline is off
because the first call of a run pays for thread-pool start-up.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import densecrf
from densecrf.compat.pydensecrf import densecrf as dcrf
from densecrf.compat.pydensecrf import utils as dutils

# 100 examples per property keeps this file near 3 s; a longer hunt:
# DENSECRF_HYPOTHESIS_EXAMPLES=3000 pytest tests/test_properties.py
SETTINGS = settings(max_examples=int(os.environ.get("DENSECRF_HYPOTHESIS_EXAMPLES", "100")), deadline=None)

# Summing K <= 6 float32 softmax outputs: each rounded by half an ulp (6e-8)
# and the normalising division by one more, 4.2e-7 at worst (measured over
# the examples: 2.4e-7); a wrong normalisation is off by > 1e-2.
SUM_TOL = 1e-6

IMAGE_DTYPES = [np.uint8, np.uint16, np.int64, np.float16, np.float32, np.float64]
PROB_DTYPES = [np.float16, np.float32, np.float64]
bandwidth = st.floats(0.3, 200.0)
compat = st.floats(-10.0, 10.0)


def _probs(rng, shape, k, dtype):
    p = rng.random((*shape, k)) ** 3 + 1e-3  # skewed, like a network's softmax
    p /= p.sum(-1, keepdims=True)
    return p.astype(dtype)


def _assert_distribution(q, shape):
    assert q.shape == shape and q.dtype == np.float32
    assert np.isfinite(q).all()
    assert (q >= 0).all()
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=SUM_TOL)


def _copies(*arrays):
    return [(a, a.copy()) for a in arrays]


def _assert_unmodified(pairs):
    for a, c in pairs:
        assert a.dtype == c.dtype and np.array_equal(a, c)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    spatial=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    k=st.integers(1, 6),
    channels=st.integers(1, 4),
    image_dtype=st.sampled_from(IMAGE_DTYPES),
    prob_dtype=st.sampled_from(PROB_DTYPES),
    gsxy=bandwidth,
    gcompat=compat,
    bsxy=bandwidth,
    bsrgb=bandwidth,
    bcompat=compat,
    n_iter=st.integers(0, 6),
    normalization=st.sampled_from(["none", "before", "after", "symmetric"]),
    channel_axis=st.sampled_from([-1, 0]),
)
def test_refine_gives_distributions(
    seed,
    spatial,
    k,
    channels,
    image_dtype,
    prob_dtype,
    gsxy,
    gcompat,
    bsxy,
    bsrgb,
    bcompat,
    n_iter,
    normalization,
    channel_axis,
):
    rng = np.random.default_rng(seed)
    spatial = tuple(spatial)
    image = (rng.random((*spatial, channels)) * 255).astype(image_dtype)
    probs = _probs(rng, spatial, k, prob_dtype)
    if channel_axis == 0:
        probs = np.moveaxis(probs, -1, 0)
    saved = _copies(image, probs)
    q = densecrf.refine(
        image,
        probs,
        channel_axis=channel_axis,
        n_iter=n_iter,
        gaussian_sxy=gsxy,
        gaussian_compat=gcompat,
        bilateral_sxy=bsxy,
        bilateral_srgb=bsrgb,
        bilateral_compat=bcompat,
        normalization=normalization,
        volume=len(spatial) > 2,
    )
    _assert_unmodified(saved)
    _assert_distribution(np.moveaxis(q, channel_axis, -1), (*spatial, k))
    labels = q.argmax(axis=channel_axis)
    assert labels.min() >= 0 and labels.max() < k


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 60),
    k=st.integers(1, 6),
    d=st.integers(1, 8),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
    kind=st.sampled_from(["potts", "diagonal", "matrix"]),
    normalization=st.integers(0, 3),
    n_iter=st.integers(0, 5),
)
def test_densecrf_inference_and_map(seed, n, k, d, scale, kind, normalization, n_iter):
    rng = np.random.default_rng(seed)
    unary = (rng.normal(size=(n, k)) * 3).astype(np.float32)
    features = rng.normal(size=(n, d)) * scale  # float64 on purpose: converted, not modified
    c = {"potts": float(rng.normal() * 3), "diagonal": rng.normal(size=k), "matrix": rng.normal(size=(k, k))}[kind]
    saved = _copies(unary, features, np.asarray(c))
    crf = densecrf.DenseCRF(n, k)
    crf.set_unary(unary)
    crf.add_pairwise(features, c, normalization=normalization)
    q = crf.inference(n_iter)
    _assert_unmodified(saved)
    _assert_distribution(q, (n, k))
    labels = crf.map(n_iter)
    assert labels.shape == (n,)
    assert n == 0 or (labels.min() >= 0 and labels.max() < k)
    # step_inference from the start reproduces inference, bit for bit.
    step = crf.start_inference()
    for _ in range(n_iter):
        step = crf.step_inference(step)
    assert np.array_equal(step, q)


@SETTINGS
@given(
    features=hnp.arrays(
        np.float32, st.tuples(st.integers(1, 40), st.integers(1, 6)), elements=st.floats(-1e5, 1e5, width=32)
    ),
    channels=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    transpose=st.booleans(),
)
def test_lattice_filter_finite_and_positive(features, channels, seed, transpose):
    # Arbitrary float32 features (duplicates, huge spreads, subnormals).
    values = np.random.default_rng(seed).random((features.shape[0], channels)).astype(np.float32)
    saved = _copies(features, values)
    lat = densecrf.PermutohedralLattice(features)
    out = lat.filter(values, transpose=transpose)
    _assert_unmodified(saved)
    assert out.shape == values.shape and np.isfinite(out).all()
    # A Gaussian filter of non-negative values is non-negative, and each
    # point's own value reaches it with weight > 0 (the kernel includes j = i).
    assert (out >= 0).all()
    assert (out.sum(1) > 0).all()
    assert 1 <= lat.n_vertices <= features.shape[0] * (features.shape[1] + 1)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    k=st.integers(2, 5),
    gsxy=bandwidth,
    gcompat=compat,
    bsxy=bandwidth,
    bsrgb=bandwidth,
    bcompat=compat,
    normalization=st.integers(0, 3),
    n_iter=st.integers(0, 5),
)
def test_compat_module_agrees_with_native(seed, h, w, k, gsxy, gcompat, bsxy, bsrgb, bcompat, normalization, n_iter):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    probs = _probs(rng, (h, w), k, np.float32)
    saved = _copies(image, probs)

    old = dcrf.DenseCRF2D(w, h, k)
    old.setUnaryEnergy(dutils.unary_from_softmax(np.moveaxis(probs, -1, 0)))
    old.addPairwiseGaussian(gsxy, gcompat, normalization=normalization)
    old.addPairwiseBilateral(bsxy, bsrgb, image, bcompat, normalization=normalization)
    q_old = old.inference(n_iter)

    new = densecrf.DenseCRF2D(w, h, k)
    new.set_unary(densecrf.unary_from_softmax(probs))
    new.add_pairwise_gaussian(gsxy, gcompat, normalization=normalization)
    new.add_pairwise_bilateral(bsxy, bsrgb, image, bcompat, normalization=normalization)
    q_new = new.inference(n_iter)

    _assert_unmodified(saved)
    assert q_old.shape == (k, h * w)
    assert np.array_equal(q_old, q_new.T)  # same core, same float32 operations: same bits
    _assert_distribution(q_new, (h * w, k))


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 50),
    k=st.integers(2, 5),
    d=st.integers(1, 5),
    normalization=st.integers(0, 3),
)
def test_compat_symmetric_matrix_agrees_with_native(seed, n, k, d, normalization):
    # pydensecrf symmetrises a matrix compatibility; for a symmetric one both
    # APIs must then use the same matrix and give the same bits.
    rng = np.random.default_rng(seed)
    unary = rng.normal(size=(n, k)).astype(np.float32)
    feats = (rng.normal(size=(n, d)) * 2).astype(np.float32)
    m = rng.normal(size=(k, k)).astype(np.float32)
    m = (m + m.T) / 2
    old = dcrf.DenseCRF(n, k)
    old.setUnaryEnergy(np.ascontiguousarray(unary.T))
    old.addPairwiseEnergy(np.ascontiguousarray(feats.T), m, normalization=normalization)
    new = densecrf.DenseCRF(n, k)
    new.set_unary(unary)
    new.add_pairwise(feats, m, normalization=normalization)
    assert np.array_equal(old.inference(3), new.inference(3).T)


@SETTINGS
@given(
    probs=hnp.arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(1, 6)), elements=st.floats(0.0, 1.0)),
    clip=st.sampled_from([1e-8, 1e-5, 0.1]),
)
def test_unary_from_softmax_finite_for_any_probabilities(probs, clip):
    # Zeros and ones included: clipping keeps -log finite and non-negative.
    saved = _copies(probs)
    u = densecrf.unary_from_softmax(probs, clip=clip)
    _assert_unmodified(saved)
    assert u.shape == probs.shape and u.dtype == np.float32
    assert np.isfinite(u).all() and (u >= 0).all()
    # -log(clip) bounds every energy; float32 rounding of the log adds < 1e-6 relative.
    assert u.max() <= -np.log(clip) * (1 + 1e-6)


@SETTINGS
@given(
    labels=hnp.arrays(np.int64, st.integers(1, 30), elements=st.integers(0, 4)),
    gt_prob=st.floats(0.01, 0.99),
)
def test_unary_from_labels_is_a_distribution(labels, gt_prob):
    saved = _copies(labels)
    u = densecrf.unary_from_labels(labels, 5, gt_prob=gt_prob)
    _assert_unmodified(saved)
    p = np.exp(-u.astype(np.float64))
    # exp(-(-log p)) of float32 energies: 1e-6 relative per entry, 5 entries.
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    assert (u.argmin(1) == labels).all() or gt_prob <= 1 / 5


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float16, np.float64, ">f4", ">f8"])
def test_dtypes_and_byte_orders_give_the_float32_result(dtype):
    # Values exactly representable in every listed dtype (integers 0..200):
    # any of them must give the bits of the float32 input.
    rng = np.random.default_rng(7)
    image = rng.integers(0, 200, (5, 6, 3)).astype(np.float32)
    probs = _probs(rng, (5, 6), 3, np.float32)
    want = densecrf.refine(image, probs)
    assert np.array_equal(densecrf.refine(image.astype(dtype), probs), want)
