"""Slow, obviously-right references used by the tests.

- ``gaussian_filter_exact``: the O(N^2) Gaussian filter the lattice approximates.
- ``mean_field_numpy``: Kraehenbuehl's mean-field loop written plainly in numpy
  around any filter function.
- ``confusion_numpy``: a segmentation confusion matrix by np.bincount (the
  figure tests score with it, not with densecrf.metrics).
"""

from __future__ import annotations

import numpy as np


def gaussian_kernel_exact(features: np.ndarray) -> np.ndarray:
    """k_ij = exp(-|f_i - f_j|^2 / 2), [N, N] float64."""
    f = np.asarray(features, dtype=np.float64)
    d2 = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d2)


def gaussian_filter_exact(features, values) -> np.ndarray:
    """sum_j k_ij v_j, [N, C] float64."""
    return gaussian_kernel_exact(features) @ np.asarray(values, dtype=np.float64)


def softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def normalized_filter(filt, n, normalization: int):
    """Wraps a raw filter f(values[N, C]) -> [N, C] with Kraehenbuehl's normalisation (0..3)."""
    norm = filt(np.ones((n, 1)))[:, 0].astype(np.float64)
    if normalization == 3:
        s = 1.0 / np.sqrt(norm + 1e-20)
        return lambda v: s[:, None] * filt(s[:, None] * v)
    if normalization == 1:
        s = 1.0 / (norm + 1e-20)
        return lambda v: filt(s[:, None] * v)
    if normalization == 2:
        s = 1.0 / (norm + 1e-20)
        return lambda v: s[:, None] * filt(v)
    return filt


def mean_field_numpy(unary, terms, n_iter):
    """terms: list of (filter_fn, compat) with compat a float (Potts), [K] or [K, K].

    Q0 = softmax(-U); Q <- softmax(-U - sum_t message_t(Q)) with
    message = -w * filter(Q) for Potts, w * filter(Q) for a diagonal,
    filter(Q) @ W^T for a matrix (per point, W @ q).
    """
    u = np.asarray(unary, dtype=np.float64)
    q = softmax(-u)
    for _ in range(n_iter):
        logits = -u.copy()
        for filt, compat in terms:
            fq = filt(q)
            c = np.asarray(compat, dtype=np.float64)
            if c.ndim == 0:
                msg = -float(c) * fq
            elif c.ndim == 1:
                msg = fq * c[None, :]
            else:
                msg = fq @ c.T
            logits -= msg
        q = softmax(logits)
    return q


def smooth_image(h, w, seed=0):
    """A deterministic uint8 RGB image with regions, edges and mild noise."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 255 * xx / max(w - 1, 1)
    img[..., 1] = 255 * yy / max(h - 1, 1)
    img[..., 2] = 200 * (((xx // 37) + (yy // 29)) % 2)
    img += r.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def label_probs(h, w, k, seed=0, sharpness=2.0):
    """Probabilities [H, W, K] with a blocky preferred label plus noise (float32, sums to 1)."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    pref = ((xx // 41) * 7 + (yy // 31) * 3) % k
    logits = r.normal(0, 1.0, (h, w, k))
    logits[yy, xx, pref] += sharpness
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def confusion_numpy(pred, truth, n_classes, ignore_index=None) -> np.ndarray:
    """[n, n] int64, rows: truth, columns: prediction; pixels whose truth is ignore_index left out."""
    truth = np.asarray(truth).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    keep = truth != ignore_index if ignore_index is not None else np.ones(truth.shape, bool)
    return np.bincount(truth[keep] * n_classes + pred[keep], minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )
