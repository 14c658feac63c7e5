"""``densecrf demo``: the bundled network, the dense CRF and CRF-as-RNN on a bundled CamVid frame; one figure."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from .. import io, models
from .._version import __version__
from ..crf import refine
from ..metrics import SegmentationMetrics
from ..models import camvid
from .common import add_crf_flags, check_folder_of, crf_params, describe, need

_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
DEMO_IMAGE = os.path.join(_DATA, "camvid_0016E5_08093.png")
DEMO_LABELS = os.path.join(_DATA, "camvid_0016E5_08093_labels.png")
DEMO_FIGSIZE, DEMO_DPI = (10.0, 8.4), 100  # inches, dots per inch: a 1000 x 840 PNG

FITTED = (
    "the parameters fitted to the bundled network (densecrf/models/weights/crf_params_camvid.json) when the "
    "package has them, else pydensecrf's classic ones; --params FILE replaces them; the flags override either"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "demo",
        help="bundled network + dense CRF on a bundled CamVid frame; writes a figure",
        description="Runs the bundled network, the dense CRF and (when its weights are bundled) the CRF-as-RNN "
        "model on a bundled CamVid frame; writes one PNG and prints the scores and timings.",
    )
    d.add_argument("-o", "--output", default="densecrf_demo.png", help="figure to write (densecrf_demo.png)")
    d.add_argument("--no-crf-rnn", action="store_true", help="skip the CRF-as-RNN model")
    add_crf_flags(d, FITTED)
    d.set_defaults(func=run)


def overlay(labels: np.ndarray, image: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """label2rgb with a fixed class -> colour map (it colours the labels present, in sorted order).

    ``image`` is the underlay: RGB (label2rgb greys it) or, cheaper when
    several overlays share it, already grey.
    """
    from skimage.color import label2rgb

    present = np.unique(labels)
    return label2rgb(
        labels,
        image=image,
        colors=[tuple(palette[c] / 255.0) for c in present],
        alpha=0.75,
        bg_label=-1,
        image_alpha=1,
        kind="overlay",
        saturation=0,
    )


def _scores(pred: np.ndarray, truth: np.ndarray) -> str:
    m = SegmentationMetrics(len(camvid.CLASSES), ignore_index=camvid.IGNORE_INDEX)
    m.update(pred, truth)
    return f"pixel accuracy {100 * m.pixel_accuracy():.1f} %, mean IoU {100 * m.mean_iou():.1f} %"


def run(args: argparse.Namespace) -> int:
    check_folder_of(args.output, "output")
    params = crf_params(args, models.CRF_PARAMS)
    timings = {}
    t = time.perf_counter()
    need("torch")
    from ..models import infer

    net = models.pretrained()
    timings["import torch, load network"] = time.perf_counter() - t

    t = time.perf_counter()
    image = io.read_image(DEMO_IMAGE, "demo image")
    truth = io.read_labels(DEMO_LABELS) if os.path.exists(DEMO_LABELS) else None
    timings["read image"] = time.perf_counter() - t
    t = time.perf_counter()
    probs = infer.network_probs(net, image, models.NET_SIZE)
    net_labels = probs.argmax(-1)
    timings["network (240 x 180)"] = time.perf_counter() - t

    t = time.perf_counter()
    crf_labels = refine(image, probs, params=params, threads=args.threads).argmax(-1)
    timings["dense CRF"] = time.perf_counter() - t

    rnn_labels = None
    if not args.no_crf_rnn:
        t = time.perf_counter()
        model = infer.crf_rnn_model()
        if model is None:
            print(f"note: CRF-as-RNN skipped: its weights are not bundled ({os.path.basename(models.CRF_WEIGHTS)})")
        else:
            rnn_labels = infer.crf_rnn_labels(model, image)
            timings["CRF-as-RNN"] = time.perf_counter() - t

    t = time.perf_counter()
    _draw(args.output, image, net_labels, crf_labels, rnn_labels, params.n_iter)
    timings["figure (matplotlib)"] = time.perf_counter() - t

    h, w = image.shape[:2]
    print(
        f"densecrf {__version__}: CamVid frame {w} x {h}, {len(camvid.CLASSES)} classes; dense CRF: {describe(params)}"
    )
    if truth is not None:
        print(f"  network:             {_scores(net_labels, truth)}")
        print(f"  network + dense CRF: {_scores(crf_labels, truth)}")
        if rnn_labels is not None:
            print(f"  CRF-as-RNN:          {_scores(rnn_labels, truth)}")
    for name, dt in timings.items():
        print(f"  {name:<28s} {dt * 1e3:8.0f} ms")
    print(f"  {'total':<28s} {(time.perf_counter() - args.t_start) * 1e3:8.0f} ms")
    print(f"wrote {args.output}")
    return 0


def _draw(
    path: str,
    image: np.ndarray,
    net_labels: np.ndarray,
    crf_labels: np.ndarray,
    rnn_labels: np.ndarray | None,
    n_iter: int,
) -> None:
    need("matplotlib")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from skimage.color import rgb2gray

    pal, grey = camvid.PALETTE, rgb2gray(image)
    panels: list[tuple[Any, str]] = [
        (image, "image"),
        (overlay(net_labels, grey, pal), "network (DeepLabLite)"),
        (overlay(crf_labels, grey, pal), f"network + dense CRF ({n_iter} iterations)"),
    ]
    if rnn_labels is not None:
        panels.append((overlay(rnn_labels, grey, pal), "CRF-as-RNN (fine-tuned)"))
    fig = Figure(figsize=DEMO_FIGSIZE, dpi=DEMO_DPI)
    axes = fig.subplots(2, 2)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.96, bottom=0.1, wspace=0.03, hspace=0.1)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i < len(panels):
            ax.imshow(panels[i][0])
            ax.set_title(panels[i][1], fontsize=11)
        else:
            ax.text(
                0.5,
                0.5,
                "CRF-as-RNN: weights not bundled\nin this version",
                ha="center",
                va="center",
                fontsize=11,
                color="0.4",
                transform=ax.transAxes,
            )
    handles = [Patch(facecolor=pal[i] / 255.0, edgecolor="0.3", label=name) for i, name in enumerate(camvid.CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=10, frameon=False)
    fig.savefig(path, dpi=DEMO_DPI)
