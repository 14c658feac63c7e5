"""DenseCRF mean field against a plain numpy loop, and the exact-filter truth."""

from typing import ClassVar

import numpy as np
import pytest

import densecrf
from reference import (
    gaussian_filter_exact,
    label_probs,
    mean_field_numpy,
    normalized_filter,
    smooth_image,
    softmax,
)

COMPATS = {
    "potts": 3.0,
    "diagonal": np.array([-2.0, -1.0, -3.0, -0.5]),
    "matrix": np.array([[-2.0, 0.5, 0.3, 0.0], [0.5, -1.0, 0.2, 0.4], [0.3, 0.2, -3.0, 0.1], [0.0, 0.4, 0.1, -0.5]]),
}


def small_problem(rng, n=200, k=4, d=3):
    f1 = rng.random((n, 2)) * 3
    f2 = rng.random((n, d)) * 3
    u = rng.normal(size=(n, k)) * 2
    return f1, f2, u


@pytest.mark.parametrize("compat", list(COMPATS))
@pytest.mark.parametrize("normalization", [0, 1, 2, 3])
def test_mean_field_matches_numpy_loop_with_lattice_filter(rng, compat, normalization):
    # Same lattice filter on both sides, so only the inference loop (message
    # sign, compatibility, normalisation, softmax) is compared. Both are
    # float32-filtered; the numpy side does the rest in float64, so the
    # difference is float32 rounding of logits of magnitude up to ~10 (half an
    # ulp: 4.8e-7, a quarter of that in Q) accumulated over 5 iterations:
    # measured max 1.8e-7 over the 12 cases; bound 1e-6.
    f1, f2, u = small_problem(rng)
    n, k = u.shape
    c = COMPATS[compat]
    crf = densecrf.DenseCRF(n, k)
    crf.set_unary(u)
    crf.add_pairwise(f1, 1.5 if compat == "potts" else c / 2, normalization=normalization)
    crf.add_pairwise(f2, c, normalization=normalization)
    q = crf.inference(5)
    terms = []
    for info, cc in zip(crf.terms, [1.5 if compat == "potts" else c / 2, c], strict=True):
        lat = info["lattice"]
        terms.append((normalized_filter(lambda v, lat=lat: lat.filter(v).astype(np.float64), n, normalization), cc))
    ref = mean_field_numpy(u, terms, 5)
    assert np.abs(q - ref).max() < 1e-6
    # a float32 sum of 4 probabilities: within 4 ulp of 1 (4.8e-7)
    assert np.allclose(q.sum(1), 1, rtol=0, atol=1e-6)


def test_mean_field_close_to_exact_filter_truth(rng):
    # With the exact O(N^2) Gaussian filter in place of the lattice the
    # marginals move by the lattice approximation error (a few % of the
    # smoothing, see test_lattice); MAP labels agree on almost all points.
    n, k = 300, 3
    f = rng.random((n, 2)) * 3
    u = -np.log(np.clip(softmax(rng.normal(size=(n, k)) + 2 * np.eye(k)[(f[:, 0] > 1.5).astype(int)]), 1e-5, 1))
    crf = densecrf.DenseCRF(n, k)
    crf.set_unary(u)
    crf.add_pairwise(f, 3.0)
    q = crf.inference(5)
    exact = normalized_filter(lambda v: gaussian_filter_exact(f, v), n, 3)
    ref = mean_field_numpy(u, [(exact, 3.0)], 5)
    # 0.05 in probability: the ~6 % relative filter error times the Potts
    # weight 3 moves a logit by up to ~0.2, a probability by a quarter of
    # that (Q (1 - Q) <= 1/4): 0.05 (measured 0.049 on this draw).
    assert np.abs(q - ref).max() < 0.05
    # 98 %: only points whose two best labels are within that margin can flip.
    assert (q.argmax(1) == ref.argmax(1)).mean() > 0.98


