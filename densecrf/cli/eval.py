"""``densecrf eval DATA_DIR``: metrics of a network, network + dense CRF and CRF-as-RNN on a CamVid-like folder."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from .. import io, models
from ..crf import refine
from ..metrics import SegmentationMetrics
from ..models import camvid
from ..params import CRFParams
from .common import CLIError, add_crf_flags, crf_params, describe, need

DEFAULTS = (
    "Without --params: for the bundled network, the parameters fitted to it "
    "(densecrf/models/weights/crf_params_camvid.json, when the package has them, else pydensecrf's classic ones); "
    "with --probs (another model's maps), pydensecrf's classic parameters (gaussian sxy 3 compat 3, bilateral "
    "sxy 80 srgb 13 compat 10, 5 iterations), since the fitted ones suit only the network they were fitted to. "
    "--params FILE replaces either; the flags below override single values."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "eval",
        help="metrics of network, network + CRF and CRF-as-RNN on a CamVid-like folder",
        description="Mean IoU, accuracies and a per-class IoU table of the bundled network (or of --probs "
        "maps), of it + the dense CRF, and of the CRF-as-RNN model, on DATA_DIR/SPLIT and "
        "DATA_DIR/SPLITannot (CamVid layout, 11 classes).",
    )
    e.add_argument("data_dir", metavar="DATA_DIR")
    e.add_argument("--split", default="val", help="subfolder of images (val); labels in SPLITannot")
    e.add_argument(
        "--probs",
        metavar="DIR",
        default=None,
        help="evaluate these [H, W, 11] maps (.npy or .npz named like the images) as the network; "
        "the dense CRF then uses pydensecrf's classic parameters unless --params is given",
    )
    e.add_argument("--save-probs", metavar="DIR", default=None, help="save the network's softmax maps here")
    e.add_argument(
        "--probs-dtype", choices=("float32", "float16"), default="float32", help="dtype of the saved maps (float32)"
    )
    e.add_argument("--limit", type=int, default=0, help="first N images only")
    e.add_argument("--no-crf", action="store_true", help="skip the dense CRF")
    e.add_argument("--no-crf-rnn", action="store_true", help="skip the CRF-as-RNN model")
    e.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when it is a terminal)",
    )
    add_crf_flags(e, DEFAULTS)
    e.set_defaults(func=run)


def _pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    if not os.path.isdir(args.data_dir):
        raise CLIError(f"DATA_DIR not found: {args.data_dir}")
    try:
        pairs = camvid.list_split(args.data_dir, args.split)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    if args.limit < 0:
        raise CLIError(f"--limit must be >= 0, got {args.limit}")
    if args.limit:
        pairs = pairs[: args.limit]
    if not pairs:
        raise CLIError(f"{os.path.join(args.data_dir, args.split)} holds no .png images")
    return pairs


def eval_params(args: argparse.Namespace) -> CRFParams | None:
    """The dense CRF's parameters as DEFAULTS says; None with --no-crf."""
    if args.no_crf:
        return None
    # The bundled fitted parameters belong to the bundled network: another model's maps get the classic ones.
    return crf_params(args, None if args.probs else models.CRF_PARAMS)


def run(args: argparse.Namespace) -> int:
    pairs = _pairs(args)
    if args.probs and not os.path.isdir(args.probs):
        raise CLIError(f"--probs folder not found: {args.probs}")
    if args.save_probs:
        if args.probs:
            raise CLIError("--save-probs and --probs exclude each other (the maps would be copied unchanged)")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.save_probs))):
            raise CLIError(f"the folder that should hold --save-probs does not exist: {args.save_probs}")
    params = eval_params(args)
    if params is not None and params.info.get("provenance"):
        # fitted parameters: say on what, so that scores on those same frames are read as optimistic
        print(f"note: dense CRF parameters fitted by {params.info['provenance']}")
    elif params is not None and args.probs and not args.params:
        print("note: dense CRF with pydensecrf's classic parameters (--params FILE for others)")
    n, ignore = len(camvid.CLASSES), camvid.IGNORE_INDEX

    net = model = None
    if not args.probs:
        need("torch")
        from ..models import infer

        net = models.pretrained()
        if not args.no_crf_rnn:
            model = infer.crf_rnn_model()
            if model is None:
                print(f"note: CRF-as-RNN skipped: its weights are not bundled ({os.path.basename(models.CRF_WEIGHTS)})")
    else:
        print("note: CRF-as-RNN skipped: --probs evaluates another model's maps")
    if args.save_probs:
        os.makedirs(args.save_probs, exist_ok=True)
    rows = {"network": SegmentationMetrics(n, ignore_index=ignore)}
    if params is not None:
        rows["network + dense CRF"] = SegmentationMetrics(n, ignore_index=ignore)
    if model is not None:
        rows["CRF-as-RNN"] = SegmentationMetrics(n, ignore_index=ignore)
    seconds = dict.fromkeys(rows, 0.0)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    # tqdm only when a bar is shown: without a terminal (or with --no-progress) eval does not need it.
    bar = (need("tqdm").tqdm if show else _NoBar)(total=len(pairs), file=sys.stderr, unit="image")
    try:
        for ip, lp in pairs:
            name = os.path.splitext(os.path.basename(ip))[0]
            _one(args, ip, lp, name, rows, seconds, net, model, params)
            bar.set_postfix_str(name, refresh=False)
            bar.update(1)
    finally:  # an error then starts on a line of its own
        bar.close()
    _print_table(rows, seconds, len(pairs), args, params)
    return 0


