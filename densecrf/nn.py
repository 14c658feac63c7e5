r"""Differentiable dense CRFs for PyTorch: the lattice filter as an autograd
Function and CRF-as-RNN (Zheng et al., ICCV 2015) as an ``nn.Module``.

Nothing here links against libtorch: tensors are handed to densecrf's CPU
and CUDA backends (:mod:`densecrf.backends`) as host arrays or as device
pointers on torch's current stream (:mod:`densecrf.arrays`); autograd lives
in Python. ``import densecrf`` never
imports torch: use ``import densecrf.nn``.

The Gaussian filter of values :math:`v` ``[N, C]`` over features :math:`f`
``[N, d]`` (already divided by the bandwidths) is

.. math:: (K v)_i = \sum_j k_{ij} v_j, \qquad k_{ij} \approx c_d \exp(-\tfrac12 \lVert f_i - f_j \rVert^2)

computed approximately by the permutohedral lattice (``c_d`` is the lattice's
overall scale, cancelled by any normalisation). Gradients:

* values: :math:`\partial L / \partial v = K^\top g`, the same lattice
  filter with its blur axes reversed (exact adjoint of the forward filter);
* features: with :math:`L = \sum_{ij} g_i \cdot k_{ij} v_j`,
  :math:`\partial L / \partial f_i = -g_i \cdot [f_i (K v)_i - (K (f v))_i]
  - v_i \cdot [f_i (K^\top g)_i - (K^\top (f g))_i]` where :math:`f v` is
  every feature column times every value channel: one extra forward and one
  extra transposed filter, each over ``C (d + 1)`` channels. This is the
  gradient of the Gaussian the lattice approximates (the lattice itself is
  piecewise linear in the features, so its own derivative is useless).
  Normalisations (which depend on the features through :math:`D = \mathrm{diag}(K 1)`)
  and bandwidths (:math:`f = x / \sigma`) are chained by autograd.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - only without torch
    raise ImportError("densecrf.nn needs PyTorch: pip install 'densecrf[torch]' (or torch itself)") from exc

from . import arrays
from .backends import cuda as _cuda
from .backends.cpu import CpuBackend
from .backends.cpu64 import is_lattice64, lattice64
from .backends.problem import image_range_factor, warn_image_units

__all__ = ["CRFasRNN", "LatticeFilter", "build_lattice", "gaussian_filter"]

_NORMALIZATIONS = {"none": 0, "before": 1, "after": 2, "symmetric": 3}


# --------------------------------------------------------------------------
# Device dispatch: the one place here that knows which densecrf backend
# (densecrf.backends) serves a tensor; the tensors go through
# densecrf.arrays. A torch backend has lattice(features [N, d]) -> handle
# and filter(handle, values [N, C], transpose) -> [N, C] in the values'
# dtype; optionally normalized(handle, mode) -> handle (normalisation folded
# into the native filter) and mean_field(...) (fused inference without a
# graph). A CUDA backend needs only the first two to run everything.
# --------------------------------------------------------------------------
class _CpuBackend:
    """Torch CPU tensors over :class:`densecrf.backends.CpuBackend`, in the
    features' dtype: float32 features get the float32 lattice, float64
    features the float64 one (``_C.Lattice64``, whose filters compute in
    float64); results in the values' dtype."""

    def __init__(self, threads: int = 0):
        self.threads = threads
        self.native = CpuBackend(threads or None)

    def lattice(self, features: torch.Tensor):
        if features.dtype == torch.float64:
            return lattice64(arrays.torch_host64(features), self.threads)
        return self.native.lattice(arrays.torch_host(features))

    def filter(self, lattice, values: torch.Tensor, transpose: bool) -> torch.Tensor:
        if values.shape[0] == 0 or values.shape[1] == 0:
            return torch.zeros_like(values)
        if is_lattice64(lattice):
            out = lattice.filter(arrays.torch_host64(values), bool(transpose), self.threads)
            return torch.from_numpy(out).to(values.dtype)
        out = torch.from_numpy(self.native.filter(lattice, arrays.torch_host(values), transpose))
        return out.to(values.dtype)

    def mean_field(self, logits, lattices, weights, compat, n_iter: int, normalization: int):
        """Inference without a graph: the fused native mean field (float32).

        logits [N, K]; one lattice per term; weights [] or [K] and compat
        [K, K] fold into one matrix compatibility per term, compat diag(w_t).
        Runs n_iter - 1 fused iterations, then the last messages, to return
        logits rather than Q. Returns [N, K] in the logits' dtype.
        """
        u = arrays.torch_host(-logits)
        mu = compat.detach().to(torch.float32)
        terms = []
        for lat, w in zip(lattices, weights, strict=True):
            w = w.detach().to(torch.float32)
            mat = mu * w.reshape(1, -1) if w.dim() else mu * w  # [K, K]
            spec = (2, mat.contiguous().numpy().ravel(), normalization, None)
            terms.append(self.native.term(None, spec, u.shape[1], lattice=lat)[0])
        q = self.native.mean_field(u, terms, n_iter - 1, check_finite=False)
        out = -u
        for t in terms:
            out -= self.native.message(t, q)
        return torch.from_numpy(out).to(logits.dtype)

    def normalized(self, lattice, normalization: int):
        """A handle whose filter() applies the normalised kernel, the scales
        folded into the splat and slice weights (DenseCRF's own pairwise term);
        None for a float64 lattice (its normalisation runs in torch)."""
        if is_lattice64(lattice):
            return None
        return self.native.normalized(lattice, normalization)


