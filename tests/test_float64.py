"""float64: the lattice, the filter and mean field in double when asked.

References: a plain-Python permutohedral lattice written from Adams et al.
(2010) with dictionaries (the same approximation, float64, every step
visible), the exact O(N^2) Gaussian, and reference.mean_field_numpy around
the float64 lattice. float32 stays the default and keeps its bits (the golden
tests check those; here: dtype=None and dtype=float32 give the same array).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import densecrf
from conftest import emulated_cuda_module, host_cuda_backend
from densecrf._native import _C
from reference import gaussian_filter_exact, label_probs, mean_field_numpy, normalized_filter, smooth_image


# --------------------------------------------------------------------------
# A reference lattice, written for reading: every vertex a tuple of its d+1
# coordinates, every value in a dict.
# --------------------------------------------------------------------------
def reference_lattice_filter(features, values, reverse=False):
    """slice(blur(splat(values))) of the permutohedral lattice of ``features``
    ``[N, d]`` (Adams, Baek and Davis 2010, with Kraehenbuehl's scale and
    slice factors), float64; ``reverse`` blurs the axes in reverse order."""
    f = np.asarray(features, np.float64)
    v = np.asarray(values, np.float64)
    n, d = f.shape
    # elevation scale (p. 5) times the inverse std of the blur (p. 6)
    scale = np.array([math.sqrt(2.0 / 3.0) * (d + 1) / math.sqrt((i + 1) * (i + 2)) for i in range(d)])
    points = []  # per point: [(vertex, weight)] over the d+1 vertices of its simplex
    for i in range(n):
        cf = f[i] * scale
        # E f: coordinate 0 is the sum of all, coordinate j >= 1 the sum from
        # j on minus j times feature j-1 (the rows of E, p. 5).
        el = np.array([cf.sum()] + [cf[j:].sum() - j * cf[j - 1] for j in range(1, d + 1)])
        nearest = np.rint(el / (d + 1))
        rem0 = nearest * (d + 1)
        resid = el - rem0
        order = np.argsort(-resid, kind="stable")  # rank 0: the largest residual
        rank = np.empty(d + 1, int)
        rank[order] = np.arange(d + 1)
        rank += int(nearest.sum())
        rem0[rank < 0] += d + 1
        rem0[rank > d] -= d + 1
        rank = np.where(rank < 0, rank + d + 1, np.where(rank > d, rank - d - 1, rank))
        b = np.zeros(d + 2)
        for c in range(d + 1):
            t = (el[c] - rem0[c]) / (d + 1)
            b[d - rank[c]] += t
            b[d - rank[c] + 1] -= t
        b[0] += 1.0 + b[d + 1]
        verts = []
        for r in range(d + 1):
            key = tuple(int(rem0[c] + (r if rank[c] <= d - r else r - (d + 1))) for c in range(d + 1))
            verts.append((key, b[r]))
        points.append(verts)
    vals: dict = {}
    for i, verts in enumerate(points):
        for key, w in verts:
            vals[key] = vals.get(key, 0.0) + w * v[i]
    zero = np.zeros(v.shape[1])
    for j in reversed(range(d + 1)) if reverse else range(d + 1):
        step = np.full(d + 1, -1)
        step[j] = d  # the lattice vector (d+1) e_j - 1 (p. 6)
        new = {}
        for key, x in vals.items():
            up = tuple(np.add(key, step))
            down = tuple(np.subtract(key, step))
            new[key] = x + 0.5 * (vals.get(up, zero) + vals.get(down, zero))
        vals = new
    alpha = 1.0 / (1.0 + 2.0**-d)
    return np.array([alpha * sum(w * vals[key] for key, w in verts) for verts in points])


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_float64_lattice_is_the_lattice_in_double(d):
    # The float64 lattice against the reference above: the same lattice
    # points, weights, blur and slice, both in double; only the order of
    # additions differs, so the two agree to float64 rounding (each output a
    # sum of ~(d+1)^2 2^(d+1) O(1) terms: ~1e-14 relative); 1e-12 of the
    # output's scale. The float32 lattice is off by its own rounding (~1e-7
    # relative), far outside that bound: float64 is the closer of the two.
    rng = np.random.default_rng(10 + d)
    n = 60
    f = rng.random((n, d)) * 3.0
    v = rng.normal(size=(n, 3))
    lat64 = _C.Lattice64(f, 0)
    lat32 = _C.Lattice(f.astype(np.float32), 0)
    assert lat64.n_vertices == lat32.n_vertices  # the same lattice points
    for reverse in (False, True):
        want = reference_lattice_filter(f, v, reverse)
        scale = np.abs(want).max()
        err64 = np.abs(lat64.filter(v, reverse, 0) - want).max() / scale
        err32 = np.abs(lat32.filter(v.astype(np.float32), reverse, 0) - want).max() / scale
        assert err64 < 1e-12, err64
        assert err32 > 1e-9, err32  # the check above would catch a float32 computation
        # the float32 lattice is the same approximation: within its rounding (1e-5 of the scale)
        assert err32 < 1e-5, err32


def test_float64_filter_approximates_exact_gaussian():
    # Against the exact Gaussian both dtypes are off by the lattice's own
    # approximation (the normalised filter's mean deviation is ~5 % of the
    # smoothing, see test_lattice), which float64 does not change: the
    # bound is test_lattice's 0.1, and the two dtypes' errors agree to 1e-5
    # (float32 rounding of the same approximation).
    rng = np.random.default_rng(3)
    n = 400
    f = rng.random((n, 3)) * 2.0
    v = np.sin(f @ np.array([1.0, 0.5, -0.7]))[:, None] + 0.1 * rng.normal(size=(n, 1))
    exact = gaussian_filter_exact(f, v) / gaussian_filter_exact(f, np.ones((n, 1)))
    lat64 = densecrf.PermutohedralLattice(f, dtype=np.float64)
    lat32 = densecrf.PermutohedralLattice(f)
    a64 = lat64.filter(v) / lat64.filter(np.ones((n, 1)))
    a32 = lat32.filter(v) / lat32.filter(np.ones((n, 1)))
    assert a64.dtype == np.float64 and a32.dtype == np.float32
    rel64 = np.abs(a64 - exact).mean() / np.abs(exact - v).mean()
    rel32 = np.abs(a32 - exact).mean() / np.abs(exact - v).mean()
    assert rel64 < 0.1, rel64
    assert abs(rel64 - rel32) < 1e-5, (rel64, rel32)


def test_float64_transpose_is_exact_adjoint():
    # <K x, y> = <x, K^T y>: the transpose is the same splat and slice with
    # the blur's symmetric steps in reverse order, so only float64 rounding
    # separates the two sides (~1e-16 per operation over ~1e4 terms):
    # 1e-12 of sum |K x| |y|. float32 misses it by ~1e-7.
    rng = np.random.default_rng(4)
    f = rng.random((500, 3)) * 4
    x = rng.normal(size=(500, 4))
    y = rng.normal(size=(500, 4))
    lat = densecrf.PermutohedralLattice(f, dtype=np.float64)
    kx = lat.filter(x)
    lhs, rhs = float(np.sum(kx * y)), float(np.sum(x * lat.filter(y, transpose=True)))
    assert abs(lhs - rhs) <= 1e-12 * float(np.sum(np.abs(kx) * np.abs(y)))
    # and the forward filter is not symmetric, so the check sees the order
    assert np.abs(lat.filter(y) - lat.filter(y, transpose=True)).max() > 1e-6


# --------------------------------------------------------------------------
# DenseCRF, refine and refine_batch with dtype=float64
# --------------------------------------------------------------------------
COMPATS = {
    "potts": 3.0,
    "diagonal": np.array([-2.0, -1.0, -3.0]),
    "matrix": np.array([[-2.0, 0.5, 0.3], [0.5, -1.0, 0.2], [0.3, 0.2, -3.0]]),
}


@pytest.mark.parametrize("compat", list(COMPATS))
@pytest.mark.parametrize("mode", ["none", "before", "after", "symmetric"])
def test_densecrf_float64_matches_numpy_mean_field(compat, mode):
    # The plain numpy loop (reference.mean_field_numpy) around the float64
    # lattice's filter with reference.normalized_filter: the same float64
    # numbers in another order, so 1e-12 in probability (5 iterations of
    # O(1) logits). The float32 DenseCRF is further off (float32 rounding).
    rng = np.random.default_rng(5)
    n, k = 120, 3
    f = rng.random((n, 2)) * 3
    u = -np.log(np.clip(rng.dirichlet(np.ones(k), size=n), 1e-5, 1))
    norm = {"none": 0, "before": 1, "after": 2, "symmetric": 3}[mode]
    # Unnormalised, the filter of Q is ~20x larger here: scale the
    # compatibility down so that Q does not saturate to 0/1 (where float32
    # and float64 would agree trivially).
    c = COMPATS[compat] * (0.05 if mode == "none" else 1.0)
    crf = densecrf.DenseCRF(n, k, dtype=np.float64)
    crf.set_unary(u)
    crf.add_pairwise(f, c, normalization=mode)
    q = crf.inference(5)
    assert q.dtype == np.float64
    lat = _C.Lattice64(f, 0)
    filt = normalized_filter(lambda v: lat.filter(np.ascontiguousarray(v), False, 0), n, norm)
    ref = mean_field_numpy(u, [(filt, c)], 5)
    assert np.abs(q - ref).max() < 1e-12
    crf32 = densecrf.DenseCRF(n, k)
    crf32.set_unary(u)
    crf32.add_pairwise(f, c, normalization=mode)
    assert np.abs(crf32.inference(5) - ref).max() > 1e-10  # float32 cannot meet the bound above
    # step by step and the messages, in float64 too
    q1 = crf.step_inference(crf.start_inference())
    assert q1.dtype == np.float64
    assert np.abs(q1 - mean_field_numpy(u, [(filt, c)], 1)).max() < 1e-12
    assert crf.pairwise_messages(q1)[0].dtype == np.float64


def test_refine_float64_agrees_with_float32():
    # A smooth image with edges and noisy, blocky probabilities (reference.py):
    # float64 refine computes the same CRF without float32 rounding, so its
    # marginals differ from float32's by rounding amplified through 5
    # iterations (measured 8e-6 on random input; bound 1e-4), and MAP labels
    # differ only where two labels tie within that (bound: 99.9 % agree).
    h, w, k = 48, 64, 4
    img = smooth_image(h, w, seed=1)
    p = label_probs(h, w, k, seed=1)
    q32 = densecrf.refine(img, p)
    q64 = densecrf.refine(img, p, dtype=np.float64)
    assert q32.dtype == np.float32 and q64.dtype == np.float64 and q64.shape == p.shape
    assert np.abs(q64 - q32).max() < 1e-4
    assert (q64.argmax(-1) == q32.argmax(-1)).mean() >= 0.999
    # the CRF did something: labels moved from the input's argmax
    assert (q64.argmax(-1) != p.argmax(-1)).mean() > 0.01
    # float64 probabilities sum to one to float64 rounding (K terms): 1e-12
    assert np.abs(q64.sum(-1) - 1).max() < 1e-12
    # the same as DenseCRF2D in float64 with the same terms (same code path, same bits)
    crf = densecrf.DenseCRF2D(w, h, k, dtype=np.float64)
    crf.set_unary(-np.log(np.maximum(p.astype(np.float64), 1e-5)).reshape(-1, k))
    crf.add_pairwise_gaussian(3.0, 3.0)
    crf.add_pairwise_bilateral(80.0, 13.0, img, 10.0)
    assert np.array_equal(crf.inference(5).reshape(h, w, k), q64)


def test_refine_batch_float64_is_refine_per_image():
    h, w, k = 20, 24, 3
    imgs = np.stack([smooth_image(h, w, seed=s) for s in (2, 3)])
    probs = np.stack([label_probs(h, w, k, seed=s) for s in (2, 3)])
    out = densecrf.refine_batch(imgs, probs, dtype=np.float64)
    assert out.dtype == np.float64
    for i in range(2):
        assert np.array_equal(out[i], densecrf.refine(imgs[i], probs[i], dtype=np.float64))
    # channels first, lists
    outs = densecrf.refine_batch(
        [im.transpose(2, 0, 1) for im in imgs],
        [p.transpose(2, 0, 1) for p in probs],
        channels_first=True,
        dtype="float64",
    )
    for i in range(2):
        assert np.array_equal(outs[i], out[i].transpose(2, 0, 1))


def test_float32_default_is_unchanged():
    # dtype=None and dtype=float32 are the float32 path, bit for bit (the
    # golden tests pin those bits against recorded outputs).
    h, w, k = 30, 40, 3
    img = smooth_image(h, w, seed=4)
    p = label_probs(h, w, k, seed=4)
    q = densecrf.refine(img, p)
    assert q.dtype == np.float32
    assert np.array_equal(q, densecrf.refine(img, p, dtype=np.float32))
    assert np.array_equal(q, densecrf.refine(img, p, dtype="float32"))
    # a float64 input does not switch the computation: only dtype= does
    assert np.array_equal(q, densecrf.refine(img.astype(np.float64), p.astype(np.float64)))


@pytest.mark.parametrize("bad", ["int8", np.int32, "float16", np.complex128, "double-ish", 3, object])
def test_bad_dtype_raises_naming_it(bad):
    img = smooth_image(8, 9, seed=0)
    p = label_probs(8, 9, 2, seed=0)
    for call in (
        lambda: densecrf.refine(img, p, dtype=bad),
        lambda: densecrf.refine_batch(img[None], p[None], dtype=bad),
        lambda: densecrf.DenseCRF(4, 2, dtype=bad),
        lambda: densecrf.DenseCRF2D(3, 2, 2, dtype=bad),
        lambda: densecrf.PermutohedralLattice(np.zeros((3, 2)), dtype=bad),
    ):
        with pytest.raises(ValueError, match=r"dtype must be numpy\.float32 or numpy\.float64") as info:
            call()
        assert repr(bad) in str(info.value)


def test_float64_lattice_bad_input():
    with pytest.raises(ValueError, match="key range"):
        densecrf.PermutohedralLattice(np.array([[0.0, 1e12], [1.0, 2.0]]), dtype=np.float64)
    with pytest.raises(ValueError, match="finite"):
        densecrf.PermutohedralLattice(np.array([[0.0, np.nan]]), dtype=np.float64)
    with pytest.raises(ValueError, match="shape"):
        _C.Lattice64(np.zeros((3, 0)), 0)
    lat = _C.Lattice64(np.zeros((3, 2)), 0)
    with pytest.raises(ValueError, match=r"values must have shape \(3, C\)"):
        lat.filter(np.zeros((4, 1)), False, 0)
    # degenerate sizes: N = 0, N = 1, d = 1
    assert _C.Lattice64(np.zeros((0, 2)), 0).filter(np.zeros((0, 3)), False, 0).shape == (0, 3)
    one = densecrf.PermutohedralLattice(np.array([[0.3]]), dtype=np.float64)
    # a lone point keeps part of its own value (its weights squared, times alpha)
    out = one.filter(np.ones(1))
    assert out.shape == (1,) and out.dtype == np.float64 and 0 < out[0] <= 1


# --------------------------------------------------------------------------
# torch: float64 tensors take the float64 lattice
# --------------------------------------------------------------------------
@pytest.fixture
def torch_one_thread():
    """torch with one intra-op thread for the duration of a test: these tensors
    are tiny, and on a busy machine torch's thread pool costs milliseconds per
    op (a 3 x 80 softmax measured 8 ms with 2 threads, 13 us with 1)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


