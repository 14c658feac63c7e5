"""``densecrf refine-panoptic IMAGE PROBS INSTANCES -o OUT.png --things C ...``: a COCO panoptic map from one CRF."""

from __future__ import annotations

import argparse
import os
import time

from .. import io
from ..instances import refine_panoptic
from .common import CLIError, check_folder_of
from .refine_instances import add_instance_flags, instance_params, read_instances


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "refine-panoptic",
        help="a COCO panoptic map from semantic probabilities and thing instances, refined by one dense CRF",
        description="One dense CRF over the stuff classes of PROBS ([H, W, K] .npy/.npz) and the thing "
        "instances of INSTANCES (COCO JSON or a folder of per-instance PNGs, as refine-instances; their "
        "category ids are class indices of PROBS). Writes COCO's panoptic form: OUT.png (segment id = R + 256 G "
        "+ 256^2 B, 0 void) and a JSON with segments_info (category_id, iscrowd 0, area, bbox).",
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("probs", metavar="PROBS", help="[H, W, K] class probabilities (.npy or .npz)")
    p.add_argument("instances", metavar="INSTANCES", help="COCO JSON file or folder of instance PNGs")
    p.add_argument("-o", "--output", required=True, help="panoptic PNG to write")
    p.add_argument("--json", default=None, help="segments_info JSON (default: OUTPUT with .json)")
    p.add_argument("--things", type=int, nargs="+", required=True, metavar="C", help="the thing class indices")
    p.add_argument("--image-id", type=int, default=None, help="which image of a JSON with several")
    p.add_argument("--stem", default=None, help="file stem of the instance PNGs (default: the image's)")
    add_instance_flags(p)
    p.set_defaults(func=run, mode=None)


def run(args: argparse.Namespace) -> int:
    from .. import coco

    t0 = time.perf_counter()
    image = io.read_image(args.image)
    probs = io.read_probs(args.probs, image.shape[:2])
    stem = args.stem or os.path.splitext(os.path.basename(args.image))[0]
    prm = instance_params(args)
    inst, _, iid = read_instances(args.instances, image.shape, image_id=args.image_id, stem=stem)
    k = probs.shape[2]
    bad = [c for c in args.things if not 0 <= c < k]
    if bad:
        raise CLIError(f"--things {bad[0]} is not a class index of PROBS (K = {k})")
    ids, info = refine_panoptic(image, probs, inst, args.things, params=prm, threads=args.threads, device=args.device)
    json_path = args.json or os.path.splitext(args.output)[0] + ".json"
    check_folder_of(args.output, "output")
    check_folder_of(json_path, "--json")
    image_id = iid if args.image_id is None else args.image_id
    coco.write_panoptic(args.output, json_path, ids, info, image_id=image_id, file_name=os.path.basename(args.output))
    n_things = sum(1 for s in info if s["isthing"])
    print(f"{args.output}: {len(info)} segments ({n_things} things) in {time.perf_counter() - t0:.2f} s")
    return 0
