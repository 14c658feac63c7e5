"""``densecrf fit IMAGES PROBS LABELS -o params.json``: dense-CRF parameters fitted to a model (densecrf.fit)."""

from __future__ import annotations

import argparse
import json
import warnings

from ..fit import COMPATS, LOSSES, SEARCHES, SHRINK, describe, fit, format_table, match_folders, read_matched
from .common import CLIError, check_folder_of

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
    f.add_argument(
        "--holdout",
        type=float,
        default=None,
        help="fraction of the images held out for selection; not with --cv or --groups (default: 0.3)",
    )
    f.add_argument(
        "--cv",
        type=int,
        default=None,
        metavar="N",
        help="cross-validate over N folds: N contiguous blocks of the images in file-name order, or, with "
        "groups, the groups merged into N folds (default: one fold per group with groups, else --holdout)",
    )
    f.add_argument(
        "--groups-by-prefix",
        metavar="SEP",
        default=None,
        help="group of an image = its file stem before the first SEP (e.g. '_' for CamVid's 0006R0_f02400: "
        "drive 0006R0); cross-validates, each group held out once",
    )
    f.add_argument(
        "--groups",
        metavar="FILE",
        default=None,
        help="JSON file mapping each image's file stem to its group (a drive, a video); cross-validates",
    )
    f.add_argument(
        "--shrink",
        type=float,
        default=None,
        help="pull of a learned compatibility toward Potts in gradient descent, 0 = off "
        f"(default: {SHRINK:g} with cross-validation, 0 with --holdout)",
    )
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
    groups = _groups(args, match.names)
    if args.cv is not None and args.cv < 2:
        raise CLIError(f"--cv must be at least 2 (folds), got {args.cv}")
    if args.holdout is not None and (args.cv is not None or groups is not None):
        flag = "--cv" if args.cv is not None else ("--groups" if args.groups else "--groups-by-prefix")
        raise CLIError(
            f"--holdout {args.holdout:g} and {flag} exclude each other (cross-validation holds out every fold)"
        )
    if args.shrink is not None and not args.shrink >= 0:
        raise CLIError(f"--shrink must be a number >= 0 (0 = off), got {args.shrink:g}")
    names, images, probs, labels = read_matched(match)
    # fit's warnings are in params.info["warnings"], which the table below prints (one line each)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", category=UserWarning, module=r"densecrf\.cli\.fit"
        )  # fit() warns at its caller, _fit
        params = _fit(args, images, probs, labels, groups)
    if "cv" in params.info:
        for fold in params.info["cv"]["folds"]:
            fold["names"] = [names[i] for i in fold["indices"]]
    else:
        params.info["heldout_names"] = [names[i] for i in params.info["heldout_indices"]]
    params.save(args.output)
    if args.quiet:
        print(format_table(params.info))
    print(f"wrote {args.output}: {describe(params)}")
    return 0


def _groups(args, names: list[str]) -> list[str] | None:
    """One group per image (in the order of ``names``) from --groups-by-prefix or --groups, or None."""
    if args.groups_by_prefix is not None and args.groups is not None:
        raise CLIError("--groups-by-prefix and --groups exclude each other: give one way of grouping the images")
    if args.groups_by_prefix is not None:
        sep = args.groups_by_prefix
        if not sep:
            raise CLIError("--groups-by-prefix needs a non-empty separator, got ''")
        missing = [n for n in names if sep not in n]
        if missing:
            raise CLIError(
                f"--groups-by-prefix {sep!r}: the file stem {missing[0]!r} has no {sep!r} "
                f"({len(missing)} of {len(names)} images)"
            )
        return [n.split(sep, 1)[0] for n in names]
    if args.groups is not None:
        try:
            with open(args.groups, encoding="utf-8") as fh:
                mapping = json.load(fh)
        except OSError as exc:
            raise CLIError(f"--groups {args.groups}: cannot read it ({exc.strerror or exc})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CLIError(f"--groups {args.groups}: not a JSON file ({exc})") from None
        if not isinstance(mapping, dict):
            raise CLIError(
                f"--groups {args.groups}: expected a JSON object mapping file stem to group, "
                f"got a {type(mapping).__name__}"
            )
        missing = [n for n in names if n not in mapping]
        if missing:
            raise CLIError(
                f"--groups {args.groups}: no group for the image {missing[0]!r} "
                f"({len(missing)} of {len(names)} images have none)"
            )
        bad = [n for n in names if not isinstance(mapping[n], (str, int)) or isinstance(mapping[n], bool)]
        if bad:
            raise CLIError(
                f"--groups {args.groups}: the group of {bad[0]!r} must be a string or an integer, got {mapping[bad[0]]!r}"
            )
        return [mapping[n] for n in names]
    return None


def _fit(args, images, probs, labels, groups=None):
    return fit(
        images,
        probs,
        labels,
        ignore_index=args.ignore_index,
        search=args.search,
        holdout=args.holdout,
        groups=groups,
        cv=args.cv,
        shrink=args.shrink,
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
