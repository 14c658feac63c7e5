"""Command line: ``densecrf demo | refine | bench``."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .fit import add_parser as _add_fit_parser


def _synthetic_scene(h=375, w=500, k=21, seed=0):
    """A deterministic image with regions and edges, the true label map, and noisy probabilities."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    truth = ((xx // 100) + 5 * (yy // 75)) % k
    palette = rng.integers(0, 256, size=(k, 3))
    img = palette[truth] + rng.normal(0, 8, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    logits = rng.normal(0, 1.0, (h, w, k))
    logits[yy, xx, truth] += 1.2
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return img, truth, probs.astype(np.float32)


def cmd_demo(args) -> int:
    import densecrf

    img, truth, probs = _synthetic_scene()
    t0 = time.perf_counter()
    q = densecrf.refine(img, probs, n_iter=args.iters)
    dt = time.perf_counter() - t0
    before = float((probs.argmax(-1) == truth).mean())
    after = float((q.argmax(-1) == truth).mean())
    h, w, k = probs.shape
    print(f"densecrf {densecrf.__version__}: refine() on a {w}x{h} image, K={k}, {args.iters} iterations, "
          f"{densecrf.get_num_threads()} threads")
    print(f"pixel accuracy: network-like noisy probabilities {before:.3f} -> dense CRF {after:.3f}")
    print(f"time: {dt * 1e3:.1f} ms")
    return 0


def cmd_refine(args) -> int:
    import densecrf

    from PIL import Image

    img = np.asarray(Image.open(args.image).convert("RGB"))
    try:
        probs = np.load(args.probs)
    except (ValueError, EOFError) as exc:  # not a .npy file, truncated, or pickled objects
        raise ValueError(f"could not read probabilities from {args.probs} (expected a .npy array): {exc}") from None
    q = densecrf.refine(img, probs, n_iter=args.iters, gaussian_sxy=args.gaussian_sxy,
                        gaussian_compat=args.gaussian_compat, bilateral_sxy=args.bilateral_sxy,
                        bilateral_srgb=args.bilateral_srgb, bilateral_compat=args.bilateral_compat)
    np.save(args.output, q)
    print(f"wrote {args.output} {q.shape}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="densecrf", description="Fast dense CRFs.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="refine a bundled synthetic scene and print accuracy and time")
    d.add_argument("--iters", type=int, default=5)
    d.set_defaults(func=cmd_demo)
    r = sub.add_parser("refine", help="refine [H, W, K] probabilities (.npy) along an image's edges")
    r.add_argument("image")
    r.add_argument("probs")
    r.add_argument("-o", "--output", required=True)
    r.add_argument("--iters", type=int, default=5)
    r.add_argument("--gaussian-sxy", type=float, default=3.0)
    r.add_argument("--gaussian-compat", type=float, default=3.0)
    r.add_argument("--bilateral-sxy", type=float, default=80.0)
    r.add_argument("--bilateral-srgb", type=float, default=13.0)
    r.add_argument("--bilateral-compat", type=float, default=10.0)
    r.set_defaults(func=cmd_refine)
    _add_fit_parser(sub)
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and the error already
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, EOFError) as exc:
        print(f"densecrf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. PIL's DecompressionBombError: still one line, no traceback
        print(f"densecrf {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
