"""One side of a before/after comparison on the GPU: the reference workload and a batch, repeated.

    DENSECRF_CUDA_SCRATCH_POOL=0 DENSECRF_CUDA_PLAIN_DIV=1 python benchmarks/cuda_ab.py   # before both
    python benchmarks/cuda_ab.py                                                          # after both

Two switches, read by the CUDA backend at start-up, give back the code paths
of before 2026-12-05: ``DENSECRF_CUDA_SCRATCH_POOL=0`` allocates call
scratch from the device's default pool (cudaMallocAsync) instead of
densecrf's own caching pool; ``DENSECRF_CUDA_PLAIN_DIV=1`` makes the kernels'
index divisions plain 64-bit divisions instead of a multiply-high and a
shift. benchmarks/gpu_session.sh runs the sides as alternating processes.
Each process: one warm-up call, then ``--calls`` calls of
``densecrf.refine(..., device='cuda')`` on the reference workload (500 x 375,
K = 21, 10 iterations, numpy in and out, so each call ends synchronised),
and a batch of 16 512 x 512 images through ``refine_batch``; prints the
medians in milliseconds and what the scratch pool holds.
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

import densecrf  # noqa: E402
import densecrf.cuda as dcuda  # noqa: E402
import workloads  # noqa: E402


def median_ms(fn, calls: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args(argv)
    pool = "default pool" if os.environ.get("DENSECRF_CUDA_SCRATCH_POOL") == "0" else "own pool"
    div = "plain division" if os.environ.get("DENSECRF_CUDA_PLAIN_DIV") == "1" else "fast division"
    side = f"{pool}, {div}"
    ref = workloads.reference()
    big = workloads.by_size(512)
    imgs = np.stack([big.image] * 16)
    probs = np.stack([big.probs] * 16)
    one = median_ms(lambda: densecrf.refine(ref.image, ref.probs, n_iter=10, device="cuda"), args.calls)
    batch = median_ms(lambda: densecrf.refine_batch(imgs, probs, n_iter=10, device="cuda"), max(3, args.calls // 4))
    print(
        f"{side}: reference workload {one:.2f} ms, batch 16 x 512^2 {batch:.1f} ms (medians); "
        f"scratch pool holds {dcuda.memory_reserved() / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
