"""``densecrf fit IMAGES PROBS LABELS -o params.json``: dense-CRF parameters fitted to a model (densecrf.fit)."""

from __future__ import annotations

import argparse
import warnings

from ..fit import COMPATS, LOSSES, SEARCHES, describe, fit, format_table, match_folders, read_matched
from .common import check_folder_of

_D = " (default: %(default)s)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "fit",
        help="learn CRF parameters for a model from labelled images (JSON out)",
        description="Fits dense-CRF parameters to a model from folders of images, probability maps "
        "(.npy or .npz, [H, W, K]) and label PNGs matched by file stem: every image needs its map and its "
        "labels; maps and labels without an image are left out. See densecrf.fit for the method.",
    )
    f.add_argument("images", help="folder of images (PNG/JPEG)")
    f.add_argument("probs", help="folder of probability maps, <stem>.npy or .npz of shape [H, W, K]")
    f.add_argument("labels", help="folder of label images, <stem>.png, one class index per pixel")
    f.add_argument("-o", "--output", required=True, help="parameter file to write (JSON)")
    f.add_argument(
        "--ignore-index", type=int, default=None, help="label value left out of the loss and scores (default: none)"
    )
    f.add_argument(
        "--search",
        choices=SEARCHES,
        default="gradient",
        help="gradient: the grid, then gradient descent from its best point (needs torch); grid; random" + _D,
    )
    f.add_argument("--holdout", type=float, default=0.3, help="fraction of the images held out for selection" + _D)
    f.add_argument(
        "--compat",
        choices=COMPATS,
        default="potts",
        help="what gradient descent learns: one weight per term, per term and class, or a [K, K] matrix" + _D,
    )
    f.add_argument(
        "--loss", choices=LOSSES, default="ce", help="gradient descent's loss: cross-entropy, or plus 1 - soft IoU" + _D
    )
    f.add_argument(
        "--unbalanced",
        action="store_true",
        help="plain cross-entropy (default: classes weighted by 1 / sqrt(frequency))",
    )
    f.add_argument("--crop", type=int, default=160, help="side of gradient descent's random crops, in pixels" + _D)
    f.add_argument("--iters", type=int, default=5, help="mean-field iterations" + _D)
    f.add_argument("--steps", type=int, default=80, help="gradient descent's Adam steps (at most)" + _D)
    f.add_argument("--batch", type=int, default=2, help="crops per step" + _D)
    f.add_argument("--lr", type=float, default=0.03, help="learning rate" + _D)
    f.add_argument("--n-random", type=int, default=24, help="points of --search random" + _D)
    f.add_argument("--seed", type=int, default=0, help="seed of the split, the crops and the random points" + _D)
    f.add_argument("--threads", type=int, default=None, help="native threads (default: all cores)")
    f.add_argument("-q", "--quiet", action="store_true", help="print only the final table")
    f.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_folder_of(args.output, "output")
    match = match_folders(args.images, args.probs, args.labels)
    for what, n in match.unused.items():
        if n:
            print(f"note: {n} file{'s' if n != 1 else ''} of the {what} folder without an image left out")
    names, images, probs, labels = read_matched(match)
    # fit's warnings are in params.info["warnings"], which the table below prints (one line each)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", category=UserWarning, module=r"densecrf\.cli\.fit"
        )  # fit() warns at its caller, _fit
        params = _fit(args, images, probs, labels)
    params.info["heldout_names"] = [names[i] for i in params.info["heldout_indices"]]
    params.save(args.output)
    if args.quiet:
        print(format_table(params.info))
    print(f"wrote {args.output}: {describe(params)}")
    return 0


def _fit(args, images, probs, labels):
    return fit(
        images,
        probs,
        labels,
        ignore_index=args.ignore_index,
        search=args.search,
        holdout=args.holdout,
        compat=args.compat,
        loss=args.loss,
        balanced=not args.unbalanced,
        crop=args.crop,
        n_iter=args.iters,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        n_random=args.n_random,
        seed=args.seed,
        threads=args.threads,
        verbose=not args.quiet,
    )
