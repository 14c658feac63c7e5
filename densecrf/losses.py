r"""Regularised losses for weakly-supervised segmentation on the lattice filter.

Tang et al. train segmentation networks from scribbles, points or boxes with
partial cross-entropy on the labelled pixels plus a regulariser on the whole
softmax output :math:`S` that rewards segmentations following image edges:

* :class:`DenseCRFLoss` (Tang et al., ECCV 2018, "On Regularized Losses for
  Weakly-supervised CNN Segmentation"): the relaxed dense-CRF (Potts) energy,

  .. math:: L = -\frac{w}{B} \sum_{b=1}^{B} \sum_{k=1}^{K} S_{bk}^\top W_b S_{bk}

* :class:`NormalizedCutLoss` (Tang et al., CVPR 2018, "Normalized Cut Loss for
  Weakly-supervised CNN Segmentation"): the relaxed normalised cut,

  .. math:: L = \frac{w}{B} \sum_{b} \sum_{k} \frac{S_{bk}^\top W_b (r_b - S_{bk})}{S_{bk}^\top W_b r_b}

with :math:`W_b` the bilateral Gaussian affinity of image :math:`b` over
pixel positions divided by ``sigma_xy`` and colours divided by ``sigma_rgb``,
computed by the permutohedral lattice, and :math:`r_b` its region of
interest (``S`` is masked by it first). Both use one lattice per image and
step, built from the image only, and filter all K channels at once.

This module imports torch; ``import densecrf`` does not import it. The
classes are re-exported by :mod:`densecrf.nn`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["DenseCRFLoss", "NormalizedCutLoss"]

_GRADIENTS = ("exact", "rloss")
_INTERP = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _nn():
    # densecrf.nn re-exports this module's classes at its end, so it is
    # imported here at call time, not at import time (no import cycle).
    from . import nn as dnn

    return dnn


def _positive(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {x!r}")
    return float(x)


def _positive_seq(x, name: str) -> tuple[float, ...] | float:
    """A positive number, or a non-empty sequence of them (one per axis or channel)."""
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return _positive(x, name)
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence) or len(x) == 0:
        raise ValueError(f"{name} must be a positive number or a non-empty sequence of them, got {x!r}")
    return tuple(_positive(v, f"{name}[{i}]") for i, v in enumerate(x))


def _per(x, n: int, name: str, what: str) -> list[float]:
    if isinstance(x, float):
        return [x] * n
    if len(x) != n:
        raise ValueError(f"{name} has {len(x)} values but the input has {n} {what}")
    return list(x)


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


class _PairwiseForms(torch.autograd.Function):
    r"""Per image and class, the quadratic form :math:`q_{bk} = s_{bk}^\top W_b s_{bk}`
    and (``assoc``) the linear form :math:`a_{bk} = s_{bk}^\top W_b r_b` of the
    masked segmentation :math:`s_{bk} = r_b \odot S_{bk}`.

    ``apply(seg [B, K, N], r [B, N] or None (all ones), features (B tensors
    [N, d]), backend, gradient, assoc, need, workers) -> (q [B, K], a [B, K]
    or None)`` (``need``: compute what backward needs; ``workers``: images
    at once on Python threads).
    Only ``seg`` gets a gradient:

    .. math:: \frac{\partial q_{bk}}{\partial S_{bk}} = r_b \odot (W_b + W_b^\top) s_{bk},
              \qquad \frac{\partial a_{bk}}{\partial S_{bk}} = r_b \odot W_b r_b

    (:math:`W^\top` is the transposed lattice filter, the exact adjoint), or
    with ``gradient = 'rloss'`` :math:`2 r_b \odot W_b s_{bk}` in place of
    the first (rloss's, which takes the kernel as symmetric; one filter less).

    Each image's lattice is built once; when ``seg`` needs a gradient the
    filters backward needs run here, while the lattice is at hand, and only
    their sum ``[B, K, N]`` (plus ``W r`` ``[B, N]``) is kept: the lattices
    are freed when forward returns.
    """

    @staticmethod
    def forward(ctx, seg, r, features, backend, gradient, assoc, need, workers):
        ctx.set_materialize_grads(False)
        # need: a gradient will be asked for (grad mode is off inside forward,
        # and needs_input_grad ignores torch.no_grad() around apply).
        # workers: images filtered at once on Python threads (the native
        # calls release the GIL; a busy native pool runs a call inline).
        b, k, n = seg.shape
        c = k + 1 if assoc else k

        def one(i):
            # [N, K (+1)] points x channels: [r S | r], one transposing copy.
            x = seg.new_empty(n, c)
            s = x[:, :k]
            s.copy_(seg[i].t())
            if r is not None:
                s.mul_(r[i][:, None])
            if assoc:
                x[:, k] = 1 if r is None else r[i]
            lat = backend.lattice(features[i])
            out = backend.filter(lat, x, False).to(seg.dtype)  # [N, C]: W [s | r]
            ws = out[:, :k]
            qi = _column_sums(s * ws)  # [K]: s_k . W s_k
            ai = _column_sums(s * out[:, k:]) if assoc else None  # [K]: s_k . W r
            if need and gradient == "exact":
                ws += backend.filter(lat, x, True)[:, :k].to(seg.dtype)  # + W^T s
            return qi, ai, (ws if need else None), (out[:, k] if need and assoc else None)

        res = _map(one, b, workers)
        q = torch.stack([t[0] for t in res]).to(seg.dtype)
        a = torch.stack([t[1] for t in res]).to(seg.dtype) if assoc else None
        ctx.factor = 1.0 if gradient == "exact" else 2.0
        ctx.workers = workers
        # Intermediates, not inputs or outputs: kept on ctx, in the filter's
        # layout [N, K] (no copy into one tensor).
        ctx.dq = [t[2] for t in res] if need else []  # (W + W^T) s ('exact') or W s ('rloss')
        ctx.wr = [t[3] for t in res] if need and assoc else []  # W r
        ctx.save_for_backward(r)
        return q, a

    @staticmethod
    @once_differentiable
    def backward(ctx, g_q, g_a):
        none = (None,) * 7
        if not ctx.needs_input_grad[0] or (g_q is None and g_a is None) or not ctx.dq:
            return (None,) + none
        (r,) = ctx.saved_tensors
        dq, wr = ctx.dq, ctx.wr
        b, (n, k) = len(dq), dq[0].shape
        grad = dq[0].new_empty(b, k, n)  # [B, K, N], the segmentation's layout

        def one(i):
            if g_q is not None:
                grad[i].copy_(dq[i].t())  # one transposing copy, then in-place passes
                grad[i].mul_((g_q[i] * ctx.factor)[:, None])
            else:
                grad[i].zero_()
            if g_a is not None and wr:
                grad[i].addr_(g_a[i], wr[i])  # + g_a[k] (W r)[n]
            if r is not None:
                grad[i].mul_(r[i][None, :])

        _map(one, b, ctx.workers)
        return (grad,) + none


def _column_sums(m, length: int = 256):
    """[K] float64: sum_n m[n, k] for a contiguous m [N, K].

    The first ``length * R`` points, viewed as ``[length, R K]``, go through
    one matrix-vector product (``R K`` float32 dot products of ``length``
    terms), whose ``R`` partial sums per column are added in float64; the
    remaining points are summed in float64. Relative error ~1e-7 at any N,
    where one float32 matrix-vector product over all N points loses 1e-4 at
    512 x 512, and several times faster than torch's sum over the first axis
    of a [N, ~20] tensor.
    """
    n, k = m.shape
    rows = n // length
    out = m[rows * length :].sum(0, dtype=torch.float64)
    if rows:
        part = m[: rows * length].reshape(length, rows * k).t().mv(m.new_ones(length))  # [R K]
        out += part.reshape(rows, k).sum(0, dtype=torch.float64)
    return out


def _map(fn, n: int, workers: int) -> list:
    """[fn(0), ..., fn(n - 1)], on up to ``workers`` threads."""
    if workers <= 1 or n <= 1:
        return [fn(i) for i in range(n)]
    grad_mode = torch.is_grad_enabled()  # thread-local: forward and backward run without a graph

    def call(i):
        with torch.set_grad_enabled(grad_mode):
            return fn(i)

    with ThreadPoolExecutor(min(workers, n)) as pool:
        return list(pool.map(call, range(n)))


class _RegularizedLoss(nn.Module):
    """Shared argument handling, down-scaling and features of the two losses."""

    _assoc = False

    def __init__(
        self,
        weight: float,
        sigma_rgb,
        sigma_xy,
        scale_factor=1.0,
        *,
        gradient: str = "exact",
        threads: int | None = None,
    ):
        super().__init__()
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            raise ValueError(f"weight must be a finite number, got {weight!r}")
        self.weight = float(weight)
        self.sigma_rgb = _positive_seq(sigma_rgb, "sigma_rgb")
        self.sigma_xy = _positive_seq(sigma_xy, "sigma_xy")
        self.scale_factor = _positive_seq(scale_factor, "scale_factor")
        if gradient not in _GRADIENTS:
            raise ValueError(f"gradient must be one of {_GRADIENTS}, got {gradient!r}")
        self.gradient = gradient
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise ValueError(f"threads must be a non-negative integer or None, got {threads!r}")
        self.threads = int(threads or 0)

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, "
            f"scale_factor={self.scale_factor}, gradient={self.gradient!r}"
        )

    # -- checks ---------------------------------------------------------------
    def _check(self, images, segmentations, rois):
        if not isinstance(segmentations, torch.Tensor) or not 3 <= segmentations.dim() <= 5:
            raise ValueError(
                f"segmentations must be a tensor [B, K, *spatial] with 1 to 3 spatial axes, got {_shape(segmentations)}"
            )
        if not segmentations.is_floating_point():
            raise TypeError(f"segmentations must be floating point (softmax probabilities), got {segmentations.dtype}")
        b, spatial = segmentations.shape[0], tuple(segmentations.shape[2:])
        want = f"[{b}, C, {', '.join(map(str, spatial))}]"
        if (
            not isinstance(images, torch.Tensor)
            or images.dim() != segmentations.dim()
            or images.shape[0] != b
            or tuple(images.shape[2:]) != spatial
        ):
            raise ValueError(
                f"images must have shape {want} to match segmentations "
                f"{tuple(segmentations.shape)}, got {_shape(images)}"
            )
        if images.shape[1] < 1:
            raise ValueError(f"images must have at least one channel, got shape {tuple(images.shape)}")
        if images.is_complex() or images.dtype == torch.bool:
            raise TypeError(f"images must be real numbers, got {images.dtype}")
        if images.device != segmentations.device:
            raise ValueError(f"images are on {images.device}, segmentations on {segmentations.device}")
        if rois is not None:
            if not isinstance(rois, torch.Tensor) or tuple(rois.shape) != (b, *spatial):
                raise ValueError(
                    f"rois must have shape {(b, *spatial)} (segmentations without the class axis), got {_shape(rois)}"
                )
            if rois.is_complex():
                raise TypeError(f"rois must be real numbers, got {rois.dtype}")
            if rois.device != segmentations.device:
                raise ValueError(f"rois are on {rois.device}, segmentations on {segmentations.device}")
        nd = len(spatial)
        factors = _per(self.scale_factor, nd, "scale_factor", "spatial axes")
        sxy = _per(self.sigma_xy, nd, "sigma_xy", "spatial axes")
        srgb = _per(self.sigma_rgb, images.shape[1], "sigma_rgb", "image channels")
        return factors, sxy, srgb

    # -- the common part --------------------------------------------------------
    def _forms(self, images, segmentations, rois):
        """(q [B, K], a [B, K] or None, the computation dtype): the forms of
        _PairwiseForms on the scaled, masked segmentation."""
        factors, sxy, srgb = self._check(images, segmentations, rois)
        _nn()._backend(segmentations.device, self.threads)  # fails early on an unsupported device
        dt = torch.float64 if segmentations.dtype == torch.float64 else torch.float32
        with torch.autocast(segmentations.device.type, enabled=False):
            seg = segmentations.to(dt)  # float16 / bfloat16 are computed in float32
            img = images.detach().to(dt)  # features in dt too (float64: the float64 lattice)
            roi = rois.detach().to(dt) if rois is not None else None
            if seg.numel() == 0:  # no image, no class or no pixel: [B, K] zeros with a (zero) gradient path
                zero = seg.sum(dim=tuple(range(2, seg.dim())))
                return zero, (zero.detach() if self._assoc else None), dt
            if any(f != 1.0 for f in factors):
                small = [math.floor(sz * f) for sz, f in zip(segmentations.shape[2:], factors, strict=True)]
                if any(sz == 0 for sz in small):
                    raise ValueError(
                        f"scale_factor {self.scale_factor} shrinks the spatial shape "
                        f"{tuple(segmentations.shape[2:])} to {tuple(small)}"
                    )
                # rloss: images and rois nearest, segmentations (bi/tri)linear
                # without aligned corners, the spatial bandwidth scaled along.
                nd = len(factors)
                sf = factors[0] if len(set(factors)) == 1 else tuple(factors)
                img = F.interpolate(img, scale_factor=sf)
                seg = F.interpolate(seg, scale_factor=sf, mode=_INTERP[nd], align_corners=False)
                if roi is not None:
                    roi = F.interpolate(roi.unsqueeze(1), scale_factor=sf).squeeze(1)
                # sigma_xy is in (x, y, z) order, factors in axis order
                sxy = [s * f for s, f in zip(sxy, reversed(factors), strict=True)]
            b, k = seg.shape[:2]
            spatial = tuple(seg.shape[2:])
            n = math.prod(spatial)
            seg = seg.reshape(b, k, n)
            roi = roi.reshape(b, n) if roi is not None else None
            q, a = _pairwise(seg, roi, img, spatial, sxy, srgb, self.threads, self.gradient, self._assoc)
        return q, a, dt


def _features(img, spatial, sxy, srgb, threads=0):
    """Per image [N, nd + C] features in img's dtype: positions / sigma_xy in
    (x, y, z) order, then the channels / sigma_rgb (rloss's order: x, y, r,
    g, b). float32 host images take the native one-pass builder (the same
    float32 quotients)."""
    b, c = img.shape[:2]
    n = math.prod(spatial)
    col = img.reshape(b, c, n).transpose(1, 2)  # [B, N, C]
    if img.device.type == "cpu" and img.dtype == torch.float32:
        from ._native import _C

        return [
            torch.from_numpy(
                _C.grid_features(list(spatial), list(sxy), col[i].contiguous().numpy(), list(srgb), threads)
            )
            for i in range(b)
        ]
    pos = _nn()._grid_positions(spatial, img) / torch.tensor(sxy, dtype=img.dtype, device=img.device)  # [N, nd]
    col = col / torch.tensor(srgb, dtype=img.dtype, device=img.device)
    return [torch.cat([pos, col[i]], dim=1) for i in range(b)]


@torch.compiler.disable
def _pairwise(seg, roi, img, spatial, sxy, srgb, threads, gradient, assoc):
    # The lattice runs outside any compiled graph (a graph break here, as CRFasRNN has).
    dnn = _nn()
    device = seg.device
    workers = 1
    if device.type == "cpu" and seg.shape[0] > 1:
        # Host: the images of the batch on parallel threads, the native
        # threads shared out between them (rloss does this with OpenMP).
        from ._native import get_num_threads

        total = threads or get_num_threads()
        workers = max(1, min(seg.shape[0], total))
        threads = max(1, total // workers)
    backend = dnn._backend(device, threads)
    feats = _features(img, spatial, sxy, srgb, threads)
    # rois of ones (rloss's "no padding") mask nothing: skip the passes (on
    # the host; on a GPU the check would wait for the stream).
    r = roi.contiguous() if roi is not None else None
    if r is not None and device.type == "cpu" and bool((r == 1).all()):
        r = None
    need = torch.is_grad_enabled() and seg.requires_grad
    return _PairwiseForms.apply(seg.contiguous(), r, feats, backend, gradient, assoc, need, workers)


class DenseCRFLoss(_RegularizedLoss):
    r"""The dense-CRF regularised loss of Tang et al. (ECCV 2018), rloss's
    ``DenseCRFLoss`` on the permutohedral lattice, on CPU and CUDA tensors.

    .. math:: L = -\frac{w}{B} \sum_{b=1}^{B} \sum_{k=1}^{K} (r_b S_{bk})^\top W_b\, (r_b S_{bk}),
              \qquad (W_b)_{ij} \approx \exp\Bigl(-\frac{\lVert p_i - p_j \rVert^2}{2 \sigma_{xy}^2}
              - \frac{\lVert I_i - I_j \rVert^2}{2 \sigma_{rgb}^2}\Bigr)

    over the pixels :math:`i, j` of image :math:`b` (self pairs included), with
    :math:`S` the segmentation (softmax) scaled by ``scale_factor`` and
    :math:`r_b` the region of interest. :math:`W_b` is the lattice filter,
    the same approximation (and scale) as rloss's ``bilateralfilter`` and
    pydensecrf.

    Same arguments and same down-scaling as rloss: images and ``rois``
    nearest, segmentations bilinear (linear, trilinear) with
    ``align_corners=False`` through ``F.interpolate(scale_factor=...)``, the
    spatial bandwidth multiplied by ``scale_factor`` (so that it stays in
    the pixels of the input), the colour bandwidth unchanged.

    ``forward(images [B, C, *spatial], segmentations [B, K, *spatial],
    rois [B, *spatial] or None)`` returns a 0-d tensor (rloss: shape ``[1]``;
    ``.item()``, ``+`` and ``.backward()`` work the same). Gradients flow to
    ``segmentations`` only (not to the images or the rois), through the
    masking and the interpolation.

    Beyond rloss: CPU and CUDA tensors (the caller's stream); any number of
    image channels and 1 to 3 spatial axes (``[B, C, D, H, W]`` volumes);
    float16 / bfloat16 segmentations (autocast) computed in float32, float64
    computed in float64 throughout, the lattice included (on the CPU and on
    CUDA, the double instantiation of its kernels); a step compiled with
    ``torch.compile`` runs with a graph break around the filter. On the
    host the images of a batch are filtered on parallel threads.

    Args:
        weight: :math:`w` (rloss trains with 2e-9 at sigma_xy 100 on PASCAL).
        sigma_rgb: colour bandwidth, one number or one per image channel.
        sigma_xy: spatial bandwidth in input pixels, one number or one per
            spatial axis in (x, y, z) order.
        scale_factor: down-scaling before the loss (rloss: 0.5 in training),
            one number or one per spatial axis in the tensor's axis order.
        gradient: ``'exact'`` (default): the exact gradient of :math:`L`,
            :math:`-\frac{w}{B} r (W + W^\top)(r S)`, through the transposed
            lattice filter; ``'rloss'``: rloss's :math:`-\frac{2w}{B} r W (r S)`,
            which treats the lattice filter as symmetric (it is not: on a
            512 x 512 image the two differ by a few percent) and costs one
            filter less.
        threads: native threads per filter (default: all cores).
    """

    def forward(
        self, images: torch.Tensor, segmentations: torch.Tensor, rois: torch.Tensor | None = None
    ) -> torch.Tensor:
        q, _, _ = self._forms(images, segmentations, rois)
        b = q.shape[0]
        if b == 0:
            return q.sum()
        return q.sum() * (-self.weight / b)


class NormalizedCutLoss(_RegularizedLoss):
    r"""The normalised-cut regularised loss of Tang et al. (CVPR 2018) on the
    same filter as :class:`DenseCRFLoss`:

    .. math:: L = \frac{w}{B} \sum_{b} \sum_{k:\ a_{bk} > 0} \frac{(r_b S_{bk})^\top W_b (r_b - r_b S_{bk})}{a_{bk}},
              \qquad a_{bk} = (r_b S_{bk})^\top W_b\, r_b

    the cut between each soft segment and the rest of the region of interest
    over the segment's association with it; the graph is restricted to the
    region of interest (pixels outside it carry no segment and no degree).
    A class with no mass in the region (:math:`a_{bk} = 0`) adds nothing.
    It costs one filter channel more than :class:`DenseCRFLoss` (the degree
    :math:`W r`). Arguments, down-scaling and gradients are as for
    :class:`DenseCRFLoss`; ``weight`` is positive for a loss to minimise.
    """

    _assoc = True

    def forward(
        self, images: torch.Tensor, segmentations: torch.Tensor, rois: torch.Tensor | None = None
    ) -> torch.Tensor:
        q, a, _ = self._forms(images, segmentations, rois)
        b = q.shape[0]
        if b == 0:
            return q.sum()
        ok = a > 0
        ratio = torch.where(ok, q / torch.where(ok, a, torch.ones_like(a)), torch.zeros_like(q))
        # cut / assoc = (a - q) / a = 1 - q / a for every class present
        return (ok.to(q.dtype) - ratio).sum() * (self.weight / b)
