"""How much slower one-thread CRF calls run when every core runs one: the ceiling of a pipeline's efficiency.

    python benchmarks/core_contention.py --calls 30 --rounds 2

Issue "Refine whole datasets" measures a pipeline's efficiency against
cores / (read + CRF on one thread + write), each cost measured alone. This
times the CRF part (``densecrf.refine`` on the reference workload, one
thread, 10 iterations) in one process alone, then in one process per core
at once (each process doing the same calls), round after round. If the
concurrent calls are slower, a pipeline of one process per core cannot
reach 100 % of that figure, whatever its scheduling: the ratio of the two
medians is its ceiling.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _worker(calls: int) -> None:
    sys.path.insert(0, HERE)
    import densecrf
    import workloads

    ref = workloads.reference()
    densecrf.refine(ref.image, ref.probs, threads=1, n_iter=10)  # warm-up
    for _ in range(calls):
        t = time.perf_counter()
        densecrf.refine(ref.image, ref.probs, threads=1, n_iter=10)
        print(time.perf_counter() - t, flush=True)


def _run(n_procs: int, calls: int) -> list[float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(calls)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n_procs)]
    times = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed with {p.returncode}")
        times += [float(x) for x in out.split()]
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        _worker(args.worker)
        return 0
    for r in range(args.rounds):
        alone = _run(1, args.calls)
        together = _run(args.procs, args.calls)
        a, b = float(np.median(alone)), float(np.median(together))
        print(
            f"round {r + 1}: one process alone {a * 1e3:.1f} ms per call (median of {len(alone)}), "
            f"{args.procs} at once {b * 1e3:.1f} ms (median of {len(together)}): ceiling {a / b:.0%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