class _CudaBackend:
    """Torch CUDA tensors over :class:`densecrf.backends.CudaBackend`, on torch's
    current stream at each call, in the features' dtype as the CPU backend:
    float32 features get the float32 lattice, float64 features the float64
    one (``_C.CudaLattice64``, whose filters compute in double); results in
    the values' dtype. The fused no-graph mean field is not offered here
    (inference without a graph runs the same filters)."""

    def __init__(self, device: torch.device):
        self.device = device

    @staticmethod
    def _place(t: torch.Tensor, f64: bool) -> arrays.Place:
        # _backend() checked that the backend can run; the stream is read per call
        return arrays.place_of([t], None, _cuda.DeviceArray, np.float64 if f64 else np.float32)

    def lattice(self, features: torch.Tensor):
        f64 = features.dtype == torch.float64
        place = self._place(features, f64)
        f = place.put(features, "features")
        # f stays alive while the build may still read it on the stream
        return _cuda.CudaBackend(place).lattice(f), f.obj, f64

    def filter(self, lattice, values: torch.Tensor, transpose: bool) -> torch.Tensor:
        if values.shape[0] == 0 or values.shape[1] == 0:
            return torch.zeros_like(values)
        place = self._place(values, lattice[2])
        out = _cuda.CudaBackend(place).filter(lattice[0], place.put(values, "values"), transpose)
        return out.obj.to(values.dtype)


def _backend(device: torch.device, threads: int = 0):
    """Returns the torch backend for tensors on ``device``."""
    if device.type == "cpu":
        return _CpuBackend(threads)
    if device.type == "cuda":
        if not _cuda.cuda_available():
            raise RuntimeError(
                "densecrf cannot run on these CUDA tensors: it was built without CUDA or sees no GPU "
                "(densecrf.cuda_available() is False); move the tensors to the CPU or install a CUDA build"
            )
        return _CudaBackend(device)
    raise RuntimeError(f"densecrf.nn supports CPU (and CUDA) tensors, got a tensor on {device}")


def build_lattice(features: torch.Tensor, *, threads: int | None = None):
    """Builds the lattice of ``features`` ``[N, d]`` (bandwidths already applied).

    Returns an opaque handle to pass to :class:`LatticeFilter` and
    :func:`gaussian_filter`, reusable for any number of filters of values on
    the same points (and their backward passes). Not differentiable itself.
    """
    _check_features(features)
    return _backend(features.device, threads or 0).lattice(features)


# --------------------------------------------------------------------------
# The autograd Function
# --------------------------------------------------------------------------
class LatticeFilter(torch.autograd.Function):
    r"""Unnormalised lattice Gaussian filter ``out = K values`` with gradients
    for ``values`` and ``features``.

    ``LatticeFilter.apply(values [N, C], features [N, d], lattice, backend)``
    where ``lattice`` was built from ``features`` (detached) by the same
    backend; the Function does not rebuild it. Prefer
    :func:`gaussian_filter`, which checks its arguments.

    Saved for backward: ``values`` and ``features`` (references, no copy)
    only when the features need a gradient, and the lattice handle.
    """

    @staticmethod
    def forward(ctx, values, features, lattice, backend):
        ctx.set_materialize_grads(False)
        ctx.lattice = lattice
        ctx.backend = backend
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(values, features)
        return backend.filter(lattice, values, False)

    @staticmethod
    def backward(ctx, grad_out):
        if grad_out is None:
            return None, None, None, None
        need_v, need_f = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        backend, lat = ctx.backend, ctx.lattice
        grad_out = grad_out.contiguous()
        grad_values = grad_features = None
        if need_f:
            values, features = ctx.saved_tensors
            n, c = values.shape
            d = features.shape[1]
            f = features.detach()
            v = values.detach()
            # [N, d, C] feature-weighted channels; one filter call each way.
            fv = (f[:, :, None] * v[:, None, :]).reshape(n, d * c)
            fg = (f[:, :, None] * grad_out[:, None, :]).reshape(n, d * c)
            fwd = backend.filter(lat, torch.cat([v, fv], dim=1), False)  # [K v | K (f v)]
            adj = backend.filter(lat, torch.cat([grad_out, fg], dim=1), True)  # [K^T g | K^T (f g)]
            kv, kfv = fwd[:, :c], fwd[:, c:].reshape(n, d, c)
            ktg, ktfg = adj[:, :c], adj[:, c:].reshape(n, d, c)
            grad_features = -(f * (grad_out * kv).sum(1, keepdim=True) - (grad_out[:, None, :] * kfv).sum(2))
            grad_features -= f * (v * ktg).sum(1, keepdim=True) - (v[:, None, :] * ktfg).sum(2)
            if need_v:
                grad_values = ktg
        elif need_v:
            grad_values = backend.filter(lat, grad_out, True)
        return grad_values, grad_features, None, None


