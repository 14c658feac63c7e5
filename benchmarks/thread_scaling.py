"""Parallel efficiency of the CPU backend: the whole ``refine`` call at 1 .. N threads.

    python benchmarks/thread_scaling.py                          # 2048 x 2048 and the reference workload
    python benchmarks/thread_scaling.py --threads 1 2 4 8 16 --repeats 5 --json out.json

Workloads: the reference photo mirror-tiled to ``--size`` (default 2048 x 2048,
K = 21, Gaussian sxy 3 compat 3 + bilateral sxy 80 srgb 13 compat 10, 5
iterations: issue "The GPU near its memory floor, the CPU on every core"'s
case) and the reference workload itself (500 x 375). Each thread count is
timed with one warm-up call and then ``--repeats`` calls, the counts visited
round-robin (1, 2, 4, ..., 1, 2, 4, ...) so that a drift of the host's speed
spreads over all of them rather than landing on one. Reports the median and
minimum per count, the speed-up over one thread and the parallel efficiency
``t1 / (n * tn)`` by medians. Every count's output is checked bit for bit
against the one-thread output first (results do not depend on threads).

``--splat auto scan`` (the default) times every count under both splat
schedules, alternated call by call: ``auto``, the rule (the scan, or the
gather over entry lists where the scan's slowest thread would do more than
twice its share), and ``scan``, owner computes always, the schedule before
2026-12-05: the before and after of that change in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import densecrf  # noqa: E402
import workloads  # noqa: E402


def _workloads(size):
    ref, big = workloads.reference(), workloads.by_size(size)
    return {f"{size}x{size}": (big.image, big.probs), "500x375": (ref.image, ref.probs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="thread counts (default: 1, 2, 4, ... up to the core count)",
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--splat", nargs="+", choices=["auto", "scan", "lists"], default=["auto", "scan"])
    args = ap.parse_args(argv)
    from densecrf._native import _C

    def set_mode(mode: str) -> None:
        _C.Lattice._set_splat_mode(mode)

    cores = os.cpu_count() or 1
    counts = args.threads or sorted({min(2**i, cores) for i in range(cores.bit_length() + 1)})
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores",
        "iters": args.iters,
        "order": "round-robin over thread counts, the splat modes alternated within each count",
        "splat_modes": args.splat,
        "cases": {},
    }
    for name, (img, probs) in _workloads(args.size).items():
        set_mode("auto")
        ref = densecrf.refine(img, probs, n_iter=args.iters, threads=1)
        for mode in args.splat:
            set_mode(mode)
            for n in counts:  # bits first (and the warm-up)
                out = densecrf.refine(img, probs, n_iter=args.iters, threads=n)
                if not np.array_equal(out, ref):
                    print(f"{name}: output at {n} threads ({mode}) differs from 1 thread", file=sys.stderr)
                    return 1
        times: dict[tuple[str, int], list[float]] = {(m, n): [] for m in args.splat for n in counts}
        for _ in range(args.repeats):
            for n in counts:
                for mode in args.splat:
                    set_mode(mode)
                    t = time.perf_counter()
                    densecrf.refine(img, probs, n_iter=args.iters, threads=n)
                    times[mode, n].append(time.perf_counter() - t)
        set_mode("auto")
        rows: dict[str, dict] = {}
        for mode in args.splat:
            t1 = statistics.median(times[mode, counts[0]]) * counts[0]
            rows[mode] = {}
            print(f"\n{name}, K = {probs.shape[-1]}, {args.iters} iterations, splat {mode} ({result['machine']})")
            print("threads  median ms    min ms  speed-up  efficiency")
            for n in counts:
                ts = times[mode, n]
                med, lo = statistics.median(ts), min(ts)
                rows[mode][n] = {
                    "median_ms": med * 1e3,
                    "min_ms": lo * 1e3,
                    "speedup": t1 / med,
                    "efficiency": t1 / (n * med),
                    "times_ms": [x * 1e3 for x in ts],
                }
                print(f"{n:7d} {med * 1e3:10.1f} {lo * 1e3:9.1f} {t1 / med:9.2f} {t1 / (n * med):10.0%}")
        result["cases"][name] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
