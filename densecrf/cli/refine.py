"""``densecrf refine IMAGE PROBS -o OUT``: one image's probabilities (or labels) refined along its edges;
``densecrf refine IMAGES PROBS -o OUT_DIR``: folders or globs matched by stem, through densecrf.dataset."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .. import io
from ..crf import refine
from .common import CLIError, add_crf_flags, crf_params, describe, flag_overrides

CLASSIC = "pydensecrf's classic parameters unless --params FILE is given; the flags override either"


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "refine",
        help="refine probabilities or labels along images' edges: one file or folders",
        description="Refines PROBS ([H, W, K] probabilities in a .npy or .npz, or a label map: PNG or "
        "[H, W] integer .npy, with --n-labels and --gt-prob) along IMAGE's edges. Two files: writes OUT.png "
        "(labels, palette PNG) and OUT.npy (probabilities). Two folders or globs (images and maps matched by "
        "file stem): writes OUT_DIR/<stem>.png per image, resumably, on the chosen executor; prints one line "
        "per failed item and a summary, and exits with status 1 when an item failed.",
    )
    r.add_argument("image", help="an image, or a folder or glob of images (IMAGES)")
    r.add_argument(
        "probs",
        help=".npy/.npz [H, W, K] probabilities or a label PNG / [H, W] integer .npy; or a folder or glob of them",
    )
    r.add_argument(
        "-o",
        "--output",
        required=True,
        help="one file: OUT.png and OUT.npy (give either name, or the stem OUT); folders: OUT_DIR",
    )
    r.add_argument("--n-labels", type=int, default=None, help="K, for a label map")
    r.add_argument(
        "--gt-prob",
        type=float,
        default=None,
        help="confidence in a label map's labels, in (0, 1) (0.5, or the preset's; pydensecrf's gt_prob)",
    )
    r.add_argument("--unknown", type=int, default=None, help="label value meaning 'unknown' in a label map")
    r.add_argument("--palette", choices=("voc", "camvid"), default="voc", help="colours of the label PNG (voc)")
    ds = r.add_argument_group("folders and globs (densecrf.dataset; see docs/datasets.md)")
    ds.add_argument(
        "--preset",
        choices=("psa", "irn", "deeplabv2-voc"),
        default=None,
        help="a published pipeline's CRF call (its parameters; the CRF flags override them)",
    )
    ds.add_argument(
        "--scale-factor", type=float, default=1.0, help="divides both spatial bandwidths (psa's scale_factor; 1)"
    )
    ds.add_argument(
        "--executor",
        choices=("local", "cuda", "dask", "ray"),
        default="local",
        help="local: this machine's cores (default); cuda: batches on a GPU; dask, ray: a cluster",
    )
    ds.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes on this machine (default: one per core), or tasks in flight on dask or ray",
    )
    ds.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="a Dask scheduler or Ray cluster address (default: start a local one for the run)",
    )
    ds.add_argument("--device", default=None, help="the cuda executor's device (cuda)")
    ds.add_argument("--batch-size", type=int, default=None, help="the cuda executor's images per batch (8)")
    ds.add_argument(
        "--save-probs",
        nargs="?",
        const="float32",
        choices=("float16", "float32"),
        default=None,
        help="also write OUT_DIR/<stem>.npy refined probabilities (float32, or float16)",
    )
    ds.add_argument(
        "--png-level",
        type=int,
        default=6,
        choices=range(10),
        metavar="0..9",
        help="zlib level of the written PNGs (6, Pillow's default; 1 writes faster, larger files)",
    )
    ds.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip images done by an earlier run with the same inputs and parameters (default)",
    )
    ds.add_argument("--dry-run", action="store_true", help="list what would be done; read and write nothing")
    ds.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when it is a terminal)",
    )
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
    many = [os.path.isdir(p) or bool(set("*?[") & set(p)) for p in (args.image, args.probs)]
    if all(many):
        return run_dataset(args)  # folders or globs: one <stem>.png per image in -o
    if any(many):
        one, other = ("IMAGE", "PROBS") if many[0] else ("PROBS", "IMAGE")
        raise CLIError(
            f"{one} is a folder (or glob) but {other} is not: give two folders or globs "
            "(one <stem>.png per image), or two files"
        )
    for flag in ("workers", "scheduler", "preset", "save_probs", "dry_run"):
        if getattr(args, flag, None) not in (None, False):
            raise CLIError(
                f"--{flag.replace('_', '-')} is for folders or globs; IMAGE and PROBS are single files "
                "(-o OUT writes OUT.png and OUT.npy)"
            )
    if args.gt_prob is None:
        args.gt_prob = 0.5
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


def run_dataset(args: argparse.Namespace) -> int:
    """``densecrf refine IMAGES PROBS -o OUT_DIR``: folders or globs matched by stem (densecrf.dataset)."""
    from ..dataset import refine_dataset

    if args.executor != "cuda" and (args.device is not None or args.batch_size is not None):
        raise CLIError("--device and --batch-size are for --executor cuda")
    if args.scheduler is not None and args.executor not in ("dask", "ray"):
        raise CLIError("--scheduler is for --executor dask or ray")
    over = flag_overrides(args)
    if args.params is not None:
        io.check_file(args.params, "params file")
    summary = refine_dataset(
        args.image,
        args.probs,
        args.output,
        preset=args.preset,
        params=args.params,
        executor=args.executor,
        workers=args.workers,
        scheduler=args.scheduler,
        threads=args.threads or 1,
        device=args.device or "cuda",
        batch_size=args.batch_size or 8,
        save_probs=args.save_probs,
        palette=args.palette,
        png_level=args.png_level,
        n_labels=args.n_labels,
        gt_prob=args.gt_prob,
        unknown=args.unknown,
        scale_factor=args.scale_factor,
        resume=args.resume,
        dry_run=args.dry_run,
        progress=args.progress,
        **over,
    )
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        for key, action, detail in summary.planned:
            print(f"{action:6s} {key}: {detail}")
        print(summary.line())
        return 0
    for _key, path, reason in summary.failed:
        print(f"densecrf refine: failed: {path}: {reason}", file=sys.stderr)
    print(summary.line())
    return 0 if summary.ok else 1