class _FixedFilter(torch.autograd.Function):
    """A normalised filter whose features need no gradient: a fixed linear map.

    ``_FixedFilter.apply(values [N, C], handle, backend)``: forward
    ``handle.filter(values)``, backward the transposed filter. Saves nothing
    but the handle.
    """

    @staticmethod
    def forward(ctx, values, handle, backend):
        ctx.set_materialize_grads(False)
        ctx.handle = handle
        ctx.backend = backend
        return backend.filter(handle, values, False)

    @staticmethod
    def backward(ctx, grad_out):
        if grad_out is None or not ctx.needs_input_grad[0]:
            return None, None, None
        return ctx.backend.filter(ctx.handle, grad_out.contiguous(), True), None, None


def _check_features(features):
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2 or not 1 <= features.shape[1] <= 32:
        raise ValueError(f"features must have shape [N, d] with 1 <= d <= 32, got {tuple(features.shape)}")
    if features.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"features must be float32 or float64, got {features.dtype}")


class _Kernel:
    """One pairwise kernel on one point set: lattice, normalisation scale, filter.

    Built once per forward; ``apply`` is reused by every iteration and by
    backward (autograd keeps the handle alive through LatticeFilter's ctx).
    """

    def __init__(self, features, normalization: int, backend, lattice=None):
        self.features = features
        self.backend = backend
        self.lattice = lattice if lattice is not None else backend.lattice(features)
        self.mode = normalization
        self.scale = None
        self.fixed = None
        if not features.requires_grad and hasattr(backend, "normalized"):
            # No feature gradient: let the native term fold the normalisation
            # in (None where it does not: a float64 lattice).
            self.fixed = backend.normalized(self.lattice, normalization)
        if self.fixed is None and normalization:
            ones = features.new_ones(features.shape[0], 1)
            norm = LatticeFilter.apply(ones, features, self.lattice, backend)  # [N, 1] = K 1
            norm = norm + 1e-20  # Kraehenbuehl's guard against 1/0
            self.scale = norm.rsqrt() if normalization == 3 else norm.reciprocal()

    def apply(self, values):
        """[N, C] -> [N, C]: K, K D^-1, D^-1 K or D^-1/2 K D^-1/2 times values."""
        if self.fixed is not None:
            return _FixedFilter.apply(values, self.fixed, self.backend)
        pre = self.scale if self.mode in (1, 3) else None
        post = self.scale if self.mode in (2, 3) else None
        v = values * pre if pre is not None else values
        out = LatticeFilter.apply(v, self.features, self.lattice, self.backend)
        return out * post if post is not None else out


def _norm_arg(normalization) -> int:
    if isinstance(normalization, str) and normalization.lower() in _NORMALIZATIONS:
        return _NORMALIZATIONS[normalization.lower()]
    raise ValueError(f"normalization must be one of {sorted(_NORMALIZATIONS)}, got {normalization!r}")


def gaussian_filter(
    values, features, *, normalization: str = "none", lattice=None, threads: int | None = None
) -> torch.Tensor:
    r"""Differentiable Gaussian filter of ``values`` ``[N, C]`` over ``features`` ``[N, d]``.

    ``normalization``: 'none' (:math:`K v`), 'before' (:math:`K D^{-1} v`),
    'after' (:math:`D^{-1} K v`) or 'symmetric' (:math:`D^{-1/2} K D^{-1/2} v`),
    :math:`D = \mathrm{diag}(K 1)`, as :class:`densecrf.DenseCRF`. Gradients
    flow to ``values`` and ``features`` (hence to bandwidths the features were
    divided by). ``lattice``: a handle from :func:`build_lattice` for these
    features, to skip the build. float32 or float64: the lattice computes in
    the features' dtype (on the CPU and on CUDA); deterministic.
    """
    _check_features(features)
    if not isinstance(values, torch.Tensor) or values.dim() != 2 or values.shape[0] != features.shape[0]:
        raise ValueError(
            f"values must be a tensor of shape [N, C] with N = {features.shape[0]}, got "
            f"{tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__}"
        )
    if values.device != features.device:
        raise ValueError(f"values are on {values.device}, features on {features.device}")
    backend = _backend(features.device, threads or 0)
    return _Kernel(features, _norm_arg(normalization), backend, lattice).apply(values.to(features.dtype))