def _crfasrnn_case(torch, device="cpu"):
    """CRFasRNN(K = 3, 2 iterations).double() with a non-Potts compatibility,
    an image 2 x 3 x 8 x 10 and logits needing a gradient, on ``device``:
    (fn(logits, *params), logits, params, module, parameter names, image),
    fn the layer as a function of the logits and its parameters."""
    import densecrf.nn as dnn

    g = torch.Generator().manual_seed(21)
    k = 3
    mod = dnn.CRFasRNN(k, 2).double().to(device)
    with torch.no_grad():
        mod.compat.add_(0.3 * torch.randn(k, k, generator=g, dtype=torch.float64).to(device))
    image = (torch.rand(2, 3, 8, 10, generator=g, dtype=torch.float64) * 255).to(device)
    logits = torch.randn(2, k, 8, 10, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    names = [n for n, _ in mod.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in mod.parameters()]

    def fn(lg, *ps):
        return torch.func.functional_call(mod, dict(zip(names, ps, strict=True)), (lg, image))

    return fn, logits, params, mod, names, image


def test_gradcheck_crfasrnn_double_default_tolerances(torch_one_thread):
    # CRFasRNN(K = 3, 2 iterations).double() on 2 x 3 x 8 x 10 with the
    # default weights (3 and 5) and a non-Potts compatibility, with respect
    # to the logits, the compatibility and both kernel weights; bandwidths
    # fixed. The float64 lattice makes each filter a fixed linear map
    # computed in double with an exact transpose, so gradcheck's defaults
    # (eps 1e-6, atol 1e-5, rtol 1e-3) hold; with the float32 lattice the
    # 1e-7 rounding divided by eps = 1e-6 alone is ~0.1 (see the control
    # below).
    torch = torch_one_thread
    fn, logits, params, _, names, _ = _crfasrnn_case(torch)
    assert names == ["compat", "weights.spatial", "weights.bilateral"]

    assert fn(logits, *params).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, (logits, *params))


