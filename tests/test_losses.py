"""densecrf.nn.DenseCRFLoss and NormalizedCutLoss (densecrf/losses.py).

References, in order:

1. the loss written out densely: rloss's definition (F.interpolate of the
   images and rois nearest, of the segmentation bilinear without aligned
   corners, sigma_xy times scale_factor, -w/B sum_k (rS_k)^T K (rS_k)) over
   the exact O(N^2) Gaussian K, in float64. With the brute-force Gaussian
   plugged in as densecrf.nn's backend the module must equal it to float64
   rounding: this checks the wiring (features, scaling, masking, sums,
   gradients) exactly;
2. the same dense loss against the real lattice: the permutohedral lattice
   approximates the Gaussian up to an overall scale and a few per cent of
   shape error (bounds explained at the test);
3. gradcheck on the real lattice (float64 input: the float64 lattice, at
   gradcheck's default tolerances);
4. the CPU backend as the reference for CUDA (GPU when present, and the
   CUDA source in host emulation).
"""

from __future__ import annotations

import os
import sys

import pytest

from conftest import PACKAGE_PARENT, emulated_cuda_module, host_cuda_backend

torch = pytest.importorskip("torch")
F = torch.nn.functional

import densecrf  # noqa: E402
from densecrf import nn as dnn  # noqa: E402
from densecrf.nn import DenseCRFLoss, NormalizedCutLoss  # noqa: E402
from reference import smooth_image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CUDA = densecrf.cuda_available() and torch.cuda.is_available()
LOSSES = [DenseCRFLoss, NormalizedCutLoss]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Tiny tensors: torch's intra-op threads only add barriers on the shared
    # 2-core machine (the native filter keeps its own threads).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------
# The dense reference
# --------------------------------------------------------------------------
class DenseBackend:
    """The exact Gaussian behind densecrf.nn's backend interface (float64, exact transpose)."""

    def __init__(self):
        self.lattices = 0
        self.filters = []  # transpose flags, in call order

    def lattice(self, features):
        self.lattices += 1
        return features.detach().to(torch.float64).clone()

    def filter(self, lattice, values, transpose):
        self.filters.append(bool(transpose))
        k = torch.exp(-0.5 * torch.cdist(lattice, lattice).pow(2))
        return ((k.t() if transpose else k) @ values.to(torch.float64)).to(values.dtype)


@pytest.fixture
def dense(monkeypatch):
    backend = DenseBackend()
    monkeypatch.setattr(dnn, "_backend", lambda device, threads=0: backend)
    return backend


def gaussian(features):
    f = features.to(torch.float64)
    return torch.exp(-0.5 * ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))


def positions(spatial, sxy):
    """[N, nd] pixel coordinates in (x, y, z) order over sigma_xy (one per axis, (x, y, z))."""
    axes = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in spatial], indexing="ij")
    cols = [a.reshape(-1) for a in reversed(axes)]
    return torch.stack([c / s for c, s in zip(cols, sxy, strict=True)], dim=1)


def rloss_dense(images, seg, rois, weight, srgb, sxy, scale, kind="crf"):
    """rloss's DenseCRFLoss (and the normalised cut on the same terms), written
    out with the exact Gaussian: the definition the module must reproduce."""
    nd = seg.dim() - 2
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[nd]
    images = images.to(torch.float64)
    seg = seg.to(torch.float64)
    rois = torch.ones(seg.shape[0], *seg.shape[2:], dtype=torch.float64) if rois is None else rois.to(torch.float64)
    if scale != 1:
        images = F.interpolate(images, scale_factor=scale)
        seg = F.interpolate(seg, scale_factor=scale, mode=mode, align_corners=False)
        rois = F.interpolate(rois.unsqueeze(1), scale_factor=scale).squeeze(1)
    sxy = [sxy] * nd if isinstance(sxy, (int, float)) else list(sxy)
    srgb = [srgb] * images.shape[1] if isinstance(srgb, (int, float)) else list(srgb)
    spatial = seg.shape[2:]
    b, k = seg.shape[:2]
    pos = positions(spatial, [s * scale for s in sxy])
    total = 0.0
    for i in range(b):
        col = images[i].reshape(images.shape[1], -1).t() / torch.tensor(srgb, dtype=torch.float64)
        kern = gaussian(torch.cat([pos, col], dim=1))
        r = rois[i].reshape(-1)
        s = seg[i].reshape(k, -1) * r  # [K, N]
        q = ((s @ kern) * s).sum(1)  # [K]: s_k^T K s_k
        if kind == "crf":
            total = total - q.sum()
        else:
            a = s @ (kern @ r)  # [K]: s_k^T K r
            ok = a > 0
            total = total + torch.where(ok, (a - q) / torch.where(ok, a, torch.ones_like(a)), torch.zeros_like(a)).sum()
    return weight * total / b


