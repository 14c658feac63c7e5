"""densecrf.nn's public paths beyond CRF-as-RNN's forward: a lattice built once
and passed to gaussian_filter, and the errors of each entry point."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from densecrf import nn as dnn  # noqa: E402
from reference import gaussian_filter_exact  # noqa: E402


@pytest.mark.parametrize("mode", ["none", "before", "after", "symmetric"])
@pytest.mark.parametrize("feature_grad", [False, True])
def test_prebuilt_lattice_gives_the_same_bits(mode, feature_grad):
    # build_lattice + gaussian_filter(lattice=) skips the build; the result
    # and the gradients (values, and features where they require it) must be
    # those of the call that builds its own lattice, bit for bit: the same
    # deterministic build on the same features.
    g = torch.Generator().manual_seed(7)
    f = (torch.rand(300, 3, generator=g) * 4).requires_grad_(feature_grad)
    v = torch.rand(300, 4, generator=g, requires_grad=True)
    go = torch.randn(300, 4, generator=g)
    lat = dnn.build_lattice(f.detach())
    outs = []
    for lattice in (None, lat, lat):  # the handle serves any number of calls
        out = dnn.gaussian_filter(v, f, normalization=mode, lattice=lattice)
        grads = torch.autograd.grad(out, [v, f] if feature_grad else [v], go)
        outs.append((out.detach(), *grads))
    for other in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outs[0], other, strict=True))


def test_prebuilt_lattice_filters_like_the_exact_gaussian():
    # Not only self-consistent: the filter through a prebuilt lattice is the
    # Gaussian filter (normalised, on dense points, as test_lattice's check):
    # mean deviation from the exact filter <= 0.1 of the change the exact
    # filter makes (measured 4.7-6.6 % there).
    rng = np.random.default_rng(3)
    f = rng.random((300, 2)) * 2.0
    v = np.stack([np.sin(f.sum(1)), np.cos(f[:, 0])], axis=1)
    ft = torch.from_numpy(f).float()
    got = (
        dnn.gaussian_filter(torch.from_numpy(v).float(), ft, normalization="after", lattice=dnn.build_lattice(ft))
        .double()
        .numpy()
    )
    exact = gaussian_filter_exact(f, v) / gaussian_filter_exact(f, np.ones((300, 1)))
    assert np.abs(got - exact).mean() / np.abs(exact - v).mean() < 0.1


def test_build_lattice_accepts_float64_and_threads():
    g = torch.Generator().manual_seed(1)
    f = torch.rand(200, 2, generator=g, dtype=torch.float64) * 3
    v = torch.rand(200, 3, generator=g, dtype=torch.float64)
    one = dnn.gaussian_filter(v, f, lattice=dnn.build_lattice(f, threads=1))
    two = dnn.gaussian_filter(v, f, lattice=dnn.build_lattice(f, threads=2))
    assert one.dtype == torch.float64 and torch.equal(one, two)  # thread-count independent
    assert torch.equal(one, dnn.gaussian_filter(v, f))


@pytest.mark.parametrize(
    "features, exc, match",
    [
        (np.zeros((10, 2), np.float32), TypeError, "features must be a torch.Tensor, got ndarray"),
        (torch.zeros(10), ValueError, r"features must have shape \[N, d\] with 1 <= d <= 32, got \(10,\)"),
        (torch.zeros(10, 0), ValueError, r"got \(10, 0\)"),
        (torch.zeros(10, 33), ValueError, r"got \(10, 33\)"),
        (torch.zeros(10, 2, dtype=torch.float16), TypeError, "features must be float32 or float64, got torch.float16"),
        (torch.zeros(10, 2, dtype=torch.int32), TypeError, "got torch.int32"),
        (torch.full((10, 2), float("nan")), ValueError, "features must be finite"),
        (torch.zeros(10, 2, device="meta"), RuntimeError, "supports CPU .* got a tensor on meta"),
    ],
)
def test_build_lattice_errors(features, exc, match):
    with pytest.raises(exc, match=match):
        dnn.build_lattice(features)


def test_gaussian_filter_errors():
    f = torch.rand(100, 3)
    with pytest.raises(
        ValueError,
        match=r"normalization must be one of \['after', 'before', 'none', "
        r"'symmetric'\], got 'bogus'",
    ):
        dnn.gaussian_filter(torch.rand(100, 2), f, normalization="bogus")
    with pytest.raises(ValueError, match=r"values must be a tensor of shape \[N, C\] with N = 100, got \(99, 2\)"):
        dnn.gaussian_filter(torch.rand(99, 2), f)
    with pytest.raises(ValueError, match=r"with N = 100, got \(100,\)"):
        dnn.gaussian_filter(torch.rand(100), f)
    with pytest.raises(ValueError, match="with N = 100, got list"):
        dnn.gaussian_filter([1.0, 2.0], f)
    with pytest.raises(ValueError, match="values are on meta, features on cpu"):
        dnn.gaussian_filter(torch.rand(100, 2, device="meta"), f)
    with pytest.raises(TypeError, match=r"features must be a torch\.Tensor"):
        dnn.gaussian_filter(torch.rand(100, 2), f.numpy())
    # a lattice built for other points: refused (the native filter checks the point count)
    other = dnn.build_lattice(torch.rand(150, 3))
    with pytest.raises(ValueError, match=r"\(150, C\), got \(100, 2\)"):
        dnn.gaussian_filter(torch.rand(100, 2), f, lattice=other)
    # the inputs are left as they were
    v = torch.rand(100, 2)
    v0 = v.clone()
    dnn.gaussian_filter(v, f, normalization="symmetric")
    assert torch.equal(v, v0)


def test_crf_as_rnn_errors():
    with pytest.raises(ValueError, match="n_classes must be a positive integer, got 0"):
        dnn.CRFasRNN(0)
    with pytest.raises(ValueError, match="n_iter must be a non-negative integer, got -1"):
        dnn.CRFasRNN(3, -1)
    crf = dnn.CRFasRNN(3, 2)
    image = torch.rand(1, 3, 5, 5) * 255
    with pytest.raises(ValueError, match=r"logits must have 3 channels \(classes\), got shape \(1, 4, 5, 5\)"):
        crf(torch.rand(1, 4, 5, 5), image)
    with pytest.raises(TypeError, match=r"logits must be float32 or float64, got torch\.int32"):
        crf(torch.zeros(1, 3, 5, 5, dtype=torch.int32), image)
    with pytest.raises(ValueError, match=r"the bilateral term needs an image \[B, C, \*spatial\]"):
        crf(torch.rand(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"image must have shape \[1, C, 5, 5\], got \(1, 3, 5, 6\)"):
        crf(torch.rand(1, 3, 5, 5), torch.rand(1, 3, 5, 6))
    with pytest.raises(ValueError, match="image is on meta, logits on cpu"):
        crf(torch.rand(1, 3, 5, 5), torch.rand(1, 3, 5, 5, device="meta"))


def test_cuda_tensors_without_cuda_are_refused_in_one_place(monkeypatch):
    # a CUDA tensor on a build or machine without CUDA: one RuntimeError that says what to do
    from densecrf.backends import cuda as cuda_backend

    monkeypatch.setattr(cuda_backend, "cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="built without CUDA or sees no GPU"):
        dnn._backend(torch.device("cuda"))
