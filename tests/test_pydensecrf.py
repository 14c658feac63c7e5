"""Agreement with pydensecrf (Kraehenbuehl's code) on identical inputs.

pydensecrf is installed from PyPI as ``pydensecrf2`` (the test extra); these
tests skip where it is not installable. Both libraries run the same lattice
in float32, so they agree to float32 rounding, not just to the lattice's
approximation error.
"""

import numpy as np
import pytest

import densecrf
import densecrf.compat.pydensecrf.densecrf as cdcrf
import densecrf.compat.pydensecrf.utils as cutils
from reference import label_probs, smooth_image

dcrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf2 is not installed (pip install pydensecrf2)")
putils = pytest.importorskip("pydensecrf.utils")


def pyd_classic(img, probs, n_iter=5):
    h, w, k = probs.shape
    d = dcrf.DenseCRF2D(w, h, k)
    d.setUnaryEnergy(np.ascontiguousarray(putils.unary_from_softmax(np.moveaxis(probs, -1, 0))))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.array(img, order="C"), compat=10)  # pydensecrf needs a writable buffer
    return np.array(d.inference(n_iter)).T.reshape(h, w, k)


def test_reference_workload_agrees():
    # The criterion: 500x375, K = 21, classic parameters, 5
    # iterations: MAP labels agree on >= 99.9 % of pixels and probabilities
    # within 1e-3. Same float32 lattice on both sides: the observed
    # difference is ~1e-6 (summation order only).
    h, w, k = 375, 500, 21
    img = smooth_image(h, w, seed=1)
    probs = label_probs(h, w, k, seed=1)
    ref = pyd_classic(img, probs)
    ours = densecrf.refine(img, probs)
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.999
    assert np.abs(ours - ref).max() < 1e-3


def test_camvid_frame_agrees():
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "camvid", "val")
    files = sorted(glob.glob(os.path.join(root, "*.png")))
    if not files:
        pytest.skip("CamVid data not found beside the repository")
    Image = pytest.importorskip("PIL.Image")

    img = np.asarray(Image.open(files[0]).convert("RGB"))
    h, w = img.shape[:2]
    probs = label_probs(h, w, 11, seed=2, sharpness=1.0)
    ref = pyd_classic(img, probs)
    ours = densecrf.refine(img, probs)
    # same criterion as the reference workload, on a real photograph
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.999
    assert np.abs(ours - ref).max() < 1e-3


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
    c = {"potts": 2.0, "diag": -np.linspace(0.5, 2, k).astype(np.float32),
         "matrix": (rng.normal(size=(k, k)) - 2 * np.eye(k)).astype(np.float32) * 0.5}[compat]
    if normalization == 0:
        c = c * 0.05  # unnormalised kernels sum to ~tens: keep the messages moderate
    results = []
    for mod in (dcrf, cdcrf):
        d = mod.DenseCRF(n, k)
        d.setUnaryEnergy(u.copy())
        d.addPairwiseEnergy(feats.copy(), compat=c, kernel=_const(mod, "KernelType", "DIAG_KERNEL"),
                            normalization=mod.NormalizationType(normalization) if mod is cdcrf else
                            _const(mod, "NormalizationType", ["NO_NORMALIZATION", "NORMALIZE_BEFORE", "NORMALIZE_AFTER",
                                                              "NORMALIZE_SYMMETRIC"][normalization]))
        q = np.array(d.inference(3))
        q0, t1, t2 = d.startInference()
        for _ in range(3):
            d.stepInference(q0, t1, t2)
        results.append((q, np.array(q0), d.klDivergence(q0)))
    (qa, sa, ka), (qb, sb, kb) = results
    assert qa.shape == qb.shape == (k, n)
    assert np.abs(qa - qb).max() < 1e-4
    assert np.abs(sa - sb).max() < 1e-4
    assert np.allclose(qb, sb, atol=1e-6)
    # KL sums ~n*k terms in float64 from float32 inputs: relative 1e-4
    assert abs(ka - kb) <= 1e-4 * max(1.0, abs(ka))


def test_utils_identical(rng):
    sm = rng.dirichlet(np.ones(5), size=(6, 7)).transpose(2, 0, 1).astype(np.float32)
    # The compat module takes -log through densecrf's native float32 log,
    # within 1 ulp (relative 1.2e-7) of numpy's: 3e-7 relative allows for
    # that and pydensecrf's float64 log after mixing with `scale`.
    np.testing.assert_allclose(cutils.unary_from_softmax(sm), putils.unary_from_softmax(sm), rtol=3e-7, atol=1e-7)
    np.testing.assert_allclose(cutils.unary_from_softmax(sm, scale=0.8), putils.unary_from_softmax(sm, scale=0.8),
                               rtol=3e-7, atol=1e-7)
    # and a log off by 1e-6 relative would fail:
    assert not np.allclose(cutils.unary_from_softmax(sm) * (1 + 1e-6), putils.unary_from_softmax(sm), rtol=3e-7, atol=0)
    labels = rng.integers(0, 5, size=(6, 7))
    for zu in (True, False):
        assert np.array_equal(cutils.unary_from_labels(labels, 5 if zu else 5, 0.7, zero_unsure=zu),
                              putils.unary_from_labels(labels, 5, 0.7, zero_unsure=zu))
    assert np.array_equal(cutils.create_pairwise_gaussian((3, 4), (6, 7)), putils.create_pairwise_gaussian((3, 4), (6, 7)))
    img = rng.integers(0, 255, size=(6, 7, 3)).astype(np.uint8)
    assert np.array_equal(cutils.create_pairwise_bilateral((3, 4), (10, 11, 12), img, chdim=2),
                          putils.create_pairwise_bilateral((3, 4), (10, 11, 12), img, chdim=2))
    gray = rng.integers(0, 255, size=(6, 7)).astype(np.uint8)
    assert np.array_equal(cutils.create_pairwise_bilateral((3, 4), 10, gray, chdim=-1),
                          putils.create_pairwise_bilateral((3, 4), 10, gray, chdim=-1))


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
    # float32 on both sides, summation order only
    assert np.abs(outs[0] - outs[1]).max() < 1e-4