def case(b=2, k=3, spatial=(9, 11), c=3, seed=0, dtype=torch.float64):
    """Smooth images in 0..255, a smooth softmax, rois with a hole."""
    g = torch.Generator().manual_seed(seed)
    if len(spatial) == 2 and c == 3:
        imgs = [torch.from_numpy(smooth_image(*spatial, seed=seed + i)).permute(2, 0, 1) for i in range(b)]
        images = torch.stack(imgs).to(dtype) if b else torch.zeros(0, 3, *spatial, dtype=dtype)
    else:
        images = torch.rand(b, c, *spatial, generator=g, dtype=torch.float64).mul(255).to(dtype)
    coarse = torch.randn(b, k, *[max(s // 3, 1) for s in spatial], generator=g, dtype=torch.float64) * 2
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    logits = (
        F.interpolate(coarse, size=spatial, mode=mode, align_corners=False)
        if b and k
        else torch.zeros(b, k, *spatial, dtype=torch.float64)
    )
    seg = torch.softmax(logits, 1).to(dtype)
    rois = torch.ones(b, *spatial, dtype=dtype)
    if b and all(s >= 3 for s in spatial):
        rois[(slice(None),) + tuple(slice(0, s // 3) for s in spatial)] = 0
    return images, seg, rois


# --------------------------------------------------------------------------
# 1. The definition, exactly (brute-force Gaussian as the backend)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cls,kind", [(DenseCRFLoss, "crf"), (NormalizedCutLoss, "nc")])
@pytest.mark.parametrize(
    "spatial,c,scale",
    [
        ((9, 11), 3, 1.0),
        ((9, 11), 3, 0.5),
        ((12, 10), 1, 0.75),
        ((5, 6, 7), 2, 1.0),
        ((6, 8, 7), 2, 0.5),
        ((13,), 4, 0.6),
    ],
)
def test_matches_dense_definition(dense, cls, kind, spatial, c, scale):
    # float64 throughout with the exact Gaussian: only rounding separates the
    # module from the dense definition (sums of ~1e3 terms: 1e-12 relative).
    images, seg, rois = case(spatial=spatial, c=c, seed=len(spatial) + c)
    seg.requires_grad_(True)
    w, srgb, sxy = 0.7, 20.0, 3.0
    got = cls(w, srgb, sxy, scale)(images, seg, rois)
    (g_got,) = torch.autograd.grad(got, seg)
    want = rloss_dense(images, seg, rois, w, srgb, sxy, scale, kind)
    (g_want,) = torch.autograd.grad(want, seg)
    assert got.dtype == torch.float64 and got.dim() == 0
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


def test_per_axis_and_per_channel_bandwidths(dense):
    # sigma_xy in (x, y) order and one sigma_rgb per channel, as the dense
    # definition takes them; tolerances as above.
    images, seg, rois = case(spatial=(8, 12), seed=3)
    seg.requires_grad_(True)
    got = DenseCRFLoss(1.0, (10.0, 20.0, 40.0), (2.0, 5.0), 1.0)(images, seg, rois)
    want = rloss_dense(images, seg, rois, 1.0, (10.0, 20.0, 40.0), (2.0, 5.0), 1.0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    # the x bandwidth is the first: swapping them changes the value
    swapped = rloss_dense(images, seg, rois, 1.0, (10.0, 20.0, 40.0), (5.0, 2.0), 1.0)
    assert abs(float((swapped - want).detach())) > 1e-3 * abs(float(want.detach()))


def test_rloss_gradient_mode_is_twice_the_forward_filter(monkeypatch):
    # With an asymmetric stand-in for W (the dense Gaussian times a fixed
    # non-symmetric positive matrix), 'exact' must give r (W + W^T) s and
    # 'rloss' 2 r W s; float64, so 1e-10.
    class Skewed(DenseBackend):
        def filter(self, lattice, values, transpose):
            k = torch.exp(-0.5 * torch.cdist(lattice, lattice).pow(2))
            n = k.shape[0]
            k = k * (1.0 + 0.3 * torch.linspace(0, 1, n, dtype=torch.float64)[:, None])  # row scaling
            return ((k.t() if transpose else k) @ values.to(torch.float64)).to(values.dtype)

    images, seg, rois = case(b=1, spatial=(6, 7), seed=4)
    backend = Skewed()
    monkeypatch.setattr(dnn, "_backend", lambda device, threads=0: backend)
    grads = {}
    for mode in ("exact", "rloss"):
        s = seg.clone().requires_grad_(True)
        loss = DenseCRFLoss(1.0, 20.0, 3.0, 1.0, gradient=mode)(images, s, rois)
        (grads[mode],) = torch.autograd.grad(loss, s)
    pos = positions((6, 7), [3.0, 3.0])
    feat = torch.cat([pos, images[0].reshape(3, -1).t() / 20.0], dim=1)
    k = gaussian(feat) * (1.0 + 0.3 * torch.linspace(0, 1, 42, dtype=torch.float64)[:, None])
    r = rois[0].reshape(-1)
    s = seg[0].reshape(3, -1) * r
    exact = -(s @ (k + k.t())) * r  # [K, N]: rows of s times W^T + W
    rl = -2 * (s @ k.t()) * r
    torch.testing.assert_close(grads["exact"][0].reshape(3, -1), exact, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads["rloss"][0].reshape(3, -1), rl, rtol=1e-10, atol=1e-12)
    assert (exact - rl).norm() > 1e-3 * exact.norm()  # the stand-in is asymmetric enough to tell them apart


def test_one_lattice_per_image_and_step(dense):
    # forward + backward: one lattice build per image; the filters backward
    # needs run in forward, on the same lattice.
    images, seg, rois = case(b=3, spatial=(5, 6), seed=5)
    seg.requires_grad_(True)
    # (Images may run on parallel threads: counts, not order.)
    DenseCRFLoss(1.0, 20.0, 3.0)(images, seg, rois).backward()
    assert dense.lattices == 3
    assert sorted(dense.filters) == [False] * 3 + [True] * 3
    dense.lattices, dense.filters = 0, []
    NormalizedCutLoss(1.0, 20.0, 3.0, gradient="rloss")(images, seg, rois).backward()
    assert dense.lattices == 3 and dense.filters == [False] * 3
    dense.lattices, dense.filters = 0, []
    with torch.no_grad():
        DenseCRFLoss(1.0, 20.0, 3.0)(images, seg, rois)
    assert dense.lattices == 3 and dense.filters == [False] * 3  # no gradient wanted: no transposed filter


# --------------------------------------------------------------------------
# 2. The real lattice against the Gaussian it approximates
# --------------------------------------------------------------------------
def _smooth_case(h, w, k, seed):
    g = torch.Generator().manual_seed(seed)
    img = torch.from_numpy(smooth_image(h, w, seed)).permute(2, 0, 1)[None].double()
    images = torch.cat([img, img.flip(-1)])
    logits = torch.randn(2, k, h // 4 + 1, w // 4 + 1, generator=g, dtype=torch.float64) * 2
    seg = torch.softmax(F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False), 1)
    return images, seg, torch.ones(2, h, w, dtype=torch.float64)


@pytest.mark.parametrize("h,w,k,sxy,srgb", [(12, 14, 3, 3.0, 20.0), (16, 20, 4, 5.0, 15.0), (24, 30, 3, 100.0, 15.0)])
def test_lattice_approximates_the_gaussian_loss(h, w, k, sxy, srgb):
    # The lattice is Kraehenbuehl's (rloss's and pydensecrf's) unnormalised
    # filter: for these 5-D features (x, y, r, g, b) it returns 0.45-0.54 of
    # the exact Gaussian sum (the [1/2, 1, 1/2] blurs lose the tails' mass,
    # as test_lattice's 0.78-0.94 for d = 2; more so in 5-D), measured over
    # 3 seeds of these cases. Its shape is a few per cent off a Gaussian:
    # after dividing out that scale, the gradient is 7.6-10.2 % off the exact
    # Gaussian's in relative L2 (both gradient modes). Bounds: the scale in
    # [0.35, 0.65] and 0.15 for the shape; a kernel of half the bandwidths
    # lands outside them (checked below), so the test can fail.
    images, seg, rois = _smooth_case(h, w, k, seed=h)
    seg.requires_grad_(True)
    want = rloss_dense(images, seg, rois, 1.0, srgb, sxy, 1.0)
    (g_want,) = torch.autograd.grad(want, seg)
    for mode in ("exact", "rloss"):
        got = DenseCRFLoss(1.0, srgb, sxy, gradient=mode)(images, seg, rois)
        (g_got,) = torch.autograd.grad(got, seg)
        scale = float((got / want).detach())
        assert 0.35 < scale < 0.65, scale
        shape_err = float((g_got / scale - g_want).norm() / g_want.norm())
        assert shape_err < 0.15, (mode, shape_err)
    narrow = rloss_dense(images, seg, rois, 1.0, srgb / 2, sxy / 2, 1.0)
    (g_narrow,) = torch.autograd.grad(narrow, seg)
    scale_n = float((got / narrow).detach())
    assert not (0.35 < scale_n < 0.65 and float((g_got / scale_n - g_narrow).norm() / g_narrow.norm()) < 0.15)


# --------------------------------------------------------------------------
# 3. gradcheck on the real lattice
# --------------------------------------------------------------------------
@pytest.mark.parametrize("spatial,c", [((5, 6), 3), ((3, 4, 5), 2), ((9,), 1)])
def test_gradcheck_dense_crf_loss_on_the_lattice(spatial, c):
    # The lattice's W is built from the image alone, so the loss is exactly
    # quadratic in the segmentation. The inputs are float64, so the lattice
    # is the float64 one: W is applied in double with an exact transpose,
    # and gradcheck's defaults (eps 1e-6, atol 1e-5, rtol 1e-3) hold, while
    # a wrong adjoint (W^T s replaced by W s: a few per cent of entries ~1)
    # fails them. 2-D, a 3-D volume with 2 channels, a 1-D signal with 1 channel.
    images, seg, rois = case(b=2, k=2, spatial=spatial, c=c, seed=6)
    seg.requires_grad_(True)
    loss = DenseCRFLoss(1.0, 20.0, 3.0, 1.0)
    assert torch.autograd.gradcheck(lambda s: loss(images, s, rois), (seg,))
    # rloss's 2 W s is not the gradient of the lattice's loss: gradcheck tells.
    bad = DenseCRFLoss(1.0, 20.0, 3.0, 1.0, gradient="rloss")
    assert not torch.autograd.gradcheck(lambda s: bad(images, s, rois), (seg,), raise_exception=False)


def test_gradcheck_normalized_cut_on_the_lattice():
    # A ratio of quadratic and linear forms of the segmentation, on the
    # float64 lattice (float64 input): gradcheck's default tolerances.
    images, seg, rois = case(b=1, k=2, spatial=(4, 5), seed=7)
    seg.requires_grad_(True)
    loss = NormalizedCutLoss(1.0, 20.0, 3.0, 1.0)
    assert torch.autograd.gradcheck(lambda s: loss(images, s, rois), (seg,))


def test_gradient_is_the_adjoint_of_forward_on_the_lattice():
    # Directional derivative (exact for a quadratic) against <grad, v> on a
    # 24 x 30 image in float64 inputs (the float64 lattice): agreement to
    # float64 rounding of the two evaluations, ~1e-16 |L| / (2 eps) relative
    # to <grad, v> (measured 3e-15); bound 1e-10. (On the float32 lattice
    # this was float32 rounding, ~1e-6.)
    images, seg, rois = _smooth_case(24, 30, 3, seed=8)
    loss = DenseCRFLoss(1.0, 15.0, 10.0)
    v = torch.randn(seg.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = seg.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(images, s, rois), s)
    eps = 0.5
    with torch.no_grad():
        fd = (loss(images, seg + eps * v, rois) - loss(images, seg - eps * v, rois)) / (2 * eps)
    dot = float((g * v).sum())
    assert abs(float(fd) - dot) <= 1e-10 * abs(dot)


# --------------------------------------------------------------------------
# Masking, batches, degenerate sizes, dtypes, arguments
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cls", LOSSES)
def test_rois_mask(cls):
    # Outside the rois the segmentation does not matter and gets no gradient;
    # with rois the loss equals the loss of the masked segmentation without
    # them (DenseCRFLoss; the normalised cut's graph shrinks too, so for it
    # only the first two hold). Same lattice, same float32 filter: 1e-6.
    images, seg, rois = case(b=2, k=3, spatial=(10, 12), seed=9, dtype=torch.float32)
    mod = cls(1.0, 20.0, 4.0)
    s = seg.clone().requires_grad_(True)
    loss = mod(images, s, rois)
    (g,) = torch.autograd.grad(loss, s)
    outside = (rois == 0)[:, None].expand_as(g)
    assert outside.any() and float(g[outside].abs().max()) == 0.0
    assert float(g[~outside].abs().max()) > 0
    other = seg.clone()
    other[outside] = torch.rand(int(outside.sum()))
    torch.testing.assert_close(mod(images, other, rois), loss.detach(), rtol=1e-6, atol=0)
    if cls is DenseCRFLoss:
        torch.testing.assert_close(mod(images, seg * rois[:, None], None), loss.detach(), rtol=1e-6, atol=0)
    empty = mod(images, seg, torch.zeros_like(rois))
    assert float(empty) == 0.0


@pytest.mark.parametrize("cls", LOSSES)
def test_batch_elements_are_independent(cls):
    # L(batch) = (L(x1) + L(x2)) / 2 ... times 1 per element averaged; the
    # gradient of one element does not depend on the other. Each image is
    # filtered on its own lattice, so values agree to float32 summation
    # order (1e-6) and gradients exactly.
    images, seg, rois = case(b=2, k=3, spatial=(10, 12), seed=10, dtype=torch.float32)
    mod = cls(0.5, 20.0, 4.0)
    s = seg.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(mod(images, s, rois), s)
    parts = []
    for i in range(2):
        si = seg[i : i + 1].clone().requires_grad_(True)
        li = mod(images[i : i + 1], si, rois[i : i + 1])
        (gi,) = torch.autograd.grad(li, si)
        parts.append(li.detach())
        torch.testing.assert_close(g[i : i + 1] * 2, gi, rtol=1e-6, atol=1e-9)  # 1/B = 1/2 in the batch
    torch.testing.assert_close(mod(images, seg, rois), (parts[0] + parts[1]) / 2, rtol=1e-6, atol=0)
    changed = images.clone()
    changed[1] = 255 - changed[1]
    s2 = seg.clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(mod(changed, s2, rois), s2)
    torch.testing.assert_close(g2[0], g[0], rtol=0, atol=0)
    assert not torch.equal(g2[1], g[1])


@pytest.mark.parametrize("cls", LOSSES)
@pytest.mark.parametrize(
    "b,k,spatial", [(0, 3, (4, 5)), (2, 0, (4, 5)), (1, 1, (1, 1)), (2, 3, (1, 7)), (1, 2, (0, 4))]
)
def test_degenerate_sizes(cls, b, k, spatial):
    images = torch.rand(b, 3, *spatial) * 255
    seg = torch.softmax(torch.rand(b, k, *spatial), 1) if k else torch.zeros(b, 0, *spatial)
    seg.requires_grad_(True)
    loss = cls(1.0, 20.0, 3.0)(images, seg, None)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert seg.grad is not None and seg.grad.shape == seg.shape and torch.isfinite(seg.grad).all()
    if b == 0 or k == 0 or 0 in spatial:
        assert float(loss.detach()) == 0.0


def test_single_pixel_values():
    # One pixel, K = 2: the lattice's self weight w0 = W[0, 0] gives
    # L = -(s0^2 + s1^2) w0 and, with r = 1, NC = sum_k (1 - s_k^2 w0 / (s_k w0)) = 2 - 1 = 1.
    seg = torch.tensor([0.25, 0.75]).reshape(1, 2, 1, 1)
    img = torch.zeros(1, 3, 1, 1)
    w0 = float(dnn.gaussian_filter(torch.ones(1, 1), torch.zeros(1, 5)))
    torch.testing.assert_close(DenseCRFLoss(1.0, 20.0, 3.0)(img, seg), torch.tensor(-(0.0625 + 0.5625) * w0))
    torch.testing.assert_close(NormalizedCutLoss(1.0, 20.0, 3.0)(img, seg), torch.tensor(1.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", LOSSES)
def test_half_precision_under_autocast_computes_in_float32(cls, dtype):
    # The float16/bfloat16 segmentation is widened to float32 before anything
    # else: the result equals the float32 computation on the widened input
    # exactly (same operations, same order), is float32, and the gradient
    # comes back in the input's dtype.
    images, seg, rois = case(b=2, k=3, spatial=(9, 11), seed=11, dtype=torch.float32)
    half = seg.to(dtype).requires_grad_(True)
    mod = cls(1.0, 20.0, 4.0, 0.5)
    with torch.autocast("cpu", dtype=dtype):
        loss = mod(images, half, rois)
    loss.backward()
    ref_in = half.detach().float().requires_grad_(True)
    ref = mod(images, ref_in, rois)
    ref.backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    assert half.grad.dtype == dtype
    torch.testing.assert_close(half.grad, ref_in.grad.to(dtype), rtol=0, atol=0)


def test_inputs_are_not_modified_and_image_gets_no_gradient():
    images, seg, rois = case(b=2, k=3, spatial=(9, 11), seed=12, dtype=torch.float32)
    images.requires_grad_(True)
    rois.requires_grad_(True)
    seg.requires_grad_(True)
    copies = [t.detach().clone() for t in (images, seg, rois)]
    for cls in LOSSES:
        loss = cls(1.0, 20.0, 4.0, 0.5)(images, seg, rois)
        loss.backward()
    for t, c in zip((images, seg, rois), copies, strict=True):
        assert torch.equal(t.detach(), c)
    assert images.grad is None and rois.grad is None and seg.grad is not None


def test_scale_factor_shapes_follow_rloss(dense):
    # 0.5 on odd sizes: F.interpolate floors (9 x 11 -> 4 x 5), as rloss.
    images, seg, rois = case(b=1, k=2, spatial=(9, 11), seed=13)
    DenseCRFLoss(1.0, 20.0, 3.0, 0.5)(images, seg, rois)
    assert dense.lattices == 1  # ran; the value is checked in test_matches_dense_definition


def test_bad_arguments_raise_clear_errors():
    images, seg, rois = case(b=2, k=3, spatial=(6, 7), dtype=torch.float32)
    mod = DenseCRFLoss(1.0, 20.0, 3.0)
    with pytest.raises(ValueError, match=r"images must have shape \[2, C, 6, 7\].*got \(2, 3, 7, 6\)"):
        mod(images.transpose(2, 3), seg, rois)
    with pytest.raises(ValueError, match=r"rois must have shape \(2, 6, 7\).*got \(2, 1, 6, 7\)"):
        mod(images, seg, rois[:, None])
    with pytest.raises(ValueError, match="segmentations must be a tensor"):
        mod(images, seg[0, 0], rois)
    with pytest.raises(TypeError, match="floating point"):
        mod(images, (seg * 10).long(), rois)
    with pytest.raises(ValueError, match="sigma_rgb has 3 values but the input has 1 image channels"):
        DenseCRFLoss(1.0, (1.0, 2.0, 3.0), 3.0)(images[:, :1], seg, rois)
    with pytest.raises(ValueError, match="sigma_xy has 3 values but the input has 2 spatial axes"):
        DenseCRFLoss(1.0, 20.0, (1.0, 2.0, 3.0))(images, seg, rois)
    with pytest.raises(ValueError, match=r"scale_factor 0.1 shrinks the spatial shape \(6, 7\) to \(0, 0\)"):
        DenseCRFLoss(1.0, 20.0, 3.0, 0.1)(images, seg, rois)
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "3"):
        with pytest.raises(ValueError, match="sigma_xy must be a positive"):
            DenseCRFLoss(1.0, 20.0, bad)
    with pytest.raises(ValueError, match="weight must be a finite number"):
        DenseCRFLoss(float("nan"), 20.0, 3.0)
    with pytest.raises(ValueError, match="gradient must be one of"):
        DenseCRFLoss(1.0, 20.0, 3.0, gradient="symmetric")
    if not CUDA:
        with pytest.raises(RuntimeError, match="built without CUDA or sees no GPU"):
            dnn._backend(torch.device("cuda"))


def test_torch_compile_runs_with_a_graph_break():
    # A compiled training step around the loss: the lattice runs outside the
    # graph; same operations as eager, so the same bits.
    images, seg, rois = case(b=2, k=3, spatial=(9, 11), seed=14, dtype=torch.float32)
    logits = torch.log(seg).clone().requires_grad_(True)
    mod = DenseCRFLoss(1.0, 20.0, 4.0, 0.5)

    def step(x):
        loss = mod(images, torch.softmax(x, 1), rois)
        (g,) = torch.autograd.grad(loss, x)
        return loss.detach(), g

    want = step(logits)
    got = torch.compile(step, backend="eager")(logits)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


def test_import_densecrf_still_does_not_import_torch(tmp_path):
    import subprocess

    code = "import sys, densecrf; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": PACKAGE_PARENT},
    )
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------
# 4. CUDA: on the GPU, and the CUDA source in host emulation
# --------------------------------------------------------------------------
def _agree(cpu, other):
    """(loss relative difference, gradient relative L2 difference)."""
    (lc, gc), (lo, go) = cpu, other
    return abs(float(lo) - float(lc)) / abs(float(lc)), float((go.cpu() - gc).norm() / gc.norm())


def _run(cls, images, seg, rois, device, mode="exact"):
    s = seg.to(device).clone().requires_grad_(True)
    loss = cls(1.0, 15.0, 8.0, 0.5, gradient=mode)(images.to(device), s, rois.to(device))
    loss.backward()
    return loss.detach().cpu(), s.grad.cpu()


@pytest.mark.skipif(not CUDA, reason="no CUDA device, or densecrf built without CUDA")
@pytest.mark.parametrize("cls", LOSSES)
@pytest.mark.parametrize("mode", ["exact", "rloss"])
def test_cuda_matches_cpu(cls, mode):
    # Same lattice vertices on both devices; only float32 summation order
    # differs (relative ~1e-6 per filter) and a point on a simplex boundary
    # may fall on the other side after a rounding difference: 1e-5 for the
    # value, 1e-4 relative L2 for the gradient.
    images, seg, rois = case(b=2, k=4, spatial=(40, 52), seed=15, dtype=torch.float32)
    cpu = _run(cls, images, seg, rois, "cpu", mode)
    gpu = _run(cls, images, seg, rois, "cuda", mode)
    dl, dg = _agree(cpu, gpu)
    assert dl < 1e-5 and dg < 1e-4, (dl, dg)


@pytest.mark.parametrize("cls", LOSSES)
def test_cuda_source_in_host_emulation_matches_cpu(cls, monkeypatch):
    # The CUDA backend's build and filter (cuda/lattice_cuda.cu) run on the
    # host: the same tolerances as the GPU test (same vertices, float32 sums
    # in another order).
    mod = emulated_cuda_module()
    images, seg, rois = case(b=2, k=4, spatial=(40, 52), seed=16, dtype=torch.float32)
    cpu = _run(cls, images, seg, rois, "cpu")
    # densecrf.nn's CUDA backend over the emulated module: every CUDA native call goes
    # through densecrf.backends.cuda._C (as tests/test_cuda.py's backend fixture patches it);
    # host pointers stand in for device pointers.
    from densecrf.backends import cuda as cuda_backend

    monkeypatch.setattr(cuda_backend, "_C", mod)
    monkeypatch.setattr(cuda_backend, "_built_with_cuda", lambda: True)
    backend = host_cuda_backend()
    monkeypatch.setattr(dnn, "_backend", lambda device, threads=0: backend)
    emu = _run(cls, images, seg, rois, "cpu")
    dl, dg = _agree(cpu, emu)
    assert dl < 1e-5 and dg < 1e-4, (dl, dg)


def test_native_features_equal_the_torch_formula():
    # float32 host images take densecrf._C.grid_features; other inputs the
    # torch formula. Both divide float32 by float32: the same bits.
    from densecrf import losses

    g = torch.Generator().manual_seed(17)
    for spatial, c in [((7, 9), 3), ((3, 4, 5), 2)]:
        img = torch.rand(2, c, *spatial, generator=g) * 255
        sxy = [3.0 + j for j in range(len(spatial))]
        srgb = [10.0 + 5 * j for j in range(c)]
        native = losses._features(img, spatial, sxy, srgb)
        pos = dnn._grid_positions(spatial, img) / torch.tensor(sxy)
        for i in range(2):
            col = img[i].reshape(c, -1).t() / torch.tensor(srgb)
            assert torch.equal(native[i], torch.cat([pos, col], dim=1))


def test_value_is_summed_accurately():
    # The loss sums N K products: against the same lattice filter's output
    # summed in float64, the module's value must agree to float32 rounding of
    # the products and of the result (measured 1.3e-8); one float32
    # matrix-vector product over all 90,000 points was off by 1.6e-6 here
    # (and by 1.7e-4 at 512 x 512): the bound 1e-6 tells them apart.
    images, seg, rois = case(b=1, k=4, spatial=(300, 301), seed=18, dtype=torch.float32)
    sxy, srgb = 10.0, 15.0
    loss = DenseCRFLoss(1.0, srgb, sxy)(images, seg, rois)
    s = (seg[0] * rois[0]).reshape(4, -1).t().contiguous()  # [N, K]
    feats = torch.cat([dnn._grid_positions((300, 301), s) / sxy, images[0].reshape(3, -1).t() / srgb], dim=1)
    ws = dnn.gaussian_filter(s, feats)
    want = -(s.double() * ws.double()).sum()
    assert abs(float(loss) - float(want)) <= 1e-6 * abs(float(want)), abs(float(loss) / float(want) - 1)