@pytest.mark.parametrize("mode", ["none", "before", "after", "symmetric"])
def test_gradcheck_gaussian_filter_values_float64_lattice(torch_one_thread, mode):
    # The real lattice in float64, gradient with respect to the values
    # (features fixed), gradcheck's default tolerances.
    torch = torch_one_thread
    import densecrf.nn as dnn

    g = torch.Generator().manual_seed(22)
    f = torch.rand(40, 3, generator=g, dtype=torch.float64) * 3
    v = torch.rand(40, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: dnn.gaussian_filter(v, f, normalization=mode), (v,))


def test_gradcheck_float32_lattice_control(torch_one_thread, monkeypatch):
    # The control: the same check with the lattice forced back to float32
    # (what a float64 input got before) fails at the default tolerances, so
    # the checks above do test the float64 path.
    torch = torch_one_thread
    import densecrf.nn as dnn

    def lattice32(self, features):
        return self.native.lattice(features.detach().float().contiguous().numpy())

    monkeypatch.setattr(dnn._CpuBackend, "lattice", lattice32)
    g = torch.Generator().manual_seed(22)
    f = torch.rand(40, 3, generator=g, dtype=torch.float64) * 3
    v = torch.rand(40, 2, generator=g, dtype=torch.float64, requires_grad=True)
    fn = lambda v: dnn.gaussian_filter(v, f, normalization="symmetric")  # noqa: E731
    assert not torch.autograd.gradcheck(fn, (v,), raise_exception=False)