# --------------------------------------------------------------------------
# CRF-as-RNN
# --------------------------------------------------------------------------
def _grid_positions(spatial: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """[prod(spatial), n] pixel coordinates in (x, y, z, ...) order (last axis first)."""
    axes = [torch.arange(s, dtype=like.dtype, device=like.device) for s in spatial]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in reversed(grids)], dim=1)


def _softmax_labels(z):
    """softmax over the labels of z [N, K]. torch's CPU softmax along a short
    contiguous last axis (K ~ 10-30) is ~8x slower than along the long axis
    of the transposed view; the result is a (transposed) view."""
    return torch.softmax(z.t(), dim=0).t()


def _mean_field_grad(logits, kernels, weights, compat, n_iter, recompute):
    """Differentiable unrolled mean field on one point set; returns the last logits [N, K]."""

    def step(q):
        msg = None
        for kern, w in zip(kernels, weights, strict=True):
            m = kern.apply(q) * w  # [N, K]: w_t * Kbar_t Q
            msg = m if msg is None else msg + m
        return logits - msg @ compat.t()  # logits_l -= sum_l' compat[l, l'] msg_l'

    out = logits
    q = _softmax_labels(logits)
    for it in range(n_iter):
        if recompute:
            out = torch.utils.checkpoint.checkpoint(step, q, use_reentrant=False)
        else:
            out = step(q)
        if it + 1 < n_iter:
            q = _softmax_labels(out)
    return out


def _positive(x, name):
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {x!r}")
    return float(x)


