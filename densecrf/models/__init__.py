"""A DeepLab-style segmentation network with a CRF-as-RNN head, and its CamVid pipeline.

Work in progress (issue 5): the network, the data pipeline, the training
loop and the network's CamVid weights (``pretrained()``) are here; the
CRF-as-RNN fine-tune is not trained yet.
"""

import os

from .deeplab import DeepLabCRF, DeepLabLite

WEIGHTS = os.path.join(os.path.dirname(__file__), "weights", "deeplab_camvid_w32.pt")


def pretrained():
    """DeepLabLite with the bundled CamVid weights (11 classes, eval mode).

    Trained on the CamVid train split at 240 x 180 (see weights/README.md):
    feed images resized to 240 x 180 and resize the logits back, as
    ``densecrf.models.train.evaluate(..., input_size=(240, 180))`` does.
    """
    import torch

    ck = torch.load(WEIGHTS, map_location="cpu")
    net = DeepLabLite(11, ck["args"]["width"])
    net.load_state_dict(ck["model"])
    return net.eval()


__all__ = ["DeepLabCRF", "DeepLabLite", "WEIGHTS", "pretrained"]
