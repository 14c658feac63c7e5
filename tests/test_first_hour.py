"""A new user's first hour: the traps of issue 23 that a test can hold shut.

- Image units: ``refine``, ``refine_batch`` (CPU and CUDA paths) and
  ``CRFasRNN`` take images in 0..255 units (``bilateral_srgb``'s); a float RGB
  image whose largest value is at most 1 gets a UserWarning naming
  ``image_range``, which states the range (``(lo, hi)`` rescales, ``'raw'``
  silences). uint8 and float 0..255 images keep their bits.
- ``CRFasRNN``'s messages name the likely cause (no batch axis, channels
  last); its default bilateral weight differs from ``refine``'s for a stated
  reason, and the layer equal to ``refine``'s defaults is the one its
  docstring names.
- ``densecrf.fit`` warns (and records in ``info['warnings']``) when no CRF
  beats the network, when the held-out part is small, and when gradient
  descent stops at its step limit while still improving.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

import densecrf
import densecrf.backends.cuda as cuda_backend
from conftest import missing
from densecrf.backends.problem import describe, image_range_factor, settings
from densecrf.fit import MIN_HELDOUT, _still_improving, format_table
from densecrf.params import CRFParams

try:
    import torch

    from densecrf.nn import CRFasRNN
except ImportError:
    torch = CRFasRNN = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (pip install 'densecrf[torch]')")

HERE = os.path.dirname(os.path.abspath(__file__))


def scene(h=24, w=30, seed=0):
    """A uint8 RGB image of two colour regions and noisy probabilities for them (K = 2)."""
    rng = np.random.default_rng(seed)
    truth = (np.arange(w)[None, :] >= w // 2).repeat(h, axis=0)
    img = np.where(truth[..., None], np.array([200, 60, 40]), np.array([40, 90, 180]))
    img = np.clip(img + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)
    logits = rng.normal(0, 1, (h, w, 2)) + 0.8 * np.eye(2)[truth.astype(int)]
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return img, p.astype(np.float32)


def unit_warnings(fn, *args, **kwargs):
    """(result, the UserWarnings about image units that fn(*args, **kwargs) issued)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [w for w in caught if issubclass(w.category, UserWarning) and "image_range" in str(w.message)]


# ---------------------------------------------------------------------------
# Image units: refine and refine_batch on the CPU
# ---------------------------------------------------------------------------
def test_refine_warns_on_float_rgb_in_0_1_and_names_the_fix():
    img, p = scene()
    _, caught = unit_warnings(densecrf.refine, img.astype(np.float32) / 255, p)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "0..255" in msg and "image_range=(0, 1)" in msg and "image_range='raw'" in msg
    assert caught[0].filename == __file__  # the warning points at the caller's line, not at densecrf


@pytest.mark.parametrize(
    "make, kwargs",
    [
        (lambda img: img, {}),  # uint8
        (lambda img: img.astype(np.float32), {}),  # float in 0..255
        (lambda img: img.astype(np.float32) / 255, {"image_range": (0, 1)}),  # stated range
        (lambda img: img.astype(np.float32) / 255, {"image_range": "raw"}),  # stated: own units
        (lambda img: img.astype(np.float32) / 255, {"bilateral_compat": None}),  # no term reads the image
        (lambda img: np.zeros(img.shape, np.float32), {}),  # an all-black image: nothing to tell
        (lambda img: img[..., :1].astype(np.float32) / 255, {}),  # 1 channel: the caller's units
        (lambda img: np.concatenate([img, img[..., :1]], -1).astype(np.float32) / 255, {}),  # 4 channels
    ],
    ids=["uint8", "float255", "range01", "raw", "no-bilateral", "black", "one-channel", "four-channels"],
)
def test_refine_no_warning(make, kwargs):
    img, p = scene()
    _, caught = unit_warnings(densecrf.refine, make(img), p, **kwargs)
    assert caught == []


def test_uint8_and_float255_keep_their_bits():
    img, p = scene()
    ref = densecrf.refine(img, p)
    assert np.array_equal(densecrf.refine(img.astype(np.float32), p), ref)
    assert np.array_equal(densecrf.refine(img.astype(np.float64), p), ref)
    # (0, 255) scales the colour bandwidth by exactly 1.0: the same bits.
    assert np.array_equal(densecrf.refine(img, p, image_range=(0, 255)), ref)
    assert np.array_equal(densecrf.refine(img, p, image_range="raw"), ref)


