"""Lattice builds of the classic terms at several thread counts, alternated call by call.

    python benchmarks/lattice_build.py                          # 2048 x 2048, 1 and 2 threads
    python benchmarks/lattice_build.py --size 1024 --threads 1 2 4 8 16 --repeats 5

The Gaussian (sxy 3, d = 2) and bilateral (sxy 80, srgb 13, d = 5)
features of the reference photo mirror-tiled to a square; each build is
``_C.Lattice(features, threads)`` from the features (not the Python wrapper),
the thread counts visited round-robin, medians. Every build is checked to
give the same filter bits as the one-thread build first. The Gaussian one
takes the dense table: one chunk on one thread (before 2026-12-05 also on
two: ``build_chunks``), and from two chunks on a box shared by all chunks
(``build_dense_shared``), so its one-thread time is also its two-thread
time before that change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads  # noqa: E402
from densecrf._native import _C  # noqa: E402
from splat_balance import term_features  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    feats = term_features(workloads.by_size(args.size).image)
    for name, f in feats.items():
        v = np.random.default_rng(0).random((f.shape[0], 3)).astype(np.float32)
        ref = _C.Lattice(f, 1).filter(v, False, 1)
        tables = {}
        for t in args.threads:  # bits and warm-up
            lat = _C.Lattice(f, t)
            tables[t] = lat._table
            if not np.array_equal(lat.filter(v, False, 1), ref):
                print(f"{name}: the {t}-thread lattice differs from the one-thread one", file=sys.stderr)
                return 1
        times: dict[int, list[float]] = {t: [] for t in args.threads}
        for _ in range(args.repeats):
            for t in args.threads:
                t0 = time.perf_counter()
                _C.Lattice(f, t)
                times[t].append(time.perf_counter() - t0)
        row = ", ".join(f"{t} thread(s) {statistics.median(times[t]) * 1e3:.1f} ms ({tables[t]})" for t in args.threads)
        print(f"{args.size}x{args.size} {name} (d = {f.shape[1]}): {row}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