def test_torch_follows_the_tensor_dtype(torch_one_thread):
    torch = torch_one_thread
    import densecrf.nn as dnn

    g = torch.Generator().manual_seed(23)
    mod = dnn.CRFasRNN(3, 3)
    image = torch.rand(1, 3, 9, 11, generator=g) * 255
    logits = torch.randn(1, 3, 9, 11, generator=g)
    out32 = mod(logits, image)
    out64 = mod(logits.double(), image.double())
    assert out32.dtype == torch.float32 and out64.dtype == torch.float64
    # a float32 layer given float64 input computes as its .double() copy does
    assert torch.equal(out64, mod.double()(logits.double(), image.double()))
    # the two dtypes compute the same CRF: float32 rounding apart (O(1)
    # logits, 3 iterations; 1e-4)
    assert (out64 - out32.double()).abs().max() < 1e-4
    # the float64 filter is the float64 lattice's, bit for bit
    f = torch.rand(30, 2, generator=g, dtype=torch.float64) * 2
    v = torch.rand(30, 3, generator=g, dtype=torch.float64)
    want = _C.Lattice64(f.numpy(), 0).filter(v.numpy(), False, 0)
    assert np.array_equal(dnn.gaussian_filter(v, f).numpy(), want)


def test_gradcheck_crfasrnn_double_on_cuda(torch_one_thread):
    # The CUDA backend's float64 lattice (the double instantiation of its
    # kernels; its filters are checked against the CPU's float64 lattice in
    # tests/test_cuda.py, on the GPU and emulated): the same gradcheck as
    # test_gradcheck_crfasrnn_double_default_tolerances, on CUDA tensors.
    # Needs a GPU (torch CUDA tensors cannot be emulated).
    torch = torch_one_thread
    if not (densecrf.cuda_available() and torch.cuda.is_available()):
        pytest.skip("no CUDA device, or densecrf built without CUDA (densecrf.cuda_available() is False)")
    fn, logits, params, mod, names, image = _crfasrnn_case(torch, torch.device("cuda"))
    out = fn(logits, *params)
    assert out.dtype == torch.float64 and out.is_cuda
    assert torch.autograd.gradcheck(fn, (logits, *params))
    # the same layer on the CPU: the same CRF in double (the lattices agree to
    # ulps, tests/test_cuda.py); 1e-10 is far above that, far below float32's 1e-5
    ref_mod = copy.deepcopy(mod).cpu()
    cpu_params = dict(zip(names, [p.detach().cpu() for p in params], strict=True))
    want = torch.func.functional_call(ref_mod, cpu_params, (logits.detach().cpu(), image.cpu()))
    assert (out.detach().cpu() - want).abs().max() < 1e-10