class _NoBar:
    """The part of tqdm's interface eval uses, doing nothing."""

    def __init__(self, **_: Any) -> None:
        pass

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _probs_file(folder: str, name: str) -> str:
    for ext in io.PROB_EXTS:
        path = os.path.join(folder, name + ext)
        if os.path.exists(path):
            return path
    raise CLIError(f"probability map of {name} not found: {os.path.join(folder, name + '.npy')}")


def _one(
    args: argparse.Namespace,
    ip: str,
    lp: str,
    name: str,
    rows: dict[str, SegmentationMetrics],
    seconds: dict[str, float],
    net: Any,
    model: Any,
    params: CRFParams | None,
) -> None:
    n, ignore = len(camvid.CLASSES), camvid.IGNORE_INDEX
    image, truth = io.read_image(ip, "image"), io.read_labels(lp)
    if image.shape[:2] != truth.shape:
        raise CLIError(
            f"{ip} is {image.shape[0]} x {image.shape[1]} but its labels are {truth.shape[0]} x {truth.shape[1]}"
        )
    if truth.size and (truth.min() < 0 or truth.max() > ignore):
        raise CLIError(f"{lp} has label {int(truth.max())} outside [0, {n}) and not the ignore index {ignore}")
    t = time.perf_counter()
    if args.probs:
        path = _probs_file(args.probs, name)
        probs = io.read_npy(path, "probabilities")
        if probs.shape != (*truth.shape, n):
            raise CLIError(
                f"{path} has shape {probs.shape}, expected {(*truth.shape, n)} ([H, W, K] of the "
                f"image and its {n} classes)"
            )
    else:
        from ..models import infer

        probs = infer.network_probs(net, image, models.NET_SIZE)
        if args.save_probs:
            io.write_probs(os.path.join(args.save_probs, name + ".npy"), probs, args.probs_dtype)
    seconds["network"] += time.perf_counter() - t
    rows["network"].update(probs.argmax(-1), truth)
    if params is not None:
        t = time.perf_counter()
        try:
            q = refine(image, probs, params=params, threads=args.threads)
        except ValueError as exc:
            raise CLIError(f"{name}: {str(exc).splitlines()[0]}") from None
        seconds["network + dense CRF"] += time.perf_counter() - t
        rows["network + dense CRF"].update(q.argmax(-1), truth)
    if model is not None:
        from ..models import infer

        t = time.perf_counter()
        rows["CRF-as-RNN"].update(infer.crf_rnn_labels(model, image), truth)
        seconds["CRF-as-RNN"] += time.perf_counter() - t


def _print_table(
    rows: dict[str, SegmentationMetrics],
    seconds: dict[str, float],
    n_images: int,
    args: argparse.Namespace,
    params: CRFParams | None,
) -> None:
    src = args.probs or "bundled DeepLabLite"
    print(f"{args.data_dir} / {args.split}: {n_images} images; network: {src}")
    if params is not None:
        print(f"dense CRF: {describe(params)}")
    names = list(rows)
    width = max(14, *(len(c) for c in camvid.CLASSES))
    cols = [max(10, len(nm)) for nm in names]
    print(f"{'IoU %':<{width}s} " + " ".join(f"{nm:>{c}s}" for nm, c in zip(names, cols, strict=True)))
    ious = {nm: rows[nm].iou() for nm in names}
    for k, cls in enumerate(camvid.CLASSES):
        print(f"{cls:<{width}s} " + " ".join(f"{100 * ious[nm][k]:>{c}.1f}" for nm, c in zip(names, cols, strict=True)))
    for label, fn in (
        ("mean IoU", "mean_iou"),
        ("pixel accuracy", "pixel_accuracy"),
        ("class accuracy", "mean_class_accuracy"),
    ):
        vals = (100 * getattr(rows[nm], fn)() for nm in names)
        print(f"{label:<{width}s} " + " ".join(f"{v:>{c}.1f}" for v, c in zip(vals, cols, strict=True)))
    per_image = (seconds[nm] / max(n_images, 1) for nm in names)
    print(f"{'s / image':<{width}s} " + " ".join(f"{s:>{c}.3f}" for s, c in zip(per_image, cols, strict=True)))
    if args.save_probs:
        print(f"wrote {n_images} probability maps to {args.save_probs}")