class CRFasRNN(nn.Module):
    r"""CRF-as-RNN (Zheng et al. 2015): T unrolled mean-field iterations as a layer.

    Each iteration computes, per point :math:`i`,

    .. math:: z_i \leftarrow a_i - \mu \sum_t w_t \odot (\bar K_t Q)_i, \qquad Q_i = \operatorname{softmax}(z_i)

    from the input logits :math:`a` (unary :math:`U = -a`, :math:`Q^0 =
    \operatorname{softmax}(a)`), with :math:`\bar K_t` the lattice Gaussian
    filter of term t under ``normalization``, :math:`w_t` its kernel weight
    (a scalar, or one per class with ``per_class_weights``) and :math:`\mu`
    the ``[K, K]`` compatibility (an energy). :math:`\mu` is initialised to
    Potts, :math:`-I`, so that the layer equals :class:`densecrf.DenseCRF`
    with Potts weights :math:`w_t` (``1 - I``, CRF-RNN's "cost 1 for differing
    labels", gives the same softmax). Returns the last logits :math:`z^T`
    ``[B, K, *spatial]``, ready for cross-entropy; ``n_iter = 0`` returns the
    input.

    Terms (pass ``None`` as a weight to drop one):

    * ``'spatial'``: features :math:`p / \sigma_{xy}` (pixel coordinates in
      (x, y, z, ...) order, as :class:`densecrf.DenseCRF2D`);
    * ``'bilateral'``: :math:`[p / \sigma_{xy}, I / \sigma_{rgb}]` over the
      image channels, with the image :math:`I` in 0..255 units (the units of
      :math:`\sigma_{rgb}`, as :func:`densecrf.refine`'s ``bilateral_srgb``):
      pass ``255 * image`` or ``image_range=(0, 1)`` to ``forward`` for an
      image in 0..1 (:class:`densecrf.models.DeepLabCRF` does the former);
    * ``'features0'``, ``'features1'``, ...: one per entry of
      ``feature_bandwidths``, over arbitrary per-point features passed to
      ``forward`` (``[B, d_t, *spatial]``), divided by the term's bandwidth
      (a number or ``d_t`` numbers).

    Bandwidths are stored as logs; ``learn_bandwidths`` (True, or a set of
    term names) makes them parameters, at the cost of the feature-gradient
    filter passes (two more filters of ``K (d + 1)`` channels per term and
    iteration in backward). Weights and the compatibility are always learned.

    Works for any batch size, any number of spatial axes, float32 and float64
    (the logits' dtype: a float64 input, e.g. to a ``.double()`` layer, runs
    the lattice, the filters and the mean field in float64, so that
    ``torch.autograd.gradcheck`` passes at its default tolerances), CPU
    tensors (CUDA when densecrf is built with it, float32 and float64). Each term's lattice is
    built once per image and forward and reused by every iteration and by
    backward. Under ``torch.no_grad()`` / inference mode (or when nothing
    requires a gradient) float32 inputs take the fused native mean field: no
    graph. ``torch.compile`` runs the module with a graph break around the
    CRF.

    Memory kept for backward, per image and iteration (``N`` points, ``K``
    classes, the tensor's dtype): one ``N x K`` tensor per term (its filtered
    Q, for the weight gradient) plus two shared ones (the summed message, for
    the compatibility gradient, and Q, for the softmax): ``4 N K`` values
    with the two default terms. Learnable bandwidths add about ``2 N K`` per
    term (the filter's input and output, for the feature gradient).
    ``recompute=True`` keeps only each iteration's input Q (``N K``) and
    recomputes the iteration in backward (one more forward filter per term
    and iteration). The lattices (about ``(d+1) * 20`` bytes per point plus
    ``(d+1) * 8`` per vertex) and ``N``-vectors of normalisation live until
    backward in every mode. Measured with ``saved_tensors_hooks``: 4.0, 8.3
    and 1.0 ``N K`` per iteration for the three cases.

    Args:
        n_classes: K.
        n_iter: mean-field iterations T (CRF-RNN trains with 5).
        spatial_sxy, spatial_weight: smoothness term (CRF-RNN: 3, 3).
        bilateral_sxy, bilateral_srgb, bilateral_weight: appearance term
            (CRF-RNN: 160, 3 on 0..255 images with weight 5; pydensecrf's
            classic 80, 13, 10). The default weight, 5, is not
            :func:`densecrf.refine`'s 10: this layer is made to be trained,
            and 5 is CRF-RNN's initial bilateral weight (Zheng et al.'s
            released model starts from spatial 3, bilateral 5 and learns
            them), paired here with pydensecrf's bandwidths. So
            ``CRFasRNN(K)`` is not ``refine``'s default CRF; the layer that
            is (up to float32 rounding) is
            ``CRFasRNN.from_params(densecrf.params.CRFParams(), K)``.
        feature_bandwidths, feature_weights: extra terms over user features.
        per_class_weights: one weight per class and term (CRF-RNN).
        learn_bandwidths: False, True, or an iterable of term names.
        normalization: 'symmetric' (default), 'before', 'after' or 'none'.
        recompute: trade time for memory, see above.
        threads: native threads (default: all cores).
    """

    def __init__(
        self,
        n_classes: int,
        n_iter: int = 5,
        *,
        spatial_sxy: float = 3.0,
        spatial_weight: float | None = 3.0,
        bilateral_sxy: float = 80.0,
        bilateral_srgb: float = 13.0,
        bilateral_weight: float | None = 5.0,
        feature_bandwidths: Sequence | None = None,
        feature_weights: Sequence | None = None,
        per_class_weights: bool = False,
        learn_bandwidths=False,
        normalization: str = "symmetric",
        recompute: bool = False,
        threads: int | None = None,
    ):
        super().__init__()
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
        self.n_classes = n_classes
        self.n_iter = n_iter
        self.normalization = _norm_arg(normalization)
        self.recompute = bool(recompute)
        self.threads = int(threads or 0)
        self.per_class_weights = bool(per_class_weights)

        fb = list(feature_bandwidths or [])
        fw = list(feature_weights) if feature_weights is not None else [1.0] * len(fb)
        if len(fw) != len(fb):
            raise ValueError(f"feature_weights has {len(fw)} entries, feature_bandwidths {len(fb)}")
        specs = []  # (name, kind, weight, {bandwidth name: value})
        if spatial_weight is not None:
            specs.append(("spatial", "spatial", spatial_weight, {"sxy": _positive(spatial_sxy, "spatial_sxy")}))
        if bilateral_weight is not None:
            specs.append(
                (
                    "bilateral",
                    "bilateral",
                    bilateral_weight,
                    {
                        "sxy": _positive(bilateral_sxy, "bilateral_sxy"),
                        "srgb": _positive(bilateral_srgb, "bilateral_srgb"),
                    },
                )
            )
        for k, (bw, w) in enumerate(zip(fb, fw, strict=True)):
            vals = [bw] if isinstance(bw, numbers.Real) else list(bw)
            specs.append(
                (f"features{k}", "features", w, {"s": [_positive(float(v), f"feature_bandwidths[{k}]") for v in vals]})
            )
        names = [s[0] for s in specs]
        if learn_bandwidths is True:
            learn = set(names)
        elif learn_bandwidths is False or learn_bandwidths is None:
            learn = set()
        else:
            learn = set(learn_bandwidths)
            unknown = learn - set(names)
            if unknown:
                raise ValueError(f"learn_bandwidths names unknown terms {sorted(unknown)}; terms: {names}")

        self.terms = [(name, kind) for name, kind, _, _ in specs]
        self.weights = nn.ParameterDict()
        self.log_bandwidths = nn.ParameterDict()
        for name, _kind, w, bws in specs:
            w = float(w)
            shape = (n_classes,) if per_class_weights else ()
            self.weights[name] = nn.Parameter(torch.full(shape, w))
            for bname, v in bws.items():
                t = torch.tensor(v, dtype=torch.float32)
                key = f"{name}_{bname}"
                if name in learn:
                    self.log_bandwidths[key] = nn.Parameter(torch.log(t))
                else:
                    # Fixed bandwidths are kept as given, not as exp(log(v)),
                    # which is off by an ulp and can move a point that sits on
                    # a lattice boundary (grid positions do) to another simplex.
                    self.register_buffer(f"_bw_{key}", t)
        self.compat = nn.Parameter(-torch.eye(n_classes))

    def bandwidth(self, term: str, which: str) -> torch.Tensor:
        """A term's bandwidth, e.g. ``bandwidth('bilateral', 'srgb')`` (exp of the
        parameter when learned)."""
        key = f"{term}_{which}"
        if key in self.log_bandwidths:
            return self.log_bandwidths[key].exp()
        return getattr(self, f"_bw_{key}")

    def extra_repr(self) -> str:
        return (
            f"n_classes={self.n_classes}, n_iter={self.n_iter}, terms={[n for n, _ in self.terms]}, "
            f"learned_bandwidths={list(self.log_bandwidths.keys())}, recompute={self.recompute}"
        )

    # -- parameter files ----------------------------------------------------
    @classmethod
    def from_params(cls, params, n_classes: int, **kwargs) -> CRFasRNN:
        r"""A layer equal to :func:`densecrf.refine` with ``params`` (a
        :class:`densecrf.params.CRFParams`, its dict or a JSON path).

        Term t of the layer adds :math:`-\sum_{l'} \mu_{l l'} w_{t,l'} (\bar K_t Q)_{l'}`
        to logit :math:`l`, and :class:`densecrf.DenseCRF` subtracts
        :math:`\sum_{l'} M_{t, l l'} (\bar K_t Q)_{l'}` for a compatibility
        matrix :math:`M_t` (rows: the label receiving the message), so
        :math:`M_t = \mu \operatorname{diag}(w_t)`. A Potts weight :math:`c`
        is :math:`M = -c I`, a diagonal :math:`d` is :math:`\operatorname{diag}(d)`.
        Potts terms give :math:`\mu = -I` and scalar weights; otherwise
        :math:`\mu` is the first term's matrix and the other term's weights
        are its column ratios (one per class when they differ), which exist
        only when its matrix is the first one's with rescaled columns: other
        pairs raise ValueError. ``kwargs`` go to the constructor
        (``learn_bandwidths``, ``threads``, ...).
        """

        from .params import as_params

        p = as_params(params)
        k_file = p.n_labels()
        if k_file is not None and k_file != n_classes:
            raise ValueError(f"the parameters' compatibilities are for {k_file} labels, the layer has {n_classes}")
        srgb = p.bilateral_srgb
        if isinstance(srgb, list):
            if len(set(srgb)) != 1:
                raise ValueError(f"CRFasRNN has one colour bandwidth, the parameters have {srgb}")
            srgb = srgb[0]
        terms = [("spatial", p.gaussian_compat), ("bilateral", p.bilateral_compat)]
        present = [(name, c) for name, c in terms if c is not None]
        eye = np.eye(n_classes)
        mats = {
            name: (
                -float(c) * eye
                if isinstance(c, float)
                else np.diag(np.asarray(c, dtype=np.float64))
                if np.ndim(c) == 1
                else np.asarray(c, dtype=np.float64)
            )
            for name, c in present
        }
        weights = {name: None for name, _ in terms}
        if all(isinstance(c, float) for _, c in present):
            mu = -eye
            weights.update({name: float(c) for name, c in present})
            per_class = False
        else:
            ref = present[0][0]
            mu = mats[ref]
            weights[ref] = np.ones(n_classes)
            for name, _ in present[1:]:
                m = mats[name]
                # per column l': the w with m[:, l'] = w * mu[:, l'] (least squares, then checked)
                den = (mu * mu).sum(0)
                w = np.where(den > 0, (mu * m).sum(0) / np.where(den > 0, den, 1.0), 0.0)
                if not np.allclose(mu * w[None, :], m, rtol=1e-6, atol=1e-9 * max(1.0, np.abs(m).max())):
                    raise ValueError(
                        "CRFasRNN shares one compatibility matrix between its terms: the "
                        f"{name} term's matrix is not the {ref} term's with rescaled columns"
                    )
                weights[name] = w
            per_class = not all(np.allclose(w, w[0]) for w in weights.values() if w is not None)
            if not per_class:
                weights = {n: (None if w is None else float(w[0])) for n, w in weights.items()}
        layer = cls(
            n_classes,
            p.n_iter,
            spatial_sxy=p.gaussian_sxy,
            spatial_weight=weights["spatial"] if not per_class else (1.0 if weights["spatial"] is not None else None),
            bilateral_sxy=p.bilateral_sxy,
            bilateral_srgb=srgb,
            bilateral_weight=weights["bilateral"]
            if not per_class
            else (1.0 if weights["bilateral"] is not None else None),
            per_class_weights=per_class,
            normalization=p.normalization,
            **kwargs,
        )
        with torch.no_grad():
            layer.compat.copy_(torch.as_tensor(mu, dtype=layer.compat.dtype))
            if per_class:
                for name, w in weights.items():
                    if w is not None:
                        layer.weights[name].copy_(torch.as_tensor(w, dtype=layer.weights[name].dtype))
        return layer

    def to_params(self, info: dict | None = None):
        """The layer's spatial and bilateral terms as a :class:`densecrf.params.CRFParams`
        for :func:`densecrf.refine` (see :meth:`from_params` for the mapping):
        Potts weights while :math:`\\mu = -I` and the weights are scalars, a
        ``[K]`` diagonal while :math:`\\mu = -I`, a ``[K, K]`` matrix otherwise.
        Feature terms have no place in the file: ValueError."""
        from .params import CRFParams

        kinds = {kind for _, kind in self.terms}
        if "features" in kinds:
            raise ValueError("feature terms cannot be written to a CRF parameter file (spatial and bilateral only)")
        mu = self.compat.detach().double().cpu()  # the file's numbers, wherever the layer lives
        potts_mu = torch.equal(mu, -torch.eye(self.n_classes, dtype=mu.dtype))
        names = [name for name, _ in self.terms]

        def compat(name):
            if name not in names:
                return None
            w = self.weights[name].detach().double().cpu()
            if potts_mu and w.dim() == 0:
                return float(w)
            if potts_mu:
                return (-w).tolist()
            m = mu * w.reshape(1, -1) if w.dim() else mu * w
            if torch.equal(m, torch.diag(torch.diagonal(m))):
                return torch.diagonal(m).tolist()  # a diagonal matrix as DenseCRF's [K] diagonal
            return m.tolist()

        kw = {
            "n_iter": self.n_iter,
            "gaussian_compat": compat("spatial"),
            "bilateral_compat": compat("bilateral"),
            "normalization": {v: k for k, v in _NORMALIZATIONS.items()}[self.normalization],
            "info": dict(info or {}),
        }
        if "spatial" in names:
            kw["gaussian_sxy"] = float(self.bandwidth("spatial", "sxy").detach())
        if "bilateral" in names:
            kw["bilateral_sxy"] = float(self.bandwidth("bilateral", "sxy").detach())
            kw["bilateral_srgb"] = float(self.bandwidth("bilateral", "srgb").detach())
        return CRFParams(**kw)

    # -- forward ----------------------------------------------------------
    def _check(self, logits, image, features):
        if not isinstance(logits, torch.Tensor) or logits.dim() < 3:
            raise ValueError(
                f"logits must be a tensor [B, K, *spatial], got "
                f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}"
            )
        if logits.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"logits must be float32 or float64, got {logits.dtype}")
        if logits.shape[1] != self.n_classes:
            msg = f"logits must have {self.n_classes} channels (classes), got shape {tuple(logits.shape)}"
            if logits.shape[0] == self.n_classes:
                msg += (
                    "; the classes are on axis 0: this looks like one image's [K, *spatial] logits without "
                    "the batch axis: pass logits[None] (and image[None])"
                )
            raise ValueError(msg)
        b, spatial = logits.shape[0], tuple(logits.shape[2:])
        kinds = [k for _, k in self.terms]
        if "bilateral" in kinds:
            if image is None:
                raise ValueError("the bilateral term needs an image [B, C, *spatial]")
            if not isinstance(image, torch.Tensor):
                raise TypeError(f"image must be a torch.Tensor [B, C, *spatial], got {type(image).__name__}")
            if image.dim() != logits.dim() or image.shape[0] != b or tuple(image.shape[2:]) != spatial:
                msg = f"image must have shape [{b}, C, {', '.join(map(str, spatial))}], got {tuple(image.shape)}"
                if image.dim() == logits.dim() - 1 and tuple(image.shape[1:]) == spatial:
                    msg += "; it has no batch axis: pass image[None]"
                elif image.dim() == logits.dim() and tuple(image.shape[1:-1]) == spatial:
                    msg += "; it looks channels-last: pass image.permute(0, 3, 1, 2) ([B, C, H, W])"
                raise ValueError(msg)
            if image.device != logits.device:
                raise ValueError(f"image is on {image.device}, logits on {logits.device}")
        n_feat = kinds.count("features")
        if isinstance(features, torch.Tensor):
            features = [features]
        features = list(features or [])
        if len(features) != n_feat:
            raise ValueError(f"expected {n_feat} feature tensors (one per feature term), got {len(features)}")
        for k, (f, (name, _)) in enumerate(zip(features, [t for t in self.terms if t[1] == "features"], strict=True)):
            s = self.bandwidth(name, "s")
            if f.dim() != logits.dim() or f.shape[0] != b or tuple(f.shape[2:]) != spatial:
                raise ValueError(
                    f"features[{k}] must have shape [{b}, d, {', '.join(map(str, spatial))}], got {tuple(f.shape)}"
                )
            if s.numel() != 1 and s.numel() != f.shape[1]:
                raise ValueError(f"features[{k}] has {f.shape[1]} channels but its term has {s.numel()} bandwidths")
            if f.device != logits.device:
                raise ValueError(f"features[{k}] is on {f.device}, logits on {logits.device}")
        return features

    def _term_features(self, logits, image, features, srgb_factor: float = 1.0):
        """Per image, per term: features [N, d_t] already divided by the bandwidths
        (the colour bandwidth times ``srgb_factor``, see ``image_range``)."""
        b = logits.shape[0]
        spatial = logits.shape[2:]
        n = int(math.prod(spatial))
        dt = logits.dtype
        pos = _grid_positions(spatial, logits)  # [N, n_spatial]
        out = [[] for _ in range(b)]
        fi = 0
        for name, kind in self.terms:
            if kind == "spatial":
                f = pos / self.bandwidth(name, "sxy").to(dt)
                per = [f] * b
            elif kind == "bilateral":
                p = pos / self.bandwidth(name, "sxy").to(dt)
                img = image.to(dt).reshape(b, image.shape[1], n).transpose(1, 2)  # [B, N, C]
                srgb = self.bandwidth(name, "srgb").to(dt)
                if srgb_factor != 1.0:  # 1.0: the bandwidth as stored (the same bits as without image_range)
                    srgb = srgb * srgb_factor
                per = [torch.cat([p, img[i] / srgb], dim=1) for i in range(b)]
            else:
                x = features[fi].to(dt)
                fi += 1
                x = x.reshape(b, x.shape[1], n).transpose(1, 2)  # [B, N, d]
                s = self.bandwidth(name, "s").to(dt)
                per = [x[i] / s for i in range(b)]
            for i in range(b):
                out[i].append(per[i].contiguous())
        return out

    def forward(
        self, logits: torch.Tensor, image: torch.Tensor | None = None, features=None, *, image_range=None
    ) -> torch.Tensor:
        """``logits`` ``[B, K, *spatial]``, ``image`` ``[B, C, *spatial]`` (bilateral
        term) in 0..255 units, ``features`` a tensor or list of tensors ``[B, d_t, *spatial]``
        (feature terms). Returns the refined logits ``[B, K, *spatial]``.

        ``image_range``: None (default) for an image in 0..255 units (the
        colour bandwidth's); ``(lo, hi)`` for values spanning lo..hi, e.g.
        ``(0, 1)``, used as if mapped onto 0..255 (the colour bandwidth is
        scaled by ``(hi - lo) / 255``); ``'raw'`` for the values as they are
        (the bandwidth in the image's own units). Without it, a float
        3-channel image whose largest value is at most 1 gets a UserWarning
        (on a GPU that check waits for one reduction of the image; a stated
        ``image_range`` skips it)."""
        features = self._check(logits, image, features)
        factor = image_range_factor(image_range)
        if image is not None and image.numel() and any(k == "bilateral" for _, k in self.terms):
            # stacklevel 4 from forward: Module._call_impl, Module._wrapped_call_impl, then the caller
            warn_image_units(
                image_range,
                int(image.shape[1]),
                bool(image.dtype.is_floating_point),
                lambda: image.detach().max(),
                what="image",
                stacklevel=4,
            )
        _backend(logits.device, self.threads)  # fail early on an unsupported device
        return _crf_forward(self, logits, image, features, factor)