def test_no_pairwise_is_softmax_and_zero_unary_is_uniform(rng):
    u = rng.normal(size=(50, 6))
    crf = densecrf.DenseCRF(50, 6)
    crf.set_unary(u)
    # float32 softmax (exp, sum, divide) against float64: a few ulp of a
    # probability <= 1 (1.2e-7 each; measured 5.7e-8)
    assert np.allclose(crf.inference(3), softmax(-u), rtol=0, atol=3e-7)
    empty = densecrf.DenseCRF(10, 4)
    empty.add_pairwise(rng.random((10, 2)), 5.0)
    # equal logits: 0.25 up to the rounding of exp(0) / 4 sums (1 ulp at
    # 0.25 is 3e-8; measured 1.5e-8)
    assert np.allclose(empty.inference(2), 0.25, rtol=0, atol=1e-7)


def test_stepwise_equals_inference_and_kl_decreases(rng):
    f1, f2, u = small_problem(rng, n=400, k=3)
    crf = densecrf.DenseCRF(400, 3)
    crf.set_unary(u)
    crf.add_pairwise(f1, 3.0)
    crf.add_pairwise(f2, 5.0)
    q = crf.start_inference()
    assert np.allclose(q, softmax(-u), rtol=0, atol=3e-7)  # as above (measured 1.1e-7)
    kls = [crf.kl_divergence(q)]
    for _ in range(4):
        q_before = q.copy()
        q_new = crf.step_inference(q)
        assert np.array_equal(q, q_before)  # the argument is not modified
        q = q_new
        kls.append(crf.kl_divergence(q))
    assert np.array_equal(q, crf.inference(4))  # the same native loop, bit for bit
    # Mean field with positive (attractive) Potts weights decreases the KL
    # divergence in the first iterations (parallel updates are not guaranteed
    # to be monotone forever; the first steps here drop it by > 1 %).
    assert kls[1] < kls[0] * 0.99 or kls[1] < kls[0] - 1.0
    assert min(kls[1:]) < kls[0]


def test_kl_matches_definition(rng):
    f1, _, u = small_problem(rng, n=100, k=3)
    crf = densecrf.DenseCRF(100, 3)
    crf.set_unary(u)
    crf.add_pairwise(f1, 2.0)
    q = crf.inference(2)
    lat = crf.terms[0]["lattice"]
    filt = normalized_filter(lambda v: lat.filter(v).astype(np.float64), 100, 3)
    q64 = q.astype(np.float64)
    expected = np.sum(q64 * np.log(q64)) + np.sum(u * q64) + np.sum(q64 * (-2.0 * filt(q64)))
    # float32 filter inside kl_divergence vs float64 here, summed over 300
    # terms: measured 1.4e-8 relative; 1e-6 relative
    assert abs(crf.kl_divergence(q) - expected) < 1e-6 * abs(expected)


def test_map_and_threads_bit_identical():
    # 260 x 260 points: the fused scatter splits them into 4 fixed partitions,
    # so 1, 2 and 3 threads share out partitions differently.
    h, w, k = 260, 260, 5
    img = smooth_image(h, w)
    probs = label_probs(h, w, k)
    outs = []
    for th in (1, 2, 3):
        crf = densecrf.DenseCRF2D(w, h, k, threads=th)
        crf.set_unary(densecrf.unary_from_softmax(probs))
        crf.add_pairwise_gaussian(3, 3)
        crf.add_pairwise_bilateral(30, 13, img, 10)
        outs.append(crf.inference(5))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    crf = densecrf.DenseCRF2D(w, h, k)
    crf.set_unary(densecrf.unary_from_softmax(probs))
    crf.add_pairwise_gaussian(3, 3)
    crf.add_pairwise_bilateral(30, 13, img, 10)
    assert np.array_equal(crf.map(5), outs[0].argmax(1))