def test_image_range_0_1_is_the_image_times_255():
    img, p = scene()
    ref = densecrf.refine(img, p)
    q = densecrf.refine(img.astype(np.float32) / 255, p, image_range=(0, 1))
    # Bandwidth scaled instead of image: the colour features differ by float32
    # rounding only. Measured: 1.2e-7 (one ulp at 1) on 5 seeds. 1e-5 leaves
    # room for builds that round differently (FMA contraction, the GPU's exp);
    # dropping the colour term changes Q by ~1 here (checked next).
    assert float(np.abs(q - ref).max()) < 1e-5
    off = densecrf.refine(img.astype(np.float32) / 255, p, image_range="raw")
    assert float(np.abs(off - ref).max()) > 0.1


def test_image_range_problem_scales_only_the_colour_bandwidths():
    s = settings(bilateral_srgb=(13.0, 26.0, 39.0))
    pr = describe(s, labels=2, ndim=2, channels=3, image_range=(-1, 1))
    (gauss, bil) = pr.terms
    assert gauss.sxy == (3.0, 3.0) and bil.sxy == (80.0, 80.0)
    assert bil.srgb == pytest.approx((13 * 2 / 255, 26 * 2 / 255, 39 * 2 / 255), rel=1e-15)  # float64 arithmetic
    assert describe(s, labels=2, ndim=2, channels=3).terms[1].srgb == (13.0, 26.0, 39.0)


@pytest.mark.parametrize("bad", ["0..1", (1, 0), (0, 0), (0, float("nan")), (0, 1, 2), 5])
def test_image_range_bad_values(bad):
    with pytest.raises((ValueError, TypeError), match="image_range"):
        image_range_factor(bad)
    img, p = scene()
    with pytest.raises((ValueError, TypeError), match="image_range"):
        densecrf.refine(img, p, image_range=bad)


def test_image_range_leaves_the_image_alone():
    img, p = scene()
    x = img.astype(np.float32) / 255
    before = x.copy()
    densecrf.refine(x, p, image_range=(0, 1))
    assert np.array_equal(x, before)


@pytest.mark.parametrize("as_list", [False, True])
def test_refine_batch_warns_and_rescales(as_list):
    (a, pa), (b, pb) = scene(seed=1), scene(seed=2)
    ims = np.stack([a, b]).astype(np.float32) / 255
    ps = np.stack([pa, pb])
    args = ([ims[0], ims[1]], [ps[0], ps[1]]) if as_list else (ims, ps)
    _, caught = unit_warnings(densecrf.refine_batch, *args)
    assert len(caught) == 1 and caught[0].filename == __file__
    assert ("images[0]" if as_list else "images ") in str(caught[0].message)
    q, caught = unit_warnings(densecrf.refine_batch, *args, image_range=(0, 1))
    assert caught == []
    ref = densecrf.refine(a, pa)
    # as test_image_range_0_1_is_the_image_times_255
    assert float(np.abs(np.asarray(q[0]) - ref).max()) < 1e-5
    # uint8 batches: no warning, refine's bits
    q8, caught = unit_warnings(densecrf.refine_batch, np.stack([a, b]), ps)
    assert caught == [] and np.array_equal(q8[0], ref)


def test_empty_batches_need_no_peak():
    # a batch of no images: nothing to warn about, and no max() of an empty array
    q = densecrf.refine_batch(np.zeros((0, 4, 5, 3), np.float32), np.full((0, 4, 5, 2), 0.5, np.float32))
    assert q.shape == (0, 4, 5, 2)


# ---------------------------------------------------------------------------
# Image units on the CUDA path (real GPU, or the host emulation of tests/cuda_emu)
# ---------------------------------------------------------------------------
try:
    sys.path.insert(0, os.path.join(HERE, "cuda_emu"))
    import emulate
finally:
    sys.path.pop(0)


@pytest.fixture(params=["gpu", "emu"])
def cuda_path(request, monkeypatch):
    if request.param == "gpu":
        if not densecrf.cuda_available():
            pytest.skip("no CUDA device, or densecrf built without CUDA")
    else:
        try:
            mod = emulate.build()
        except RuntimeError as exc:
            missing(f"CUDA host emulation unavailable: {exc}")
        monkeypatch.setattr(cuda_backend, "_C", mod)
        monkeypatch.setattr(cuda_backend, "_built_with_cuda", lambda: True)
    return request.param


