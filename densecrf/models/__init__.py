"""A DeepLab-style segmentation network with a CRF-as-RNN head, and its CamVid pipeline.

Importing this package or ``densecrf.models.camvid`` does not import torch;
the networks and ``pretrained()`` do. ``pretrained()`` gives the network with its bundled CamVid weights;
``pretrained(crf=True)`` the network with its CRF-as-RNN head, fine-tuned
end to end (``CRF_WEIGHTS``; see weights/README.md).
"""

import os

_HERE = os.path.join(os.path.dirname(__file__), "weights")
WEIGHTS = os.path.join(_HERE, "deeplab_camvid_w32.pt")
CRF_WEIGHTS = os.path.join(_HERE, "deeplab_crf_camvid_w32.pt")
CRF_PARAMS = os.path.join(_HERE, "crf_params_camvid.json")  # dense-CRF parameters fitted on CamVid, if bundled
NET_SIZE = (240, 180)  # (W, H) the bundled network was trained at


def pretrained(crf: bool = False, path: str | None = None):
    """A model with bundled CamVid weights (11 classes, eval mode, on the CPU).

    ``crf=False``: :class:`DeepLabLite`, trained on the CamVid train split at
    240 x 180 (see weights/README.md): feed images resized to ``NET_SIZE``
    and resize the logits back, as ``densecrf.models.train.evaluate(...,
    input_size=(240, 180))`` does.

    ``crf=True``: :class:`DeepLabCRF`, the network fine-tuned with its
    CRF-as-RNN head (``python -m densecrf.models.train --crf``): it resizes
    the image for the network itself and runs the CRF at full resolution;
    call it on ``[B, 3, H, W]`` images in 0..1. Raises FileNotFoundError when
    those weights are not bundled.

    ``path`` loads another checkpoint of the same layout instead (a dict with
    ``"model"``, the state dict, and ``"args"``, the training arguments).
    """
    import torch

    from .deeplab import DeepLabCRF, DeepLabLite

    path = path or (CRF_WEIGHTS if crf else WEIGHTS)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no weights at {path}" + (": the CRF-as-RNN weights are not bundled in this version" if crf else "")
        )
    ck = torch.load(path, map_location="cpu")
    a = ck["args"]
    if crf:
        model = DeepLabCRF.from_training_args(11, a, ck.get("crf_init"))
    else:
        model = DeepLabLite(11, a["width"])
    model.load_state_dict(ck["model"])
    return model.eval()


def __getattr__(name):
    # The networks import torch; the paths above and densecrf.models.camvid do not.
    if name in ("DeepLabCRF", "DeepLabLite"):
        from . import deeplab

        return getattr(deeplab, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CRF_PARAMS", "CRF_WEIGHTS", "NET_SIZE", "WEIGHTS", "DeepLabCRF", "DeepLabLite", "pretrained"]
