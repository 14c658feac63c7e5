"""Arg-max labels (_C.argmax_labels, used by dataset runs) are numpy's argmax along the last axis."""

from __future__ import annotations

import numpy as np
import pytest

from densecrf._native import _C
from densecrf.dataset import work

KS = [*range(1, 21), 31, 64, 255, 256, 257, 300]  # 2-16: the AVX2 path; the rest scalar; > 256: uint16


def _hostile(rng, n, k):
    """Rows with ties, signed zeros, infinities and NaNs where numpy's rules decide."""
    q = rng.integers(-3, 4, size=(n, k)).astype(np.float32)  # many ties
    q[rng.random((n, k)) < 0.05] = -0.0
    q[rng.random((n, k)) < 0.03] = np.inf
    q[rng.random((n, k)) < 0.03] = -np.inf
    q[rng.random((n, k)) < 0.02] = np.nan
    q[: min(n, 3)] = -np.inf  # whole rows at -inf: label 0
    if n > 5 and k > 1:
        q[5] = np.nan  # a row of NaNs: label 0
        q[4, :] = 0.0
        q[4, k - 1] = -0.0  # -0 equals +0: the first
    return q


@pytest.mark.parametrize("vectorized", [True, False])
@pytest.mark.parametrize("k", KS)
def test_argmax_labels_is_numpys_argmax(k, vectorized):
    rng = np.random.default_rng(k)
    for n in (0, 1, 7, 1000):
        for q in (rng.random((n, k), dtype=np.float32), _hostile(rng, n, k)):
            got = _C.argmax_labels(q, vectorized)
            assert got.dtype == (np.uint8 if k <= 256 else np.uint16) and got.shape == (n,)
            assert np.array_equal(got, q.argmax(axis=-1)), (k, n)


def test_labels_of_takes_any_layout_and_leaves_q_alone():
    rng = np.random.default_rng(0)
    q = rng.random((30, 40, 11), dtype=np.float32)
    before = q.copy()
    for x in (q, q.transpose(1, 0, 2), q.astype(np.float64), q[:, :, :5]):  # native, then numpy's paths
        lab = work.labels_of(x)
        assert lab.dtype == np.uint8 and lab.shape == x.shape[:-1]
        assert np.array_equal(lab, x.argmax(axis=-1))
    assert np.array_equal(q, before)


def test_argmax_labels_refuses_what_it_cannot_label():
    with pytest.raises(ValueError, match="1 to 65536 labels, got 0"):
        _C.argmax_labels(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match=r"q must have shape \(N, C\), got \(3,\)"):
        _C.argmax_labels(np.zeros(3, np.float32))
