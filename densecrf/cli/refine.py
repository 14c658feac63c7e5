"""``densecrf refine IMAGE PROBS -o OUT``: one image's probabilities (or labels) refined along its edges."""

from __future__ import annotations

import argparse
import os
import time

from .. import io
from ..crf import refine
from .common import CLIError, add_crf_flags, crf_params, describe

CLASSIC = "pydensecrf's classic parameters unless --params FILE is given; the flags override either"


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "refine",
        help="refine probabilities or labels along an image's edges",
        description="Refines PROBS ([H, W, K] probabilities in a .npy or .npz, or a label map: PNG or "
        "[H, W] integer .npy, with --n-labels and --gt-prob) along IMAGE's edges; "
        "writes labels (palette PNG) and probabilities (.npy).",
    )
    r.add_argument("image", help="RGB or grey image")
    r.add_argument("probs", help=".npy/.npz [H, W, K] probabilities, or a label PNG / [H, W] integer .npy")
    r.add_argument("-o", "--output", required=True, help="OUT.png and OUT.npy (give either name, or the stem OUT)")
    r.add_argument("--n-labels", type=int, default=None, help="K, for a label map")
    r.add_argument(
        "--gt-prob",
        type=float,
        default=0.5,
        help="confidence in a label map's labels, in (0, 1) (0.5; pydensecrf's gt_prob)",
    )
    r.add_argument("--unknown", type=int, default=None, help="label value meaning 'unknown' in a label map")
    r.add_argument("--palette", choices=("voc", "camvid"), default="voc", help="colours of the label PNG (voc)")
    add_crf_flags(r, CLASSIC)
    r.set_defaults(func=run)


def output_paths(out: str) -> tuple[str, str]:
    """(labels .png, probabilities .npy) from ``-o``: OUT.png, OUT.npy or a stem for both."""
    stem, ext = os.path.splitext(out)
    if ext.lower() not in (".png", ".npy"):
        stem = out
    if not os.path.isdir(os.path.dirname(os.path.abspath(stem))):
        raise CLIError(f"output folder does not exist: {os.path.dirname(out) or '.'}")
    return stem + ".png", stem + ".npy"


def run(args: argparse.Namespace) -> int:
    image = io.read_image(args.image, "IMAGE")
    probs = io.read_probs(
        args.probs, image.shape[:2], n_labels=args.n_labels, gt_prob=args.gt_prob, unknown=args.unknown, what="PROBS"
    )
    params = crf_params(args)
    png, npy = output_paths(args.output)
    if args.palette == "camvid":
        from ..models.camvid import PALETTE as palette
    else:
        palette = io.voc_palette()
    t = time.perf_counter()
    q = refine(image, probs, params=params, threads=args.threads)
    dt = time.perf_counter() - t
    io.write_labels(png, q.argmax(-1), palette)
    io.write_probs(npy, q)
    h, w, k = q.shape
    print(f"refined {w} x {h}, K={k}, {describe(params)} in {dt * 1e3:.0f} ms")
    print(f"wrote {png} (labels) and {npy} (probabilities [H, W, K] float32)")
    return 0
