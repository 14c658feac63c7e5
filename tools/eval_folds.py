"""Score fold-protocol models (densecrf.models.folds) on CamVid PNGs, and save their probabilities.

    python tools/eval_folds.py --data ../shared/data/camvid --runs runs/folds runs/folds2 \
        --json benchmarks/results/folds_2026-12-04/scores.json [--probs /tmp/fold_probs A_strong B_strong]

For every run with a final.pt: mean IoU and pixel accuracy of its output on
its fold's held-out drive and on val (the network alone; the CRF-as-RNN
head's output for ``--head crf`` runs), at full resolution on the original
PNG frames (the GPU runs trained on JPEG copies and scored those; these are
the figures to report). ``--probs DIR RUN...`` also writes those runs'
softmax maps as float16 ``DIR/RUN/{heldout,val}/<stem>.npy`` for
``densecrf fit`` / ``densecrf refine``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from densecrf.metrics import SegmentationMetrics
from densecrf.models import camvid
from densecrf.models.deeplab import DeepLabCRF
from densecrf.models.folds import N_CLASSES, load_network, net_size_of, predict_logits
from densecrf.nn import CRFasRNN


def load_model(path):
    """(callable image -> logits, args) for a final.pt: the network, or network + CRF-as-RNN head."""
    ck = torch.load(path, map_location="cpu")
    net, a = load_network(path)
    if a.get("head") != "crf":
        size = net_size_of(a)
        return (lambda x: predict_logits(net, x, net_size=size)), a
    model = DeepLabCRF(N_CLASSES, a["width"], net_size=net_size_of(a), crf=CRFasRNN.from_params(ck["crf"], N_CLASSES))
    model.net = net
    crf_state = {k[len("crf.") :]: v.float() for k, v in ck["model"].items() if k.startswith("crf.")}
    model.crf.load_state_dict(crf_state)
    model.eval()
    return (lambda x: model(x, output="crf")), a


def frames(pairs):
    for image_path, label_path in pairs:
        image, labels = camvid.load_pair(image_path, label_path)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / 255.0
        yield os.path.splitext(os.path.basename(image_path))[0], x, labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="folders of run folders")
    ap.add_argument("--json", required=True)
    ap.add_argument("--probs", nargs="*", default=None, metavar="DIR RUN", help="DIR then the runs to save maps of")
    ap.add_argument("--only", nargs="*", default=None, help="score only these run names")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    scores = json.load(open(args.json)) if os.path.exists(args.json) else {}
    save_dir, save_runs = (args.probs[0], set(args.probs[1:])) if args.probs else (None, set())
    for root in args.runs:
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name, "final.pt")
            if not os.path.exists(path) or (args.only and name not in args.only):
                continue
            key = f"{os.path.basename(root.rstrip('/'))}/{name}"
            run, a = load_model(path)
            entry = {"args": {k: a.get(k) for k in ("fold", "arch", "recipe", "epochs", "sparse", "crf_loss", "head")}}
            t0 = time.time()
            for split in ("heldout", "val"):
                m = SegmentationMetrics(N_CLASSES, ignore_index=camvid.IGNORE_INDEX)
                pairs = camvid.fold_split(args.data, a["fold"], split)
                for stem, x, labels in frames(pairs):
                    with torch.no_grad():
                        logits = run(x)
                    m.update(logits.argmax(1)[0].numpy(), labels)
                    if name in save_runs:
                        d = os.path.join(save_dir, name, split)
                        os.makedirs(d, exist_ok=True)
                        p = torch.softmax(logits[0].float(), 0).permute(1, 2, 0).numpy().astype(np.float16)
                        np.save(os.path.join(d, stem + ".npy"), p)
                entry[split] = {
                    "miou": round(m.mean_iou(), 5),
                    "pixel_acc": round(m.pixel_accuracy(), 5),
                    "iou": [None if np.isnan(v) else round(float(v), 5) for v in m.iou()],
                    "frames": len(pairs),
                }
            entry["seconds"] = round(time.time() - t0, 1)
            scores[key] = entry
            print(
                f"{key}: held-out {100 * entry['heldout']['miou']:.1f}  val {100 * entry['val']['miou']:.1f}",
                flush=True,
            )
            tmp = args.json + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(scores, fh, indent=1)
            os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