def test_cuda_refine_warns_and_rescales(cuda_path):
    img, p = scene()
    x = img.astype(np.float32) / 255
    _, caught = unit_warnings(densecrf.refine, x, p, device="cuda")
    assert len(caught) == 1 and caught[0].filename == __file__
    q, caught = unit_warnings(densecrf.refine, x, p, device="cuda", image_range=(0, 1))
    assert caught == []
    ref = densecrf.refine(img, p, device="cuda")
    # as test_image_range_0_1_is_the_image_times_255
    assert float(np.abs(q - ref).max()) < 1e-5
    _, caught = unit_warnings(densecrf.refine, img, p, device="cuda")
    assert caught == []
    # a batch, channels first as densecrf.cuda.refine_batch takes it
    xb, pb = np.moveaxis(x[None], -1, 1), np.moveaxis(p[None], -1, 1)
    _, caught = unit_warnings(densecrf.cuda.refine_batch, xb, pb)
    assert len(caught) == 1 and caught[0].filename == __file__


@needs_torch
def test_cuda_refine_warns_on_torch_device_tensors():
    if not densecrf.cuda_available():
        pytest.skip("no CUDA device")
    img, p = scene()
    x = torch.from_numpy(img.astype(np.float32) / 255).cuda()
    pt = torch.from_numpy(p).cuda()
    _, caught = unit_warnings(densecrf.refine, x, pt, device="cuda")
    assert len(caught) == 1
    _, caught = unit_warnings(densecrf.refine, x, pt, device="cuda", image_range=(0, 1))
    assert caught == []


# ---------------------------------------------------------------------------
# CRFasRNN: units, messages, default weights
# ---------------------------------------------------------------------------
def torch_scene():
    img, p = scene()
    logits = torch.from_numpy(np.log(p)).permute(2, 0, 1)[None].contiguous()
    image = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None].contiguous()
    return logits, image


@needs_torch
def test_crfasrnn_warns_on_image_in_0_1_and_rescales():
    logits, image = torch_scene()
    crf = CRFasRNN(2)
    with torch.no_grad():
        ref = crf(logits, image)
        _, caught = unit_warnings(crf, logits, image / 255)
        assert len(caught) == 1 and caught[0].filename == __file__
        assert "0..255" in str(caught[0].message)
        z, caught = unit_warnings(crf, logits, image / 255, image_range=(0, 1))
        assert caught == []
        _, caught = unit_warnings(crf, logits, image)
        assert caught == []
    # as test_image_range_0_1_is_the_image_times_255, on logits (|z| up to ~10,
    # so a float32 ulp is ~1e-6): measured 4.8e-6; the colour term's absence
    # changes them by ~4
    assert float((z - ref).abs().max()) < 1e-4
    # gradients flow with a stated range too
    crf(logits, image / 255, image_range=(0, 1)).sum().backward()
    assert crf.weights["bilateral"].grad is not None


@needs_torch
def test_crfasrnn_empty_batch_needs_no_peak():
    crf = CRFasRNN(2)
    out = crf(torch.zeros(0, 2, 4, 4), torch.zeros(0, 3, 4, 4))
    assert out.shape == (0, 2, 4, 4)


@needs_torch
def test_deeplabcrf_takes_0_1_and_hands_its_head_0_255():
    from densecrf.models.deeplab import DeepLabCRF

    torch.manual_seed(0)
    model = DeepLabCRF(2, width=4).eval()
    _, image = torch_scene()
    seen = []
    model.crf.register_forward_pre_hook(lambda mod, args: seen.append(float(args[1].max())))
    with torch.no_grad():
        _, caught = unit_warnings(model, image / 255)
    assert caught == []
    assert seen and seen[0] > 1  # the head saw 0..255 values


@needs_torch
def test_crfasrnn_without_batch_axis_says_so():
    logits, image = torch_scene()
    crf = CRFasRNN(2)
    with pytest.raises(ValueError, match=r"without the batch axis: pass logits\[None\]"):
        crf(logits[0], image[0])
    with pytest.raises(ValueError, match=r"no batch axis: pass image\[None\]"):
        crf(logits, image[0])
    with pytest.raises(ValueError, match="channels-last"):
        crf(logits, image.permute(0, 2, 3, 1))


@needs_torch
def test_crfasrnn_default_weight_and_the_layer_equal_to_refine():
    k = 2
    crf = CRFasRNN(k)
    assert float(crf.weights["bilateral"].detach()) == 5.0 and float(crf.weights["spatial"].detach()) == 3.0
    doc = " ".join(CRFasRNN.__doc__.split())
    assert "not :func:`densecrf.refine`'s 10" in doc and "CRFasRNN.from_params(densecrf.params.CRFParams(), K)" in doc
    # the recipe the docstring names is refine's default CRF
    img, p = scene()
    layer = CRFasRNN.from_params(CRFParams(), k)
    logits = torch.from_numpy(np.log(np.maximum(p, 1e-5))).permute(2, 0, 1)[None]  # refine's clip 1e-5
    image = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        q = torch.softmax(layer(logits, image), 1)[0].permute(1, 2, 0).numpy()
    ref = densecrf.refine(img, p)
    # Both run the same native lattice and mean field in float32; the layer
    # returns logits and softmaxes them here, refine returns Q: they agree to
    # float32 rounding of a softmax (measured 1.2e-7, one ulp at 1), bounded at 1e-5.
    assert float(np.abs(q - ref).max()) < 1e-5


