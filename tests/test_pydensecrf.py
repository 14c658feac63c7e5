"""Agreement with pydensecrf (Kraehenbuehl's code) on identical inputs.

pydensecrf is installed from PyPI as ``pydensecrf2`` (the test extra, on
Python < 3.12); these tests skip where it is not installed, except in CI
(DENSECRF_STRICT=1) on a Python where the extra installs it. Both libraries run the same lattice
in float32, so they agree to float32 rounding, not just to the lattice's
approximation error.
"""

import numpy as np
import pytest

import densecrf
import densecrf.compat.pydensecrf.densecrf as cdcrf
import densecrf.compat.pydensecrf.utils as cutils
from conftest import STRICT, camvid_dir, pydensecrf_required
from reference import label_probs, smooth_image

if STRICT and pydensecrf_required():
    # CI (DENSECRF_STRICT=1) on a Python where the test extra installs
    # pydensecrf2: an ImportError here fails the run instead of skipping it.
    import pydensecrf.densecrf as dcrf
    import pydensecrf.utils as putils
else:
    dcrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf2 is not installed (pip install pydensecrf2)")
    putils = pytest.importorskip("pydensecrf.utils")


def pyd_classic(img, probs, n_iter=5):
    h, w, k = probs.shape
    d = dcrf.DenseCRF2D(w, h, k)
    d.setUnaryEnergy(np.ascontiguousarray(putils.unary_from_softmax(np.moveaxis(probs, -1, 0))))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(
        sxy=80, srgb=13, rgbim=np.array(img, order="C"), compat=10
    )  # pydensecrf needs a writable buffer
    return np.array(d.inference(n_iter)).T.reshape(h, w, k)


# "Exact to pydensecrf" (README.md): the same lattice, blur, normalisation and
# mean field in the same float32 arithmetic, so the two differ by rounding
# only (summation order, FMA contraction, exp's last bit):
PROB_ATOL = 1e-5
# A logit is a unary of up to -log(1e-5) = 11.5 plus messages of up to
# 13 (compat 3 + 10 times a normalised filter of at most 1): one float32
# rounding of it is up to 1e-6 (half an ulp at 16-32), and
# dQ = Q (1 - Q) dlogit <= dlogit / 4; a few such roundings per iteration,
# partly damped by the next softmax, give a few 1e-6. Measured max |dQ|
# (AVX2 and baseline kernels): 5.4e-7 to 6.3e-7 on the reference workload
# at 5 and 10 iterations, 4.6e-6 to 5.1e-6 on the first CamVid val frame
# (one pixel; 6e-7 on the next two). 1e-5 is twice the worst measured.
MARGIN = 2 * PROB_ATOL
# A pixel's MAP label can differ only where pydensecrf's two best labels are
# within 2 * PROB_ATOL of each other (each moves by at most PROB_ATOL);
# measured: no pixel differs, with margins down to 7e-7 present.


