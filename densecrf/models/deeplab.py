"""A small DeepLab-style network: residual atrous backbone, ASPP, skip decoder.

Sized to train and run on a CPU (about 1.6 million parameters at width 32).
Output stride 8: three stride-2 stages, then dilated residual blocks; the
ASPP pyramid samples context at rates 1, 2, 4 and 8 (of the stride-8 grid)
plus image pooling; the decoder merges the stride-4 features and up-samples
bilinearly or with a learned transposed convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import CRFasRNN


def _cbr(cin, cout, k=3, stride=1, dilation=1):
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class _Residual(nn.Module):
    """Two 3x3 convolutions (the second dilated) with an identity or 1x1 shortcut."""

    def __init__(self, cin, cout, stride=1, dilation=1):
        super().__init__()
        self.a = _cbr(cin, cout, 3, stride)
        self.b = nn.Sequential(
            nn.Conv2d(cout, cout, 3, 1, dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout)
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        return F.relu(self.b(self.a(x)) + self.skip(x))


class _ASPP(nn.Module):
    def __init__(self, cin, cout, rates=(2, 4, 8)):
        super().__init__()
        self.branches = nn.ModuleList([_cbr(cin, cout, 1)] + [_cbr(cin, cout, 3, dilation=r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = _cbr(cout * (len(rates) + 2), cout, 1)

    def forward(self, x):
        feats = [b(x) for b in self.branches]
        feats.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(feats, 1))


def pyramid_logits(forward, x, scales=(1.0,)):
    """``forward``'s logits at ``x``'s size, averaged over the image resized by each of ``scales``
    (bilinearly, and the logits back to x's size); ``(1.0,)`` is one plain call."""
    if tuple(scales) == (1.0,):
        return forward(x)
    h, w = x.shape[2:]
    out = 0
    for s in scales:
        xs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False) if s != 1.0 else x
        out = out + F.interpolate(forward(xs), size=(h, w), mode="bilinear", align_corners=False)
    return out / len(scales)


class DeepLabLite(nn.Module):
    """Image ``[B, 3, H, W]`` (0..1 floats) -> class logits ``[B, K, H, W]``.

    Args:
        n_classes: K.
        width: channels of the first stage (later stages use 2x and 4x).
        upsample: 'bilinear' or 'learned' (transposed convolution) for the
            final x4 up-sampling.
    """

    def __init__(self, n_classes: int, width: int = 32, upsample: str = "bilinear"):
        super().__init__()
        w = width
        self.stem = nn.Sequential(_cbr(3, w, 3, 2), _cbr(w, w))  # /2
        self.stage1 = nn.Sequential(_Residual(w, 2 * w, 2), _Residual(2 * w, 2 * w))  # /4
        self.stage2 = nn.Sequential(_Residual(2 * w, 4 * w, 2), _Residual(4 * w, 4 * w))  # /8
        self.stage3 = nn.Sequential(_Residual(4 * w, 4 * w, 1, 2), _Residual(4 * w, 4 * w, 1, 4))  # atrous
        self.aspp = _ASPP(4 * w, 4 * w)
        self.skip = _cbr(2 * w, w, 1)
        self.decode = nn.Sequential(_cbr(4 * w + w, 2 * w), _cbr(2 * w, 2 * w))
        self.classify = nn.Conv2d(2 * w, n_classes, 1)
        if upsample not in ("bilinear", "learned"):
            raise ValueError(f"upsample must be 'bilinear' or 'learned', got {upsample!r}")
        self.up = nn.ConvTranspose2d(n_classes, n_classes, 8, 4, 2, bias=False) if upsample == "learned" else None
        self.n_classes = n_classes

    def forward(self, x, scales: tuple = (1.0,)):
        """Logits at the input size; several ``scales`` average an image pyramid."""
        return pyramid_logits(self._forward, x, scales)

    def _forward(self, x):
        h, w = x.shape[2:]
        f4 = self.stage1(self.stem(x))
        f8 = self.aspp(self.stage3(self.stage2(f4)))
        f8 = F.interpolate(f8, size=f4.shape[2:], mode="bilinear", align_corners=False)
        y = self.classify(self.decode(torch.cat([f8, self.skip(f4)], 1)))
        if self.up is not None:
            y = self.up(y)
            if y.shape[2:] != (h, w):
                y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
            return y
        return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)


