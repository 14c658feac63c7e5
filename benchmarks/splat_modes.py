"""The two splat schedules side by side: one bilateral filter, owner-computes scan against the gather.

    python benchmarks/splat_modes.py                      # the reference workload and 1024^2, 1 and 2 threads
    python benchmarks/splat_modes.py --sizes 2048 --threads 1 2 4 8 16 --repeats 7

The bilateral term's lattice (sxy 80, srgb 13) of the reference photo and of
that photo mirror-tiled to a square, one filter of K = 21 channels
(``_C.Lattice.filter``: splat, blur, slice) per call. The splat modes are
forced process-wide (``_C.Lattice._set_splat_mode``) and alternated call by
call after one warm-up each (the gather's lists are built in the warm-up);
medians. Outputs are checked equal bit for bit first.
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
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    cases = [("500x375", workloads.reference().image)]
    cases += [(f"{s}x{s}", workloads.by_size(s).image) for s in args.sizes]
    modes = ("scan", "lists")
    try:
        for name, image in cases:
            f = term_features(image)["bilateral"]
            v = np.random.default_rng(0).random((f.shape[0], 21)).astype(np.float32)
            for th in args.threads:
                lat = _C.Lattice(f, th)
                first = {}
                for mode in modes:  # warm-up, bits
                    _C.Lattice._set_splat_mode(mode)
                    first[mode] = lat.filter(v, False, th)
                if not np.array_equal(first["scan"], first["lists"]):
                    print(f"{name}, {th} threads: the two schedules differ", file=sys.stderr)
                    return 1
                times: dict[str, list[float]] = {m: [] for m in modes}
                for _ in range(args.repeats):
                    for mode in modes:
                        _C.Lattice._set_splat_mode(mode)
                        t = time.perf_counter()
                        lat.filter(v, False, th)
                        times[mode].append(time.perf_counter() - t)
                _C.Lattice._set_splat_mode("auto")
                med = {m: statistics.median(times[m]) * 1e3 for m in modes}
                print(
                    f"{name} bilateral, K = 21, {th} thread(s): scan {med['scan']:.1f} ms, "
                    f"gather {med['lists']:.1f} ms (gather / scan {med['lists'] / med['scan']:.2f}); "
                    f"the rule picks {'the gather' if lat._splat_by_lists(th) else 'the scan'}"
                )
    finally:
        _C.Lattice._set_splat_mode("auto")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