def test_gradcheck_crfasrnn_double_through_the_emulated_cuda_backend(torch_one_thread, monkeypatch):
    # densecrf.nn's CUDA backend object (its dtype choice, the float64
    # lattice _C.CudaLattice64 and its filter) over the host emulation of the
    # CUDA source, on CPU tensors whose host pointers stand in for device
    # ones (as tests/test_losses.py runs the loss): the gradcheck of
    # test_gradcheck_crfasrnn_double_default_tolerances, and the same output
    # as the CPU backend's float64 lattice to double rounding.
    torch = torch_one_thread
    import densecrf.nn as dnn
    from densecrf.backends import cuda as cuda_backend

    mod = emulated_cuda_module()
    fn, logits, params, _, _, _ = _crfasrnn_case(torch)

    class Seen:  # the emulated module, noting which of its names are used
        def __init__(self, m):
            self.m, self.names = m, set()

        def __getattr__(self, name):
            self.names.add(name)
            return getattr(self.m, name)

    want = fn(logits, *params).detach()  # the CPU backend's float64 lattice
    seen = Seen(mod)
    monkeypatch.setattr(cuda_backend, "_C", seen)
    monkeypatch.setattr(cuda_backend, "_built_with_cuda", lambda: True)
    host_cuda = host_cuda_backend()
    monkeypatch.setattr(dnn, "_backend", lambda device, threads=0: host_cuda)
    got = fn(logits, *params)
    assert got.dtype == torch.float64
    assert "CudaLattice64" in seen.names and "CudaLattice" not in seen.names
    # the two float64 lattices agree to ulps (tests/test_cuda.py); 1e-12 on O(1) values
    assert (got.detach() - want).abs().max() < 1e-12
    assert torch.autograd.gradcheck(fn, (logits, *params))


def test_torch_cuda_backend_picks_the_lattice_by_dtype(torch_one_thread, monkeypatch):
    # No GPU needed: the backend object's choice of place and native class,
    # with the place replaced by a recorder.
    torch = torch_one_thread
    import densecrf.nn as dnn
    from densecrf import arrays

    seen = []

    def place_of(items, device, memory, dtype=np.float32):
        seen.append(np.dtype(dtype))
        raise RuntimeError("stop")

    monkeypatch.setattr(arrays, "place_of", place_of)
    backend = dnn._CudaBackend(torch.device("cuda"))
    for dt in (torch.float64, torch.float32):
        with pytest.raises(RuntimeError, match="stop"):
            backend.lattice(torch.zeros(4, 2, dtype=dt))
    assert seen == [np.dtype(np.float64), np.dtype(np.float32)]