def test_crf_smooths_noisy_labels():
    # The point of the CRF: noisy unaries over two flat regions with an edge.
    # After inference the MAP is cleaner than the unary argmax.
    rng = np.random.default_rng(3)
    h, w = 60, 80
    truth = (np.arange(w)[None, :] >= 40).astype(int).repeat(h, 0)
    img = np.where(truth[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, 2)
    p = np.where(truth[..., None] == np.arange(2), 0.6, 0.4) + rng.normal(0, 0.25, (h, w, 2))
    p = np.clip(p, 0.01, None)
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    before = (p.argmax(-1) == truth).mean()
    q = densecrf.refine(img, p)
    after = (q.argmax(-1) == truth).mean()
    # measured: 0.70 of the pixels right before, all of them after
    assert before < 0.9 and after > 0.99


@pytest.mark.parametrize("n,k", [(1, 1), (1, 3), (5, 1), (0, 3)])
def test_degenerate_sizes(n, k):
    crf = densecrf.DenseCRF(n, k)
    crf.set_unary(np.zeros((n, k)))
    crf.add_pairwise(np.zeros((n, 1)), 3.0)
    q = crf.inference(3)
    assert q.shape == (n, k)
    assert np.allclose(q, 1.0 / k, rtol=0, atol=1e-7)  # uniform up to an ulp or two (measured 1e-8)


def test_volume_3d_refine():
    rng = np.random.default_rng(0)
    d, h, w, k = 12, 16, 20, 3
    truth = (np.indices((d, h, w)).sum(0) > 22).astype(int)
    vol = (truth * 150 + 50 + rng.normal(0, 10, truth.shape)).astype(np.float32)
    p = np.eye(k)[truth] * 0.3 + rng.uniform(0, 0.6, (d, h, w, k))
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    q = densecrf.refine(vol, p, bilateral_sxy=5, bilateral_srgb=20, gaussian_sxy=1, volume=True)
    assert q.shape == p.shape
    assert (q.argmax(-1) == truth).mean() > (p.argmax(-1) == truth).mean()
    # same as DenseCRF with the features built by hand ((x, y, z) order)
    crf = densecrf.DenseCRF(d * h * w, k)
    crf.set_unary(densecrf.unary_from_softmax(p))
    pos = np.stack(np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")[::-1], -1).reshape(-1, 3)
    crf.add_pairwise(pos / 1.0, 3.0)
    crf.add_pairwise(np.concatenate([pos / 5.0, vol.reshape(-1, 1) / 20.0], 1), 10.0)
    # refine starts mean field from max(p, clip) / sum (one pass with the
    # unary), DenseCRF from softmax(-U): the same distribution up to a few
    # ulp, which 5 iterations keep below 1e-6.
    assert np.abs(q.reshape(-1, k) - crf.inference(5)).max() < 1e-6


def test_refine_channel_axis_and_inputs_untouched():
    # 90 x 100 points: the unary pass runs in several chunks of 2048 rows,
    # shared by refine's two chains on 2-3 threads.
    h, w, k = 90, 100, 4
    img = smooth_image(h, w)
    p = label_probs(h, w, k)
    img0, p0 = img.copy(), p.copy()
    q = densecrf.refine(img, p)
    assert q.shape == p.shape and q.dtype == np.float32
    assert np.array_equal(img, img0) and np.array_equal(p, p0)
    for threads in (1, 2, 3):
        assert np.array_equal(densecrf.refine(img, p, threads=threads), q), threads
        q_first = densecrf.refine(img, np.moveaxis(p, -1, 0).copy(), channel_axis=0, threads=threads)
        assert np.array_equal(np.moveaxis(q_first, 0, -1), q), threads
    # float64 inputs give the float32 computation's answer
    assert np.array_equal(densecrf.refine(img.astype(np.float64), p.astype(np.float64)), q)
    # dropping a term changes the result; no terms leaves softmax(-U) = clipped p
    assert not np.array_equal(densecrf.refine(img, p, bilateral_compat=None), q)
    bare = densecrf.refine(img, p, bilateral_compat=None, gaussian_compat=None)
    # the clipped p normalised in float32 (refine) and float64 (here): a few ulp (measured 1.2e-7)
    assert np.allclose(bare, np.clip(p, 1e-5, 1) / np.clip(p, 1e-5, 1).sum(-1, keepdims=True), rtol=0, atol=3e-7)


@pytest.mark.parametrize(
    "call,err,match",
    [
        (lambda: densecrf.DenseCRF(-1, 2), ValueError, "n_points"),
        (lambda: densecrf.DenseCRF(4, 0), ValueError, "n_labels"),
        (lambda: densecrf.DenseCRF(4, 2.5), TypeError, "n_labels"),
        (lambda: densecrf.DenseCRF(4, 2).set_unary(np.zeros((2, 4))), ValueError, r"\(4, 2\)"),
        (lambda: densecrf.DenseCRF(4, 2).set_unary(np.full((4, 2), np.nan)), ValueError, "finite"),
        (lambda: densecrf.DenseCRF(4, 2).add_pairwise(np.zeros((3, 2)), 1.0), ValueError, r"\(4, d\)"),
        (lambda: densecrf.DenseCRF(4, 2).add_pairwise(np.zeros((4, 2)), np.ones(3)), ValueError, "2 values"),
        (lambda: densecrf.DenseCRF(4, 2).add_pairwise(np.zeros((4, 2)), np.ones((2, 3))), ValueError, r"\(2, 2\)"),
        (lambda: densecrf.DenseCRF(4, 2).add_pairwise(np.zeros((4, 2)), float("nan")), ValueError, "finite"),
        (
            lambda: densecrf.DenseCRF(4, 2).add_pairwise(np.zeros((4, 2)), 1.0, normalization="sideways"),
            ValueError,
            "symmetric",
        ),
        (
            lambda: densecrf.DenseCRF(4, 2).add_pairwise(np.zeros((4, 2)), 1.0, normalization=7),
            ValueError,
            "normalization",
        ),
        (lambda: densecrf.DenseCRF(4, 2).inference(-1), ValueError, "n_iter"),
        (lambda: densecrf.DenseCRF(4, 2).step_inference(np.zeros((4, 3))), ValueError, r"\(4, 2\)"),
        (
            lambda: densecrf.DenseCRF2D(4, 3, 2).add_pairwise_bilateral(3, 13, np.zeros((4, 3, 3)), 1.0),
            ValueError,
            r"\(3, 4, C\)",
        ),
        (lambda: densecrf.DenseCRF2D(4, 3, 2).add_pairwise_gaussian(0, 1.0), ValueError, "sxy"),
        (lambda: densecrf.DenseCRF2D(4, 3, 2).add_pairwise_gaussian(-3, 1.0), ValueError, "sxy"),
        (lambda: densecrf.DenseCRF2D(4, 3, 2).add_pairwise_gaussian(float("nan"), 1.0), ValueError, "sxy"),
        (
            lambda: densecrf.DenseCRF2D(4, 3, 2).add_pairwise_bilateral(3, (1, 2), np.zeros((3, 4, 3)), 1.0),
            ValueError,
            "srgb",
        ),
        (lambda: densecrf.refine(np.zeros((4, 5, 3)), np.full((4, 6, 2), 0.5)), ValueError, r"\(4, 6, C\)"),
        (lambda: densecrf.refine(np.zeros((4, 5, 3)), np.full((4, 5, 2), 0.7)), ValueError, "sum to one"),
        (
            lambda: densecrf.refine(np.zeros((4, 5, 3)), np.full((4, 5, 2), 0.5), channel_axis=3),
            ValueError,
            "channel_axis",
        ),
        (lambda: densecrf.refine(np.zeros((4, 5, 3)), np.full(5, 0.2)), ValueError, "spatial"),
        (lambda: densecrf.refine(np.zeros((4, 5, 3)), np.full((4, 5, 2), 0.5), n_iter=2.0), TypeError, "n_iter"),
        (lambda: densecrf.refine(np.zeros((4, 5, 3), dtype=bool), np.full((4, 5, 2), 0.5)), TypeError, "bool"),
    ],
)
def test_bad_input_raises_clear_error(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ---------------------------------------------------------------------------
# Stacks of frames, volumes and batches: refine_batch, volume=True.


def test_stack_of_frames_is_refused_without_volume():
    # [B, H, W, 3] frames with [B, H, W, K] probabilities: three spatial
    # axes. Without volume=True refine refuses them (it would smooth across
    # frames) and names both ways out.
    imgs = np.stack([smooth_image(12, 14, seed=s) for s in range(3)])
    probs = np.stack([label_probs(12, 14, 4, seed=s) for s in range(3)])
    with pytest.raises(ValueError, match=r"3 spatial axes.*refine_batch.*volume=True"):
        densecrf.refine(imgs, probs)
    vol = densecrf.refine(imgs, probs, volume=True)  # asked for: one volume, smoothed across frames
    frames = densecrf.refine_batch(imgs, probs)  # one image at a time
    for i in range(3):
        assert np.array_equal(frames[i], densecrf.refine(imgs[i], probs[i]))
    assert not np.array_equal(vol, frames)  # the volume's z neighbours change the result


def test_labels_first_probs_name_channel_axis():
    # probs [K, H, W] (a network's layout) with the default channel_axis=-1:
    # the message says which axis holds the labels instead of only blaming
    # the image's shape.
    img = smooth_image(12, 14)
    p = np.moveaxis(label_probs(12, 14, 5), -1, 0).copy()
    with pytest.raises(ValueError, match=r"image must have shape \(5, 12, C\).*pass channel_axis=0"):
        densecrf.refine(img, p)
    with pytest.raises(ValueError, match=r"looks channels-first.*np\.moveaxis\(image, 0, -1\)"):
        densecrf.refine(np.moveaxis(img, -1, 0), label_probs(12, 14, 5))


def test_refine_batch_is_refine_per_image():
    # Stacked (channels last and first), lists of different sizes, params=:
    # every image gives the bits refine gives it alone.
    sizes = [(20, 24), (11, 30), (25, 9)]
    imgs = [smooth_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    probs = [label_probs(h, w, 4, seed=i) for i, (h, w) in enumerate(sizes)]
    want = [densecrf.refine(im, p, n_iter=3) for im, p in zip(imgs, probs, strict=True)]
    got = densecrf.refine_batch(imgs, probs, n_iter=3)
    assert isinstance(got, list) and all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    got = densecrf.refine_batch(
        [np.moveaxis(im, -1, 0) for im in imgs],
        [np.moveaxis(p, -1, 0) for p in probs],
        channels_first=True,
        n_iter=3,
        threads=1,
    )
    assert all(np.array_equal(g, np.moveaxis(w, -1, 0)) for g, w in zip(got, want, strict=True))
    ib = np.stack([smooth_image(16, 18, seed=s) for s in range(3)])
    pb = np.stack([label_probs(16, 18, 4, seed=s) for s in range(3)])
    params = {"n_iter": 2, "gaussian": {"sxy": 2.0, "compat": 4.0}, "bilateral": None}
    want = np.stack([densecrf.refine(ib[i], pb[i], params=params) for i in range(3)])
    got = densecrf.refine_batch(ib, pb, params=params)
    assert got.shape == pb.shape and got.dtype == np.float32 and np.array_equal(got, want)
    got = densecrf.refine_batch(np.moveaxis(ib, -1, 1), np.moveaxis(pb, -1, 1), channels_first=True, params=params)
    assert np.array_equal(got, np.moveaxis(want, -1, 1))
    assert densecrf.refine_batch([], []) == []


@pytest.mark.parametrize(
    "call,err,match",
    [
        (
            lambda: densecrf.refine_batch(np.zeros((2, 4, 5, 3)), [np.full((4, 5, 2), 0.5)] * 2),
            TypeError,
            "both be arrays or both be lists",
        ),
        (
            lambda: densecrf.refine_batch([np.zeros((4, 5, 3))], [np.full((4, 5, 2), 0.5)] * 2),
            ValueError,
            "1 images and 2 probability maps",
        ),
        (
            lambda: densecrf.refine_batch(np.zeros((2, 4, 5, 3)), np.full((3, 4, 5, 2), 0.5)),
            ValueError,
            r"images\[0\] has shape \(2, 4, 5, 3\)",
        ),
        (
            lambda: densecrf.refine_batch(
                [np.zeros((4, 5, 3))] * 2, [np.full((4, 5, 2), 0.5), np.full((4, 5, 4), 0.25)]
            ),
            ValueError,
            "share the number of labels",
        ),
        (
            lambda: densecrf.refine_batch(np.zeros((2, 3, 4, 5, 1)), np.full((2, 3, 4, 5, 2), 0.5)),
            ValueError,
            r"3-D volume per image; pass volume=True",
        ),
        (lambda: densecrf.refine_batch(np.zeros((2, 4, 5, 3)), np.full((2, 4, 5, 2), 0.7)), ValueError, "sum to one"),
        (
            lambda: densecrf.refine_batch(np.zeros((2, 4, 5, 3)), np.full((2, 4, 5, 2), 0.5), n_iter=-1),
            ValueError,
            "n_iter",
        ),
    ],
)
def test_refine_batch_bad_input_raises_clear_error(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_refine_batch_reports_non_finite_probs_in_the_callers_layout():
    pb = np.stack([label_probs(6, 7, 3, seed=s) for s in range(2)])
    pb[1, 2, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"probs must be finite; found nan at index \(1, 2, 3, 1\)"):
        densecrf.refine_batch(np.zeros((2, 6, 7, 3)), pb)


def test_gpu_array_on_the_cpu_path_names_device_cuda():
    class FakeGpuArray:  # what a CUDA array library exposes; refine(device='cpu') cannot read it
        __cuda_array_interface__: ClassVar[dict] = {
            "shape": (6, 7, 3),
            "typestr": "<f4",
            "data": (0, False),
            "version": 3,
        }
        shape = (6, 7, 3)

    with pytest.raises(TypeError, match=r"probs is a GPU array.*pass device='cuda'"):
        densecrf.refine(smooth_image(6, 7), FakeGpuArray())


@pytest.mark.parametrize("dtype", [None, np.float64])
def test_zero_d_array_compat_is_potts(rng, dtype):
    # A 0-d array (what np.asarray(3.0) or a numpy scalar reduction gives)
    # is the Potts number it holds, in both dtypes (it was read as a
    # one-value diagonal before 2026-12-05 and refused for K > 1).
    f = rng.random((60, 2)).astype(np.float32)
    u = rng.normal(size=(60, 3)).astype(np.float32)
    out = []
    for compat in (3.0, np.asarray(3.0)):
        crf = densecrf.DenseCRF(60, 3, dtype=dtype)
        crf.set_unary(u)
        crf.add_pairwise(f, compat)
        out.append(crf.inference(3))
    assert np.array_equal(out[0], out[1])


# Mean field gives the same bits on any number of threads: on one thread
# every splat is one scan in point order; on two or three threads (here, 3
# terms) whole terms' splats and blurs go to threads of their own and the
# fused pass is split in chunks of rows. For every
# normalisation (a splat scale, a slice scale, both or none),
# compatibility, number of terms and of iterations.
@pytest.mark.parametrize("compat", list(COMPATS))
@pytest.mark.parametrize("normalization", [0, 1, 2, 3])
def test_mean_field_bits_do_not_depend_on_threads(rng, compat, normalization):
    f1, f2, u = small_problem(rng, n=3000, k=4, d=4)
    out = {}
    for th in (1, 2, 3):
        crf = densecrf.DenseCRF(len(u), 4, threads=th)
        crf.set_unary(u)
        crf.add_pairwise(f1, COMPATS[compat], normalization=normalization)
        crf.add_pairwise(f2, COMPATS[compat], normalization=normalization)
        crf.add_pairwise(f2[:, :2] * 0.5, 1.5, normalization=normalization)  # a third term
        out[th] = [crf.inference(n) for n in (1, 2, 5)]
    for th in (2, 3):
        for a, b in zip(out[1], out[th], strict=True):
            np.testing.assert_array_equal(a, b)


# rows of 1 to 8 blocks of 8 labels in registers; 65: rows in memory
@pytest.mark.parametrize("k", [2, 9, 17, 33, 64, 65])
def test_refine_bits_do_not_depend_on_threads_at_every_row_width(rng, k):
    h, w = 40, 57
    img = smooth_image(h, w)
    p = label_probs(h, w, k, sharpness=1.0)
    one = densecrf.refine(img, p, n_iter=6, threads=1)
    two = densecrf.refine(img, p, n_iter=6, threads=2)
    np.testing.assert_array_equal(one, two)