@torch.compiler.disable
def _crf_forward(mod: CRFasRNN, logits, image, features, srgb_factor: float = 1.0):
    b, k = logits.shape[:2]
    spatial = logits.shape[2:]
    n = int(math.prod(spatial))
    if n == 0 or b == 0 or mod.n_iter == 0 or not mod.terms:
        return logits
    dt = logits.dtype
    weights = [mod.weights[name].to(dt) for name, _ in mod.terms]
    compat = mod.compat.to(dt)
    per_image = mod._term_features(logits, image, features, srgb_factor)
    flat = logits.reshape(b, k, n).transpose(1, 2)  # [B, N, K]
    tensors = [logits, compat, *weights] + [f for fs in per_image for f in fs]
    needs_graph = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    backend = _backend(logits.device, mod.threads)
    fused = not needs_graph and dt == torch.float32 and hasattr(backend, "mean_field")
    # Terms whose features are the same tensor for every image (the spatial
    # term) share one lattice (and one kernel) across the batch.
    cache = {}

    def kernel(f):
        if id(f) not in cache:
            cache[id(f)] = backend.lattice(f) if fused else _Kernel(f, mod.normalization, backend)
        return cache[id(f)]

    outs = []
    for i in range(b):
        kernels = [kernel(f) for f in per_image[i]]
        if fused:
            z = backend.mean_field(flat[i], kernels, weights, compat, mod.n_iter, mod.normalization)
        else:
            z = _mean_field_grad(flat[i], kernels, weights, compat, mod.n_iter, mod.recompute)
        outs.append(z)
    return torch.stack(outs).transpose(1, 2).reshape(logits.shape)


from .instance_layer import InstanceCRF  # noqa: E402,F401
from .losses import DenseCRFLoss, NormalizedCutLoss  # noqa: E402,F401
