"""A DeepLab-style segmentation network with a CRF-as-RNN head, and its CamVid pipeline.

Work in progress (issue 5): the network, the data pipeline and the training
loop are here; trained weights are not shipped yet.
"""

from .deeplab import DeepLabCRF, DeepLabLite

__all__ = ["DeepLabCRF", "DeepLabLite"]
