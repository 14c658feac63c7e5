"""Named recipes: the dense-CRF calls that published pipelines make, with their exact parameters.

Each preset says what its maps are (probabilities or hard labels), how the
unary is built from them, and the two terms' parameters. They reproduce
these calls (each is checked against the original pydensecrf call in
``tests/test_dataset.py``):

``psa``
    ``crf_inference(img, probs, t=10, scale_factor=1, labels=K)`` of
    Ahn and Kwak's AffinityNet code (jiwoon-ahn/psa, ``tool/imutils.py``),
    reused by most weakly-supervised segmentation code since. The unary is
    pydensecrf's ``unary_from_softmax(probs)``: ``-log(clip(p, 1e-5, 1))``,
    with no check that the maps sum to one (psa feeds class activation maps
    with a background score stacked on top, which do not). Gaussian sxy
    ``3 / scale_factor``, compat 3; bilateral sxy ``80 / scale_factor``,
    srgb 13, compat 10; 10 iterations. ``scale_factor`` (default 1) divides
    both spatial bandwidths, for maps computed at a reduced resolution.
``irn``
    ``crf_inference_label(img, labels, t=10, n_labels=K, gt_prob=0.7)`` of
    Ahn, Cho and Kwak's IRN code (jiwoon-ahn/irn, ``misc/imutils.py``):
    hard label maps, unary ``unary_from_labels(labels, K, gt_prob=0.7,
    zero_unsure=False)`` (label 0 is a class like any other, no "unsure"
    pixels); Gaussian sxy 3, compat 3; bilateral sxy 50, srgb 5, compat 10;
    10 iterations. IRN passes the number of classes present in each image
    as ``n_labels``; a dataset run takes one ``n_labels`` for all maps.
``deeplabv2-voc``
    DeepLab v2 (ResNet-101) on PASCAL VOC 2012, as its reference
    PyTorch port runs it (kazuto1011/deeplab-pytorch, ``configs/voc12.yaml``
    and ``libs/utils/crf.py``): softmax maps, unary ``unary_from_softmax``;
    Gaussian sxy 1, compat 3; bilateral sxy 67, srgb 3, compat 4; 10
    iterations.

Maps that do not sum to one (``psa``'s scores) are refined through the
same :func:`densecrf.refine` as probabilities: mean field only sees the
unary up to a constant per pixel (``softmax(-u + c) = softmax(-u)``, in the
start distribution and in every update), so ``-log(clip(p))`` and
``-log(clip(p) / sum_k clip(p))`` give the same result; the second is a
probability distribution.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..params import CRFParams

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """A named dense-CRF recipe.

    Attributes:
        name: the preset's name (``--preset NAME``).
        params: the terms, bandwidths and iterations (a :class:`densecrf.params.CRFParams`).
        maps: ``"probs"`` (``[H, W, K]`` maps) or ``"labels"`` (hard label maps with a confidence).
        scores: probability maps may be any scores in [0, 1] (``-log(clip(p, clip, 1))``,
            no check that they sum to one), as pydensecrf's ``unary_from_softmax`` takes them.
        clip: the lower bound of ``p`` before the logarithm (pydensecrf's 1e-5).
        gt_prob: the confidence given to a label map's labels (label presets).
        unknown: the label value meaning "unsure" (uniform), or None.
        source: where the recipe comes from.
    """

    name: str
    params: CRFParams
    maps: str = "probs"
    scores: bool = False
    clip: float = 1e-5
    gt_prob: float | None = None
    unknown: int | None = None
    source: str = ""

    def scaled(self, scale_factor: float) -> Preset:
        """The preset with both spatial bandwidths divided by ``scale_factor`` (psa's ``scale_factor``)."""
        s = float(scale_factor)
        if not math.isfinite(s) or s <= 0:
            raise ValueError(f"scale_factor must be a positive number, got {scale_factor!r}")
        if s == 1.0:
            return self
        p = dataclasses.replace(
            self.params, gaussian_sxy=self.params.gaussian_sxy / s, bilateral_sxy=self.params.bilateral_sxy / s
        )
        return dataclasses.replace(self, params=p)


PRESETS: dict[str, Preset] = {
    "psa": Preset(
        name="psa",
        params=CRFParams(
            n_iter=10,
            gaussian_sxy=3.0,
            gaussian_compat=3.0,
            bilateral_sxy=80.0,
            bilateral_srgb=13.0,
            bilateral_compat=10.0,
        ),
        maps="probs",
        scores=True,
        clip=1e-5,
        source="jiwoon-ahn/psa tool/imutils.py crf_inference (AffinityNet, CVPR 2018)",
    ),
    "irn": Preset(
        name="irn",
        params=CRFParams(
            n_iter=10,
            gaussian_sxy=3.0,
            gaussian_compat=3.0,
            bilateral_sxy=50.0,
            bilateral_srgb=5.0,
            bilateral_compat=10.0,
        ),
        maps="labels",
        gt_prob=0.7,
        unknown=None,
        source="jiwoon-ahn/irn misc/imutils.py crf_inference_label (IRN, CVPR 2019)",
    ),
    "deeplabv2-voc": Preset(
        name="deeplabv2-voc",
        params=CRFParams(
            n_iter=10,
            gaussian_sxy=1.0,
            gaussian_compat=3.0,
            bilateral_sxy=67.0,
            bilateral_srgb=3.0,
            bilateral_compat=4.0,
        ),
        maps="probs",
        clip=1e-5,
        source="DeepLab v2 ResNet-101 on VOC 2012 (kazuto1011/deeplab-pytorch configs/voc12.yaml)",
    ),
}


def get_preset(name, *, scale_factor: float = 1.0) -> Preset:
    """The preset called ``name`` (or ``name`` itself if it is a :class:`Preset`), scaled by ``scale_factor``."""
    if isinstance(name, Preset):
        preset = name
    else:
        try:
            preset = PRESETS[str(name)]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}") from None
    return preset.scaled(scale_factor)
