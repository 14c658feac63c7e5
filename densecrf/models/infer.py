"""Running the bundled networks on numpy images: softmax maps and CRF-as-RNN labels.

Images are ``[H, W, 3]`` uint8 RGB as :func:`densecrf.io.read_image` returns
them; the networks see ``[1, 3, H, W]`` float tensors in 0..1. Importing this
module does not import torch; every function does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import models as _models  # read at call time: tests and callers may point CRF_WEIGHTS elsewhere

__all__ = ["as_tensor", "crf_rnn_labels", "crf_rnn_model", "network_probs", "one_torch_thread"]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread inside, its previous setting restored after.

    The networks see a 240 x 180 input, too small to gain from torch's thread
    pool, and on a busy machine its spinning threads cost far more than they
    give: measured beside two CPU-bound jobs on the project's 2-core machine,
    the network took 0.2 s on one thread and 0.7 s on two, the whole
    CRF-as-RNN model 0.7 s and 2.5 s. The dense CRF's own (native) threads
    are not affected.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def as_tensor(image: np.ndarray) -> Any:
    """``[H, W, 3]`` uint8 -> ``[1, 3, H, W]`` float32 tensor in 0..1."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / 255.0


def network_probs(net: Any, image: np.ndarray, net_size: tuple[int, int] | None = _models.NET_SIZE) -> np.ndarray:
    """``[H, W, K]`` float32 softmax of ``net`` run on ``image`` resized to ``net_size`` = (W, H).

    The logits are resized back to the image's size before the softmax
    (:func:`densecrf.models.deeplab.logits_at_size`).
    """
    import torch

    from .deeplab import logits_at_size

    with torch.no_grad(), one_torch_thread():
        logits = logits_at_size(net, as_tensor(image), net_size)
        return torch.softmax(logits, 1)[0].permute(1, 2, 0).contiguous().numpy()


def crf_rnn_labels(model: Any, image: np.ndarray) -> np.ndarray:
    """``[H, W]`` int64 labels of a :class:`~densecrf.models.DeepLabCRF` on a uint8 image."""
    import torch

    with torch.no_grad(), one_torch_thread():
        return model(as_tensor(image), output="crf")[0].argmax(0).numpy()


def crf_rnn_model() -> Any:
    """``pretrained(crf=True)`` when its weights are bundled, else None (the caller says it skipped it)."""
    if not os.path.exists(_models.CRF_WEIGHTS):
        return None
    return _models.pretrained(crf=True)
