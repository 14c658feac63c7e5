r"""The joint instance CRF of :func:`densecrf.refine_instances` as a differentiable layer.

:class:`InstanceCRF` computes what ``refine_instances(..., mode="joint")``
computes before its arg-max: the calibrated unary of background plus the M
instances (the formulas of :mod:`densecrf.instances`), then mean field with
the Gaussian and bilateral kernels and the background/instance
compatibility, unrolled as in :class:`densecrf.nn.CRFasRNN`. It returns the
last logits ``[M + 1, H, W]`` (background first) instead of labels, so that
a loss on them trains what feeds the masks (a mask head, a detector's
scores) and the CRF's own calibration: ``power``, ``score_power``,
``fg_bias``, the two kernel weights and ``instance_compat`` are parameters.
The number of instances may differ from image to image: pass lists.

What it does not do: the binary (per-mask) mode, the rescue of confident
instances that the CRF empties (a post-processing on labels, not
differentiable: apply :func:`densecrf.refine_instances` at inference for
that guarantee), gradients to the image or to the bandwidths (fixed, as
the features they divide). ``torch`` is needed (``import densecrf`` alone
does not import it); float32 and float64 (float64: the float64 lattice,
on the CPU or CUDA, so ``torch.autograd.gradcheck`` passes at its default
tolerances); CPU tensors, and CUDA tensors where densecrf is built
with CUDA.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from .nn import _backend, _grid_positions, _Kernel, _mean_field_grad

__all__ = ["InstanceCRF"]

_SYMMETRIC = 3  # DenseCRF's default normalisation, which refine_instances uses
_LEARNED = ("power", "score_power", "fg_bias", "gaussian_weight", "bilateral_weight", "instance_compat")


def _finite(x, name) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    return float(x)


def _positive(x, name) -> float:
    x = _finite(x, name)
    if x <= 0:
        raise ValueError(f"{name} must be positive, got {x!r}")
    return x


class InstanceCRF(nn.Module):
    r"""Joint instance CRF (background + M instances) as a differentiable layer.

    With :math:`p_i` the soft masks in [0, 1], :math:`s_i` the scores and
    :math:`c(x) = \max(x, \text{min\_prob})`, the energies are those of
    :mod:`densecrf.instances`:

    .. math::

        U_0 = -\gamma \log c(1 - \max_j p_j), \qquad
        U_i = -\gamma \log c(p_i) - \alpha \log c(s_i) - b - \beta [p_i > 0.5]

    and ``n_iter`` mean-field iterations with compatibility 1 between the
    background and an instance, ``instance_compat`` between two instances,
    times each term's weight (symmetric normalisation). The defaults are
    :class:`densecrf.instances.InstanceParams`' (``from_params`` takes any
    such object, e.g. the result of :func:`densecrf.fit_instances`).

    Args:
        n_iter: mean-field iterations.
        power, score_power, fg_bias: :math:`\gamma, \alpha, b` (learned).
        confident_bonus: :math:`\beta` (fixed: its indicator has no gradient).
        min_prob: the floor of :math:`c` (fixed).
        gaussian_sxy, bilateral_sxy, bilateral_srgb: bandwidths (fixed), the
            colour one in the image's 0..255 units.
        gaussian_weight, bilateral_weight: kernel weights (learned); None
            drops the term.
        instance_compat: instance/instance compatibility ratio (learned).
        learn: False keeps every number fixed (buffers, not parameters).
        threads: native threads on the CPU (default: all cores).
    """

    def __init__(
        self,
        n_iter: int = 5,
        *,
        power: float = 3.8,
        score_power: float = 1.3,
        fg_bias: float = 2.8,
        confident_bonus: float = 0.0,
        min_prob: float = 0.018,
        gaussian_sxy: float = 3.0,
        gaussian_weight: float | None = 0.6,
        bilateral_sxy: float = 14.0,
        bilateral_srgb: float = 14.0,
        bilateral_weight: float | None = 3.7,
        instance_compat: float = 1.0,
        learn: bool = True,
        threads: int | None = None,
    ):
        super().__init__()
        if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
        self.n_iter = int(n_iter)
        self.confident_bonus = _finite(confident_bonus, "confident_bonus")
        self.min_prob = _positive(min_prob, "min_prob")
        if not self.min_prob < 0.5:
            raise ValueError(f"min_prob must be in (0, 0.5), got {min_prob}")
        self.gaussian_sxy = _positive(gaussian_sxy, "gaussian_sxy")
        self.bilateral_sxy = _positive(bilateral_sxy, "bilateral_sxy")
        self.bilateral_srgb = _positive(bilateral_srgb, "bilateral_srgb")
        self.threads = threads
        values = {
            "power": _positive(power, "power"),
            "score_power": _finite(score_power, "score_power"),
            "fg_bias": _finite(fg_bias, "fg_bias"),
            "instance_compat": _finite(instance_compat, "instance_compat"),
            "gaussian_weight": None if gaussian_weight is None else _finite(gaussian_weight, "gaussian_weight"),
            "bilateral_weight": None if bilateral_weight is None else _finite(bilateral_weight, "bilateral_weight"),
        }
        self.terms = tuple(t for t in ("gaussian", "bilateral") if values[f"{t}_weight"] is not None)
        for name in _LEARNED:
            if values[name] is None:
                setattr(self, name, None)
                continue
            t = torch.tensor(values[name], dtype=torch.float32)
            if learn:
                setattr(self, name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)

    @classmethod
    def from_params(cls, params, **kw) -> InstanceCRF:
        """The layer of an :class:`~densecrf.instances.InstanceParams` (joint mode; ``kw`` as the constructor's)."""
        if getattr(params, "mode", "joint") != "joint":
            raise ValueError(f"InstanceCRF is the joint CRF; these parameters are for mode {params.mode!r}")
        if not getattr(params, "refine", True):
            raise ValueError("these parameters say 'no refinement' (refine=False): there is no CRF to build")
        names = (
            "n_iter",
            "power",
            "score_power",
            "fg_bias",
            "confident_bonus",
            "min_prob",
            "gaussian_sxy",
            "gaussian_weight",
            "bilateral_sxy",
            "bilateral_srgb",
            "bilateral_weight",
            "instance_compat",
        )
        args = {n: getattr(params, n) for n in names}
        args.update(kw)
        return cls(**args)

    # -- inputs -------------------------------------------------------------
    def _check(self, image, masks, scores):
        if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
            raise ValueError(
                "masks must be a tensor [M, H, W], got "
                + (str(tuple(masks.shape)) if isinstance(masks, torch.Tensor) else type(masks).__name__)
            )
        if masks.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"masks must be float32 or float64, got {masks.dtype}")
        m, h, w = masks.shape
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or tuple(image.shape[1:]) != (h, w):
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(
                f"image must be a tensor [C, {h}, {w}] (channels first, 0..255) for masks {m}x{h}x{w}, got {got}"
            )
        if image.device != masks.device:
            raise ValueError(f"image is on {image.device}, masks on {masks.device}")
        if masks.numel():
            lo, hi = float(masks.detach().min()), float(masks.detach().max())
            if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
                raise ValueError(f"masks must lie in [0, 1] (soft masks), found values in [{lo:g}, {hi:g}]")
        if scores is None:
            return masks.new_ones(m)
        if not isinstance(scores, torch.Tensor):
            scores = torch.as_tensor(scores, dtype=masks.dtype, device=masks.device)
        if scores.dim() != 1 or scores.shape[0] != m:
            raise ValueError(f"scores must have one value per mask ({m}), got shape {tuple(scores.shape)}")
        if m:
            lo, hi = float(scores.detach().min()), float(scores.detach().max())
            if not (lo >= 0.0 and hi <= 1.0):
                raise ValueError(f"scores must lie in [0, 1], found values in [{lo:g}, {hi:g}]")
        return scores.to(masks.dtype)

    # -- the layer ----------------------------------------------------------
    def unary(self, masks: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The energies ``[M + 1, H, W]`` (background first) of soft masks ``[M, H, W]`` and scores ``[M]``."""
        dt = masks.dtype
        eps = self.min_prob
        power = self.power.to(dt)
        if masks.shape[0] == 0:
            return masks.new_zeros((1, *masks.shape[1:]))  # -power log(1 - 0) = 0
        bg = -power * torch.log(torch.clamp(1.0 - masks.amax(dim=0), min=eps))
        u = -power * torch.log(torch.clamp(masks, min=eps))
        u = u - (self.score_power.to(dt) * torch.log(torch.clamp(scores, min=eps)) + self.fg_bias.to(dt))[:, None, None]
        if self.confident_bonus:
            u = u - self.confident_bonus * (masks.detach() > 0.5).to(dt)
        return torch.cat([bg[None], u], dim=0)

    def compat(self, n_labels: int, dtype, device) -> torch.Tensor:
        """``[K, K]`` energy compatibility (before the kernel weights): 0 on the diagonal,
        1 between the background and an instance, ``instance_compat`` between two instances."""
        c = torch.ones(n_labels, n_labels, dtype=dtype, device=device)
        inst = torch.zeros(n_labels, n_labels, dtype=torch.bool, device=device)
        inst[1:, 1:] = True
        c = torch.where(inst, c * self.instance_compat.to(dtype), c)
        return c * (1.0 - torch.eye(n_labels, dtype=dtype, device=device))

    def _one(self, image, masks, scores):
        scores = self._check(image, masks, scores)
        m, h, w = masks.shape
        dt = masks.dtype
        logits = -self.unary(masks, scores)  # [K, H, W]
        if m == 0 or self.n_iter == 0 or not self.terms or h * w == 0:
            return logits
        backend = _backend(masks.device, self.threads or 0)
        pos = _grid_positions((h, w), masks)  # [N, 2], (x, y)
        kernels, weights = [], []
        for t in self.terms:
            if t == "gaussian":
                f = pos / self.gaussian_sxy
            else:
                rgb = image.detach().to(dt).reshape(image.shape[0], h * w).t()
                f = torch.cat([pos / self.bilateral_sxy, rgb / self.bilateral_srgb], dim=1)
            kernels.append(_Kernel(f.contiguous(), _SYMMETRIC, backend))
            weights.append(getattr(self, f"{t}_weight").to(dt))
        flat = logits.reshape(m + 1, h * w).t()  # [N, K]
        z = _mean_field_grad(flat, kernels, weights, self.compat(m + 1, dt, masks.device), self.n_iter, False)
        return z.t().reshape(m + 1, h, w)

    def forward(self, image, masks, scores=None):
        """``image`` ``[C, H, W]`` (0..255 units, the colour bandwidth's), ``masks``
        ``[M, H, W]`` soft in [0, 1], ``scores`` ``[M]`` in [0, 1] (default ones):
        the refined logits ``[M + 1, H, W]``, background first (their arg-max is
        the instance-id map, 0 for background). For a batch pass lists (a
        ``[B, C, H, W]`` tensor also works for the images): a list comes back,
        one ``[M_b + 1, H, W]`` per image."""
        if isinstance(masks, (list, tuple)):
            n = len(masks)
            if isinstance(image, torch.Tensor) and image.dim() == 4:
                image = list(image.unbind(0))
            if not isinstance(image, (list, tuple)) or len(image) != n:
                raise ValueError(f"{n} mask tensors need {n} images (a list, or a [{n}, C, H, W] tensor)")
            if scores is None:
                scores = [None] * n
            if len(scores) != n:
                raise ValueError(f"{n} mask tensors need {n} score tensors (or None), got {len(scores)}")
            return [_instance_forward(self, im, mk, sc) for im, mk, sc in zip(image, masks, scores, strict=True)]
        return _instance_forward(self, image, masks, scores)


@torch.compiler.disable
def _instance_forward(mod: InstanceCRF, image, masks, scores):
    return mod._one(image, masks, scores)
