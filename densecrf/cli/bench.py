"""``densecrf bench``: the reference workload timed (densecrf.bench), or the pytest-benchmark suite."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from .. import bench
from .common import CLIError, need


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "bench",
        help="time lattice, filter, iteration and refine; compare with pydensecrf",
        description="Times the reference workload (500 x 375, K = 21, classic parameters, 5 iterations) at 1 "
        "and 2 threads, beside pydensecrf when it is installed and agrees; --suite DIR runs the "
        "pytest-benchmark suite instead.",
    )
    b.add_argument("--size", type=int, nargs=2, default=(500, 375), metavar=("W", "H"))
    b.add_argument("--labels", type=int, default=21)
    b.add_argument("--iters", type=int, default=5)
    b.add_argument("--threads", type=int, nargs="+", default=(1, 2))
    b.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median reported)")
    b.add_argument("--no-pydensecrf", action="store_true", help="do not compare with pydensecrf")
    b.add_argument(
        "--suite", metavar="DIR", default=None, help="run `pytest DIR --benchmark-only` (the repository's benchmarks/)"
    )
    b.set_defaults(func=run)


def run_suite(folder: str) -> int:
    """``pytest FOLDER --benchmark-only``: the repository's pytest-benchmark suite; returns pytest's exit code."""
    if not os.path.isdir(folder):
        raise CLIError(f"benchmark folder not found: {folder} (the repository's benchmarks/)")
    need("pytest_benchmark")
    return subprocess.call([sys.executable, "-m", "pytest", folder, "--benchmark-only", "-q"])


def run(args: argparse.Namespace) -> int:
    if args.suite is not None:
        return run_suite(args.suite)
    if args.size[0] < 2 or args.size[1] < 2 or args.labels < 2 or args.iters < 1 or args.repeat < 1:
        raise CLIError("--size needs W, H >= 2, --labels >= 2, --iters >= 1 and --repeat >= 1")
    bench.run(
        width=args.size[0],
        height=args.size[1],
        n_labels=args.labels,
        n_iter=args.iters,
        threads=tuple(args.threads),
        repeat=args.repeat,
        compare=not args.no_pydensecrf,
    )
    return 0
