"""Writes the bundled network's softmax maps on CamVid val, at full resolution.

For each val frame: the image resized to 240 x 180 (the network's training
size), the logits bilinearly resized back to 480 x 360, softmax over the 11
classes, saved as float16 ``[H, W, 11]`` to OUT/<stem>.npy.

    python tools/camvid_probs.py /work/shared/data/camvid /work/fitdata/probs [SPLIT [LIMIT]]

SPLIT is val (default) or train; LIMIT keeps the first frames by name.
"""

import os
import sys

import numpy as np
import torch

from densecrf.models import NET_SIZE, camvid, pretrained
from densecrf.models.deeplab import logits_at_size


def main(root: str, out: str, split: str = "val", limit: str | None = None) -> int:
    os.makedirs(out, exist_ok=True)
    net = pretrained()
    data = camvid.CamVid(root, split)
    if limit is not None:  # the first LIMIT frames by sorted name
        data.pairs = data.pairs[: int(limit)]
    with torch.no_grad():
        for i, (img_path, _) in enumerate(data.pairs):
            x, _ = data[i]
            logits = logits_at_size(net, x[None], NET_SIZE)  # at the frame's (= its labels') size
            probs = torch.softmax(logits[0], dim=0).permute(1, 2, 0).numpy()
            stem = os.path.splitext(os.path.basename(img_path))[0]
            np.save(os.path.join(out, stem + ".npy"), probs.astype(np.float16))
    print(f"wrote {len(data)} probability maps to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
