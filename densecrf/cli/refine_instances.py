"""``densecrf refine-instances IMAGE INSTANCES -o OUT``: instance masks refined by one dense CRF.

INSTANCES is COCO-style JSON (a results list, or a dataset with
``"annotations"``; RLE or polygon masks, read through pycocotools) or a
folder of per-instance PNGs (``<stem>_<k>.png`` and ``<stem>_instances.json``,
see :func:`densecrf.coco.write_instance_pngs`). The output is written in the
same form: a COCO results JSON, or a folder of PNGs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from .. import io
from ..instances import InstanceParams, refine_instances
from .common import CLIError, check_folder_of


def add_instance_flags(p: argparse.ArgumentParser) -> None:
    """The instance CRF's flags, shared with refine-panoptic."""
    p.add_argument(
        "--params",
        metavar="FILE",
        default=None,
        help="InstanceParams JSON (what densecrf.fit_instances saves); default: the library's defaults",
    )
    p.add_argument("--n-iter", type=int, default=None, help="mean-field iterations (overrides --params)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="native threads (default: all cores)")


def instance_params(args: argparse.Namespace) -> InstanceParams:
    if args.params is not None:
        io.check_file(args.params, "--params file")
        prm = InstanceParams.load(args.params)
    else:
        prm = InstanceParams()
    if args.n_iter is not None:
        if args.n_iter < 0:
            raise CLIError(f"--n-iter must be >= 0, got {args.n_iter}")
        prm = prm.replace(n_iter=args.n_iter)
    if getattr(args, "mode", None):
        prm = prm.replace(mode=args.mode)
    return prm


def read_instances(path: str, image_shape, *, image_id=None, stem: str | None = None) -> tuple[dict, str, object]:
    """(instances dict with masks [M, H, W], scores, classes; 'json' or 'png'; the image id) from a JSON file or a PNG folder."""
    from .. import coco

    if os.path.isdir(path):
        if stem is None:
            raise CLIError("a folder of instance PNGs needs the image's stem (--stem)")
        inst = coco.read_instance_pngs(path, stem)
        fmt, iid = "png", None
    else:
        io.check_file(path, "instances file")
        try:
            import pycocotools  # noqa: F401
        except ImportError:
            raise CLIError("COCO JSON instances need pycocotools: pip install 'densecrf[coco]'") from None
        by_image = coco.read_instances_json(path, image_id)
        if image_id is None and len(by_image) > 1:
            raise CLIError(f"{path} holds instances of {len(by_image)} images: pick one with --image-id")
        if not by_image:
            raise CLIError(f"{path} holds no instances" + (f" of image id {image_id}" if image_id is not None else ""))
        iid, inst = next(iter(by_image.items()))
        fmt = "json"
    m = inst["masks"]
    if m.shape[0] and m.shape[1:] != tuple(image_shape[:2]):
        raise CLIError(
            f"instance masks in {path} are {m.shape[1]} x {m.shape[2]} but the image is "
            f"{image_shape[0]} x {image_shape[1]}"
        )
    if not m.shape[0]:
        m = np.zeros((0, *image_shape[:2]), dtype=np.float32)
    return {"masks": m, "scores": inst["scores"], "classes": inst["classes"]}, fmt, iid


def write_instances(out: str, fmt: str, stem: str, masks, scores, classes, image_id) -> None:
    from .. import coco

    if fmt == "png":
        coco.write_instance_pngs(out, stem, masks, scores, classes)
    else:
        check_folder_of(out, "output")
        coco.write_instances_json(out, [{"image_id": image_id, "masks": masks, "scores": scores, "classes": classes}])


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "refine-instances",
        help="refine instance masks (COCO JSON or per-instance PNGs) with one dense CRF",
        description="Refines the instance masks of one image with a dense CRF whose labels are background plus "
        "the instances (--mode joint: overlaps resolved, each pixel in at most one instance) or each mask against "
        "its surroundings (--mode binary). INSTANCES: a COCO JSON (results list or dataset; RLE or polygons) or a "
        "folder of per-instance PNGs <stem>_<k>.png (+ <stem>_instances.json with scores and classes). The "
        "output has the input's form. Soft PNG masks give the CRF more to work with than binary RLE.",
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("instances", metavar="INSTANCES", help="COCO JSON file or folder of instance PNGs")
    p.add_argument("-o", "--output", required=True, help="output JSON file (JSON input) or folder (PNG input)")
    p.add_argument("--mode", choices=("joint", "binary"), default=None, help="overrides --params' mode")
    p.add_argument("--image-id", type=int, default=None, help="which image of a JSON with several")
    p.add_argument("--stem", default=None, help="file stem of the instance PNGs (default: the image's)")
    add_instance_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    image = io.read_image(args.image)
    stem = args.stem or os.path.splitext(os.path.basename(args.image))[0]
    prm = instance_params(args)
    inst, fmt, iid = read_instances(args.instances, image.shape, image_id=args.image_id, stem=stem)
    res = refine_instances(image, inst["masks"], inst["scores"], params=prm, threads=args.threads, device=args.device)
    write_instances(
        args.output,
        fmt,
        stem,
        res.masks,
        inst["scores"],
        inst["classes"],
        iid if args.image_id is None else args.image_id,
    )
    kept = int(res.masks.any(axis=(1, 2)).sum())
    print(
        f"{args.output}: {res.masks.shape[0]} instances refined ({prm.mode}; {kept} non-empty) in "
        f"{time.perf_counter() - t0:.2f} s"
    )
    return 0