def assert_exact_to_pydensecrf(ours, ref):
    """The README's definition: every probability within PROB_ATOL, the same MAP label wherever pydensecrf's top
    two are more than MARGIN apart."""
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= PROB_ATOL, np.abs(ours - ref).max()
    top2 = np.sort(ref, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > MARGIN
    assert clear.mean() > 0.99  # the label rule tests nearly every pixel
    assert np.array_equal(ours.argmax(-1)[clear], ref.argmax(-1)[clear])


@pytest.mark.parametrize("n_iter", [5, 10])
def test_reference_workload_agrees(n_iter):
    # The reference workload: 500x375, K = 21, classic parameters.
    h, w, k = 375, 500, 21
    img = smooth_image(h, w, seed=1)
    probs = label_probs(h, w, k, seed=1)
    ref = pyd_classic(img, probs, n_iter)
    assert_exact_to_pydensecrf(densecrf.refine(img, probs, n_iter=n_iter), ref)


def test_camvid_frames_agree():
    import glob
    import os

    from PIL import Image

    files = sorted(glob.glob(os.path.join(camvid_dir(), "val", "*.png")))[:3]
    assert len(files) == 3
    for f in files:  # real photographs: the bilateral lattice has far more vertices than on smooth_image
        img = np.asarray(Image.open(f).convert("RGB"))
        h, w = img.shape[:2]
        probs = label_probs(h, w, 11, seed=2, sharpness=1.0)
        assert_exact_to_pydensecrf(densecrf.refine(img, probs), pyd_classic(img, probs))


def _const(mod, enum: str, name: str):
    """pydensecrf's enum constant: a module attribute in older builds, only on the enum class when built with recent Cython (3.3.1 here)."""
    return getattr(mod, name) if hasattr(mod, name) else getattr(getattr(mod, enum), name)


@pytest.mark.parametrize("normalization", [0, 1, 2, 3])
@pytest.mark.parametrize("compat", ["potts", "diag", "matrix"])
def test_compat_module_matches_pydensecrf(rng, normalization, compat):
    # The same user code with only the import changed, on every compatibility
    # kind and normalisation mode, with arbitrary feature dimension (4) and
    # step-wise inference. Float32 on both sides: differences ~1e-6; 1e-4
    # allows for the unnormalised mode's larger magnitudes.
    n, k = 600, 4
    feats = (rng.random((4, n)) * 5).astype(np.float32)
    u = rng.normal(size=(k, n)).astype(np.float32)
    c = {
        "potts": 2.0,
        "diag": -np.linspace(0.5, 2, k).astype(np.float32),
        "matrix": (rng.normal(size=(k, k)) - 2 * np.eye(k)).astype(np.float32) * 0.5,
    }[compat]
    if normalization == 0:
        c = c * 0.05  # unnormalised kernels sum to ~tens: keep the messages moderate
    results = []
    for mod in (dcrf, cdcrf):
        d = mod.DenseCRF(n, k)
        d.setUnaryEnergy(u.copy())
        d.addPairwiseEnergy(
            feats.copy(),
            compat=c,
            kernel=_const(mod, "KernelType", "DIAG_KERNEL"),
            normalization=mod.NormalizationType(normalization)
            if mod is cdcrf
            else _const(
                mod,
                "NormalizationType",
                ["NO_NORMALIZATION", "NORMALIZE_BEFORE", "NORMALIZE_AFTER", "NORMALIZE_SYMMETRIC"][normalization],
            ),
        )
        q = np.array(d.inference(3))
        q0, t1, t2 = d.startInference()
        for _ in range(3):
            d.stepInference(q0, t1, t2)
        results.append((q, np.array(q0), d.klDivergence(q0)))
    (qa, sa, ka), (qb, sb, kb) = results
    assert qa.shape == qb.shape == (k, n)
    # Three iterations on 600 points with moderate logits: a rounding
    # difference moves a probability by an ulp or two near 1 (1.2e-7 each);
    # measured max 1.8e-7 over the 12 cases on the AVX2 and baseline
    # kernels. 5e-7 is 4 ulp near 1.
    assert np.abs(qa - qb).max() <= 5e-7
    assert np.abs(sa - sb).max() <= 5e-7
    # step-wise inference is the same computation as inference(): equal
    # bits on each side
    assert np.array_equal(qa, sa) and np.array_equal(qb, sb)
    # KL: float64 sums of n*k terms of float32 inputs that differ by the
    # above; measured relative difference <= 5.1e-8; 2e-7 is 4x that.
    assert abs(ka - kb) <= 2e-7 * abs(ka)


def test_utils_identical(rng):
    sm = rng.dirichlet(np.ones(5), size=(6, 7)).transpose(2, 0, 1).astype(np.float32)
    # The compat module takes -log through densecrf's native float32 log,
    # within 1 ulp (relative 1.2e-7) of numpy's: 3e-7 relative allows for
    # that and pydensecrf's float64 log after mixing with `scale`.
    np.testing.assert_allclose(cutils.unary_from_softmax(sm), putils.unary_from_softmax(sm), rtol=3e-7, atol=1e-7)
    np.testing.assert_allclose(
        cutils.unary_from_softmax(sm, scale=0.8), putils.unary_from_softmax(sm, scale=0.8), rtol=3e-7, atol=1e-7
    )
    # and a log off by 1e-6 relative would fail:
    assert not np.allclose(cutils.unary_from_softmax(sm) * (1 + 1e-6), putils.unary_from_softmax(sm), rtol=3e-7, atol=0)
    for zu in (True, False):
        # 5 classes: labels 0..4, or with zero_unsure 1..5 and 0 for "unsure"
        # (a uniform unary there)
        labels = rng.integers(0, 6 if zu else 5, size=(6, 7))
        assert (labels == (5 if zu else 4)).any() and (labels == 0).any()
        ours = cutils.unary_from_labels(labels, 5, 0.7, zero_unsure=zu)
        assert np.array_equal(ours, putils.unary_from_labels(labels, 5, 0.7, zero_unsure=zu))
        if zu:
            assert np.all(ours[:, labels.ravel() == 0] == ours[0, labels.ravel() == 0])
    assert np.array_equal(
        cutils.create_pairwise_gaussian((3, 4), (6, 7)), putils.create_pairwise_gaussian((3, 4), (6, 7))
    )
    img = rng.integers(0, 255, size=(6, 7, 3)).astype(np.uint8)
    assert np.array_equal(
        cutils.create_pairwise_bilateral((3, 4), (10, 11, 12), img, chdim=2),
        putils.create_pairwise_bilateral((3, 4), (10, 11, 12), img, chdim=2),
    )
    gray = rng.integers(0, 255, size=(6, 7)).astype(np.uint8)
    assert np.array_equal(
        cutils.create_pairwise_bilateral((3, 4), 10, gray, chdim=-1),
        putils.create_pairwise_bilateral((3, 4), 10, gray, chdim=-1),
    )


def test_nd_utils_pipeline_matches(rng):
    # pydensecrf's documented N-D recipe (utils features + addPairwiseEnergy)
    shape, k = (6, 8, 10), 3
    vol = rng.integers(0, 255, size=shape).astype(np.uint8)
    probs = rng.dirichlet(np.ones(k), size=shape).transpose(3, 0, 1, 2).astype(np.float32)
    outs = []
    for mod, ut in ((dcrf, putils), (cdcrf, cutils)):
        d = mod.DenseCRF(int(np.prod(shape)), k)
        c = np.ascontiguousarray  # pydensecrf takes C-contiguous arrays only
        d.setUnaryEnergy(c(ut.unary_from_softmax(probs)))
        d.addPairwiseEnergy(c(ut.create_pairwise_gaussian((1, 1, 1), shape)), compat=3)
        d.addPairwiseEnergy(c(ut.create_pairwise_bilateral((5, 5, 5), (20,), vol, chdim=-1)), compat=10)
        outs.append(np.array(d.inference(5)))
    # the classic weights through the utils features: the README's
    # definition (measured max |dQ| 1.4e-6 to 1.6e-6, baseline and AVX2)
    assert_exact_to_pydensecrf(outs[1].T, outs[0].T)


def test_set_unary_takes_a_const_unary(rng):
    # pydensecrf's setUnary(ConstUnary(u)) is setUnaryEnergy(u) on both sides
    n, k = 400, 4
    feats = (rng.random((3, n)) * 4).astype(np.float32)
    u = rng.normal(size=(k, n)).astype(np.float32)
    out = {}
    for mod in (dcrf, cdcrf):
        for how in ("energy", "const"):
            d = mod.DenseCRF(n, k)
            if how == "energy":
                d.setUnaryEnergy(u.copy())
            else:
                d.setUnary(mod.ConstUnary(u.copy()))
            d.addPairwiseEnergy(feats.copy(), compat=3.0)
            out[mod.__name__, how] = np.array(d.inference(4))
        assert np.array_equal(out[mod.__name__, "energy"], out[mod.__name__, "const"])  # the same call inside
    # and the two libraries agree as everywhere else (as test_compat_module_matches_pydensecrf: 5e-7)
    assert np.abs(out[dcrf.__name__, "const"] - out[cdcrf.__name__, "const"]).max() <= 5e-7
    with pytest.raises(TypeError, match="ConstUnary"):
        cdcrf.DenseCRF(n, k).setUnary(u)


def test_deprecated_utils_match(rng, caplog):
    # softmax_to_unary and compute_unary: pydensecrf's deprecated aliases, same arrays and the same warning
    sm = rng.dirichlet(np.ones(4), size=(5, 6)).transpose(2, 0, 1).astype(np.float32)
    for gt in (1, 0.8):
        ours, theirs = cutils.softmax_to_unary(sm, gt), putils.softmax_to_unary(sm, gt)
        assert ours.shape == theirs.shape == (4, 30)
        # float32 -log of the same (scaled) probabilities: 1 ulp of each
        # side's log (rtol 3e-7 as test_utils_identical)
        np.testing.assert_allclose(ours, theirs, rtol=3e-7, atol=1e-7)
        p = sm.reshape(4, -1).astype(np.float64)
        if gt != 1:
            p = gt * p + (1 - gt) / 4
        np.testing.assert_allclose(ours, -np.log(p), rtol=3e-7, atol=1e-7)  # the definition, unclipped
    assert "softmax_to_unary is deprecated" in caplog.text
    labels = rng.integers(0, 4, size=(5, 6))
    assert np.array_equal(cutils.compute_unary(labels, 3, 0.6), putils.compute_unary(labels, 3, 0.6))
    assert "compute_unary is deprecated" in caplog.text


def test_deliberate_differences():
    # The list in docs/guide.rst ("Where the drop-in deliberately differs"):
    # each case as pydensecrf answers it and as the drop-in does.
    def crf(mod, unary=None):
        d = mod.DenseCRF2D(10, 10, 2)
        d.setUnaryEnergy(np.ones((2, 100), np.float32) if unary is None else unary)
        return d

    image = np.zeros((10, 10, 3), np.uint8)
    ro_image = image.copy()
    ro_image.setflags(write=False)
    cases = {
        "float64 unary": lambda mod: crf(mod, np.ones((2, 100))).inference(1),
        "float64 compat (pydensecrf's test_compact_wrong)": lambda mod: crf(mod).addPairwiseBilateral(
            sxy=(3, 3), srgb=(3, 3, 3), rgbim=image, compat=np.array([1.0, 2.0])
        ),
        "non-contiguous unary": lambda mod: crf(mod, np.asfortranarray(np.ones((2, 100), np.float32))).inference(1),
        "read-only image": lambda mod: crf(mod).addPairwiseBilateral(sxy=3, srgb=3, rgbim=ro_image, compat=3),
    }
    for call in cases.values():
        with pytest.raises(ValueError):  # pydensecrf refuses it
            call(dcrf)
        call(cdcrf)  # accepted, converted once
    with pytest.raises(ValueError, match="dtype mismatch"):
        crf(dcrf).addPairwiseBilateral(sxy=3, srgb=3, rgbim=image.astype(np.float32), compat=3)
    with pytest.raises(TypeError, match="uint8"):
        crf(cdcrf).addPairwiseBilateral(sxy=3, srgb=3, rgbim=image.astype(np.float32), compat=3)
    crf(dcrf).setUnaryEnergy(np.ones((2, 100), np.float32), np.ones((3, 100), np.float32))  # LogisticUnaryEnergy
    with pytest.raises(NotImplementedError, match="LogisticUnaryEnergy"):
        crf(cdcrf).setUnaryEnergy(np.ones((2, 100), np.float32), np.ones((3, 100), np.float32))
    # the zero_unsure trap, kept: label 0 is "unsure" (uniform) by default on both sides
    labels = np.array([[0, 1], [2, 1]])
    for utils in (putils, cutils):
        u = utils.unary_from_labels(labels, 2, 0.7)
        assert u[0, 0] == u[1, 0] and u[0, 1] < u[1, 1]  # pixel 0 uniform; label 1 is class 0
