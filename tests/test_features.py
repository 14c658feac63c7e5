"""Unary and feature helpers against hand-computed values."""

import numpy as np
import pytest

import densecrf


def test_unary_from_softmax_values():
    p = np.array([[[0.5, 0.5], [1.0, 0.0]]], dtype=np.float32)  # [1, 2, K=2]
    u = densecrf.unary_from_softmax(p)
    assert u.shape == (2, 2) and u.dtype == np.float32
    expected = -np.log(np.array([[0.5, 0.5], [1.0, 1e-5]], dtype=np.float32))
    # the native float32 log: equal bits on the AVX2 kernels, 1 ulp off numpy
    # at 11.51 on the baseline ones (DENSECRF_KERNELS=baseline): 1.2e-7 relative
    assert np.allclose(u, expected, rtol=1.2e-7, atol=0)
    # scale mixes with uniform: 0.8 * p + 0.2 / 2
    us = densecrf.unary_from_softmax(p, scale=0.8)
    # float32 log of 0.8 p + 0.1 against float64: a couple of ulp (measured 2.8e-7 relative)
    assert np.allclose(us[1], -np.log([0.9, 0.1]), rtol=5e-7, atol=0)
    # channel_axis: labels first gives the same unary
    assert np.array_equal(densecrf.unary_from_softmax(np.moveaxis(p, -1, 0), channel_axis=0), u)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        densecrf.unary_from_softmax(p * 3)
    with pytest.raises(ValueError, match="clip=None"):
        densecrf.unary_from_softmax(p, clip=None)
    with pytest.raises(ValueError, match="scale"):
        densecrf.unary_from_softmax(p, scale=1.5)


def test_unary_from_labels_values():
    lab = np.array([[0, 2], [255, 1]])
    u = densecrf.unary_from_labels(lab, 3, gt_prob=0.6, unknown=255)
    hit, miss, uni = -np.log(0.6), -np.log(0.2), -np.log(1 / 3)
    expected = np.array([[hit, miss, miss], [miss, miss, hit], [uni, uni, uni], [miss, hit, miss]], dtype=np.float32)
    # the native float32 log against numpy's float64 log rounded to float32:
    # within an ulp (1.2e-7 relative; measured equal)
    assert np.allclose(u, expected, rtol=2.4e-7, atol=0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        densecrf.unary_from_labels(lab, 3)  # 255 without unknown=255
    with pytest.raises(ValueError, match="gt_prob"):
        densecrf.unary_from_labels(lab, 3, gt_prob=1.0, unknown=255)
    with pytest.raises(TypeError, match="integers"):
        densecrf.unary_from_labels(np.array([0.5, 1.0]), 3)


def test_gaussian_and_bilateral_features():
    g = densecrf.gaussian_features((2, 3), (2.0, 4.0))
    expected = np.array([[i / 2.0, j / 4.0] for i in range(2) for j in range(3)], dtype=np.float32)
    assert np.array_equal(g, expected)
    img = np.arange(2 * 3 * 2, dtype=np.uint8).reshape(2, 3, 2)
    b = densecrf.bilateral_features(img, 1.0, (2.0, 4.0))
    assert b.shape == (6, 4)
    assert np.array_equal(b[:, :2], densecrf.gaussian_features((2, 3), 1.0))
    # small integers over powers of two: exact in float32
    assert np.array_equal(b[:, 2], img[..., 0].ravel() / 2.0) and np.array_equal(b[:, 3], img[..., 1].ravel() / 4.0)
    gray = densecrf.bilateral_features(img[..., 0], 1.0, 5.0, channel_axis=None)
    assert gray.shape == (6, 3)
    with pytest.raises(ValueError, match="schan"):
        densecrf.bilateral_features(img, 1.0, (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="sdims"):
        densecrf.gaussian_features((2, 3), (1.0, 0.0))
    # (x, y) order of grid_positions is (column, row)
    assert np.array_equal(densecrf.grid_positions((2, 3), 1.0)[:, 0], np.tile(np.arange(3), 2))


@pytest.mark.parametrize("spatial,sdims", [((7, 5), (1.7, 3.3)), ((3, 4, 5), 2.9), ((1, 9), 0.1), ((375, 500), 80.0)])
def test_native_grid_features_equal_the_numpy_expression(spatial, sdims, rng):
    # The features are built natively in parallel; they must be the very
    # float32 quotients of the plain numpy expression (exact equality: the
    # lattice keys, hence the vertices, depend on every bit).
    from densecrf.crf import _grid_features

    nd = len(spatial)
    s = [float(v) for v in (sdims if isinstance(sdims, tuple) else [sdims] * nd)]
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in spatial], indexing="ij")
    want = np.stack([grids[a].ravel() / np.float32(s[nd - 1 - a]) for a in reversed(range(nd))], axis=1)
    assert np.array_equal(densecrf.grid_positions(spatial, sdims), want)
    img = (rng.random((*spatial, 3)) * 255).astype(np.float32)
    srgb = (13.0, 7.1, 2.2)
    want_b = np.concatenate([want, img.reshape(-1, 3) / np.asarray(srgb, np.float32)], axis=1)
    for threads in (1, 2, 3):
        assert np.array_equal(_grid_features(spatial, sdims, img, srgb, threads), want_b)