def logits_at_size(net: nn.Module, image, net_size: tuple[int, int] | None):
    """``net``'s logits at ``image``'s size, the network run on the image resized
    (bilinearly) to ``net_size`` = (W, H); None or the image's own size runs it as is."""
    h, w = image.shape[2:]
    if net_size is None or (w, h) == tuple(net_size):
        return net(image)
    x = F.interpolate(image, size=(net_size[1], net_size[0]), mode="bilinear", align_corners=False)
    return F.interpolate(net(x), size=(h, w), mode="bilinear", align_corners=False)


class DeepLabCRF(nn.Module):
    """DeepLabLite with a CRF-as-RNN head (densecrf.nn.CRFasRNN) on its logits.

    ``forward(image, output='crf' | 'network' | 'both')`` with ``image``
    ``[B, 3, H, W]`` float in 0..1 (what the network was trained on, as
    :class:`DeepLabLite`). Its CRF head, a plain :class:`densecrf.nn.CRFasRNN`,
    takes images in 0..255 units (its bilateral bandwidth's): ``forward``
    passes it ``255 * image``. Called on its own, the head wants the same.
    ``net_size`` = (W, H) runs the network on the image resized to that size
    (the size it was trained at) and up-samples its logits bilinearly to the
    image's size, where the CRF runs with the full-resolution image: the
    network's coarse labels are refined along the real edges. ``crf_kwargs``
    go to :class:`densecrf.nn.CRFasRNN` (bandwidths in full-resolution pixels);
    ``crf`` passes a ready head instead, e.g. ``CRFasRNN.from_params(...)``.
    """

    def __init__(
        self,
        n_classes: int,
        width: int = 32,
        crf_iterations: int = 5,
        net_size: tuple[int, int] | None = None,
        crf: CRFasRNN | None = None,
        **crf_kwargs,
    ):
        super().__init__()
        self.net = DeepLabLite(n_classes, width)
        if crf is not None and (crf_kwargs or crf.n_classes != n_classes):
            raise ValueError("pass either a CRFasRNN for n_classes (crf=) or its keyword arguments, not both")
        self.crf = crf if crf is not None else CRFasRNN(n_classes, crf_iterations, **crf_kwargs)
        self.net_size = tuple(net_size) if net_size is not None else None

    @classmethod
    def from_training_args(cls, n_classes: int, args: dict, crf_init: dict | None = None) -> DeepLabCRF:
        """The model ``python -m densecrf.models.train --crf`` builds from its
        arguments (``vars(args)``; missing ones take that command's defaults),
        with the head from the parameter dict ``crf_init`` when given."""
        size = tuple(args.get("size", (240, 180)))
        if crf_init:
            return cls(n_classes, args["width"], net_size=size, crf=CRFasRNN.from_params(crf_init, n_classes))
        spatial, bilateral = args.get("crf_spatial", (3.0, 1.0)), args.get("crf_bilateral", (80.0, 13.0, 3.0))
        return cls(
            n_classes,
            args["width"],
            args.get("crf_iter", 5),
            net_size=size,
            spatial_sxy=spatial[0],
            spatial_weight=spatial[1],
            bilateral_sxy=bilateral[0],
            bilateral_srgb=bilateral[1],
            bilateral_weight=bilateral[2],
            per_class_weights=True,
        )

    def network_logits(self, image):
        """The network's logits at the image's size."""
        return logits_at_size(self.net, image, self.net_size)

    def forward(self, image, output: str = "crf"):
        if output not in ("crf", "network", "both"):
            raise ValueError(f"output must be 'crf', 'network' or 'both', got {output!r}")
        logits = self.network_logits(image)
        if output == "network":
            return logits
        refined = self.crf(logits, image * 255.0)
        return refined if output == "crf" else (logits, refined)
