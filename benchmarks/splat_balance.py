"""The splat rule's quantity on real lattices: how unbalanced owner computes would be.

    python benchmarks/splat_balance.py                  # the reference workload, 1024^2 and 2048^2
    python benchmarks/splat_balance.py --sizes 1024 --threads 2 4 8 16

For each workload (the reference photo, and that photo mirror-tiled to a
square, as benchmarks/thread_scaling.py uses) and each pairwise term of the
classic parameters (Gaussian sxy 3; bilateral sxy 80, srgb 13), builds the
lattice and prints, per thread count T, the scan excess: the points the
slowest of T owner-computes threads would scan over its share N / T
(``CpuLattice::splat_scan_excess``; 1 = perfect balance), and the schedule
the rule picks on a machine with at least T cores (the gather over entry
lists above 2). A count, not a timing: the same on any machine.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads  # noqa: E402
from densecrf._native import _C  # noqa: E402


def term_features(image: np.ndarray) -> dict[str, np.ndarray]:
    """The classic terms' features [N, d] of an [H, W, 3] image."""
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gauss = np.stack([xx / 3, yy / 3], -1).reshape(-1, 2)
    bil = np.concatenate([np.stack([xx / 80, yy / 80], -1), img / 13], -1).reshape(-1, 5)
    return {"gaussian": np.ascontiguousarray(gauss), "bilateral": np.ascontiguousarray(bil)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 4, 8, 16])
    args = ap.parse_args(argv)
    cases = [("500x375", workloads.reference().image)]
    cases += [(f"{s}x{s}", workloads.by_size(s).image) for s in args.sizes]
    print("workload   term       vertices  " + "  ".join(f"T={t:<3d}" for t in args.threads))
    for name, image in cases:
        for term, f in term_features(image).items():
            lat = _C.Lattice(f, 0)
            cells = []
            for t in args.threads:
                x = lat._splat_scan_excess(t)
                # the rule on a machine with at least t cores (this one may have fewer)
                gather = min(t, max(1, lat.n_vertices // 2048)) >= 2 and x > 2.0
                cells.append(f"{x:4.2f}{'*' if gather else ' '}")
            print(f"{name:10s} {term:10s} {lat.n_vertices:8d}  " + "  ".join(cells))
    print("* the rule gathers over entry lists at that thread count on a machine with as many")
    print("  cores (excess above 2; at most one range per 2048 vertices, and per core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
