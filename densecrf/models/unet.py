"""A U-Net (Ronneberger et al., MICCAI 2015) sized like :class:`DeepLabLite`.

Coarse to fine: four encoder levels of two 3x3 convolutions (batch norm,
ReLU) with 2x2 max pooling between them, a bottleneck at stride 16, and a
decoder that up-samples by learned 2x2 transposed convolutions and
concatenates the encoder's features of the same level before its two
convolutions. Inputs of any size: the decoder crops or pads to the skip's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deeplab import pyramid_logits


def _double(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Image ``[B, 3, H, W]`` (0..1 floats) -> class logits ``[B, K, H, W]``.

    Args:
        n_classes: K.
        width: channels of the first level (the next levels use 2x, 4x, 8x;
            the bottleneck 8x). About 2.9 million parameters at width 24.
    """

    def __init__(self, n_classes: int, width: int = 24):
        super().__init__()
        w = width
        chans = [w, 2 * w, 4 * w, 8 * w]
        self.down = nn.ModuleList()
        cin = 3
        for c in chans:
            self.down.append(_double(cin, c))
            cin = c
        self.bottleneck = _double(chans[-1], chans[-1])
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        cin = chans[-1]
        for c in reversed(chans):
            self.up.append(nn.ConvTranspose2d(cin, c, 2, 2))
            self.merge.append(_double(2 * c, c))
            cin = c
        self.classify = nn.Conv2d(chans[0], n_classes, 1)
        self.n_classes = n_classes

    def forward(self, x, scales: tuple = (1.0,)):
        """Logits at the input size; several ``scales`` average an image pyramid."""
        return pyramid_logits(self._forward, x, scales)

    def _forward(self, x):
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = up(x)
            dh, dw = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
            if dh or dw:  # odd sizes: pad (or crop) to the skip's size
                x = F.pad(x, (0, dw, 0, dh))
            x = merge(torch.cat([x, skip], 1))
        return self.classify(x)