# ---------------------------------------------------------------------------
# densecrf.fit: warnings for what a user would otherwise miss
# ---------------------------------------------------------------------------
def fit_scene(seed, h=24, w=28, perfect=False):
    """Two colour regions and probabilities: noisy, or already right everywhere (perfect)."""
    rng = np.random.default_rng(seed)
    truth = (np.arange(w)[None, :] >= w // 2).repeat(h, axis=0).astype(np.int64)
    img = np.where(truth[..., None] == 1, 150, 110).repeat(3, axis=2).astype(np.uint8)
    logits = (0.0 if perfect else rng.normal(0, 1.4, (h, w, 2))) + (4.0 if perfect else 0.7) * np.eye(2)[truth]
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return img, p.astype(np.float32), truth


def fit_data(n, **kw):
    ims, ps, labs = zip(*[fit_scene(s, **kw) for s in range(n)], strict=True)
    return list(ims), list(ps), list(labs)


ONE_POINT = [CRFParams(gaussian_compat=3.0, bilateral_sxy=30.0, bilateral_srgb=13.0, bilateral_compat=3.0)]


def fit_warnings(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = densecrf.fit(*args, **kwargs)
    return out, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_fit_warns_when_no_crf_helps():
    ims, ps, labs = fit_data(10, perfect=True)
    out, caught = fit_warnings(ims, ps, labs, search="grid", grid=ONE_POINT, holdout=0.5)
    assert out.info["selected"] == "network" and out.info["no_crf"]
    assert out.gaussian_compat is None and out.bilateral_compat is None
    msgs = [m for m in caught if "no CRF setting beat the network" in m]
    assert len(msgs) == 1
    assert msgs[0] in out.info["warnings"]
    assert f"warning: {msgs[0]}" in format_table(out.info)


def test_fit_no_warning_when_a_crf_helps_on_enough_images():
    ims, ps, labs = fit_data(10)
    out, caught = fit_warnings(ims, ps, labs, search="grid", grid=ONE_POINT, holdout=0.5)
    assert len(out.info["heldout_indices"]) == 5
    assert out.info["selected"] != "network"  # the bilateral term cleans the noise of this scene
    assert caught == [] and out.info["warnings"] == []


def test_fit_warns_on_a_small_held_out_part():
    ims, ps, labs = fit_data(6)
    out, caught = fit_warnings(ims, ps, labs, search="grid", grid=ONE_POINT, holdout=0.3)
    assert len(out.info["heldout_indices"]) == 2
    msgs = [m for m in caught if "held-out part has 2 images" in m]
    assert len(msgs) == 1 and str(MIN_HELDOUT) in msgs[0]
    assert msgs[0] in out.info["warnings"]


def test_still_improving_rule():
    h = [(0.5, None, 10), (0.6, None, 20), (0.7, None, 30)]
    assert _still_improving(h, stopped_early=False)
    assert not _still_improving(h, stopped_early=True)
    assert not _still_improving([(0.5, None, 10), (0.7, None, 20), (0.6, None, 30)], False)
    # a tie with an earlier evaluation: the earlier one is selected, the run had stopped improving
    assert not _still_improving([(0.7, None, 10), (0.7, None, 20)], False)
    assert _still_improving([(0.7, None, 10)], False)


@needs_torch
def test_fit_warns_when_descent_stops_at_the_step_limit_still_improving():
    ims, ps, labs = fit_data(6)
    kw = {"search": "gradient", "grid": ONE_POINT, "holdout": 0.5, "crop": 16, "batch": 1, "eval_every": 1}
    # one step, one evaluation: the best score is at the last evaluation
    out, caught = fit_warnings(ims, ps, labs, steps=1, **kw)
    msgs = [m for m in caught if "step limit" in m]
    assert len(msgs) == 1 and "(steps=1)" in msgs[0] and msgs[0] in out.info["warnings"]
    # stopped early (patience 1, a learning rate too small to change a score): no such warning
    out, caught = fit_warnings(ims, ps, labs, steps=6, patience=1, lr=1e-9, **kw)
    assert not [m for m in caught if "step limit" in m]
