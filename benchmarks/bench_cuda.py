"""GPU benchmark of the CUDA backend: device-event timings, warm-up, medians.

    python benchmarks/bench_cuda.py            # all workloads, appends to benchmarks/RESULTS.md
    python benchmarks/bench_cuda.py --quick    # fewer repeats, no 4096 x 4096 run
    python benchmarks/bench_cuda.py --smoke    # tiny sizes: checks every code path in seconds

Workloads (inputs already on the GPU, as densecrf.cuda.DeviceArray, so that
no host transfer is timed; every call includes the lattice builds):

- reference: 500 x 375, K = 21, Gaussian (sxy 3, compat 3) + bilateral
  (sxy 80, srgb 13, compat 10), 5 and 10 iterations; checked against the CPU
  backend first (MAP agreement must be >= 99.9%);
- batches of 1, 4 and 16 images of 512 x 512 (K = 21, same terms, 10
  iterations) in one refine_batch call;
- a 128^3 volume, 4 labels, Gaussian over 3-D positions + bilateral over
  5-D features (3 positions + 2 channels), 10 iterations;
- a 4096 x 4096 image with 21 labels, 10 iterations (the memory bar: it must
  fit on an 80 GB card).

Each timing brackets the whole call with CUDA events on the stream the work
runs on (the legacy default stream for DeviceArray inputs): 3 warm-up calls,
then the median of --repeats calls.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import densecrf  # noqa: E402
import densecrf.cuda as dcuda  # noqa: E402
from densecrf._native import _C  # noqa: E402
from reference import label_probs, smooth_image  # noqa: E402

REF = {
    "gaussian_sxy": 3.0,
    "gaussian_compat": 3.0,
    "bilateral_sxy": 80.0,
    "bilateral_srgb": 13.0,
    "bilateral_compat": 10.0,
}


def time_call(fn, repeats: int, warmup: int = 3, device: int = 0) -> dict:
    """Median / min / max milliseconds of fn() between CUDA events on the legacy default stream."""
    for _ in range(warmup):
        fn()
    _C.cuda_synchronize(device)
    timer = _C.CudaEventTimer(device)
    ms = []
    for _ in range(repeats):
        timer.start(0)
        fn()
        timer.stop(0)
        ms.append(timer.elapsed_ms())
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "n": repeats}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="5 repeats, skip the 4096 x 4096 run")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repeats, nothing recorded")
    ap.add_argument(
        "--out",
        default=None,
        help="markdown file to append to (default benchmarks/RESULTS.md, none with --smoke; '' = none)",
    )
    ap.add_argument("--device", type=int, default=0)
    args = ap.parse_args()
    if not densecrf.cuda_available():
        print(
            "bench_cuda: no CUDA device, or densecrf built without CUDA "
            f"(build_info: {densecrf._native.build_info()}); nothing to measure",
            file=sys.stderr,
        )
        return 2
    reps = 2 if args.smoke else 5 if args.quick else args.repeats
    if args.out is None:
        args.out = "" if args.smoke else os.path.join(HERE, "RESULTS.md")
    if args.smoke:
        args.quick = True
    ref_hw = (60, 80) if args.smoke else (375, 500)
    side = 64 if args.smoke else 512
    vside = 16 if args.smoke else 128
    dev = args.device
    # torch's name when torch is there: densecrf's own cuda_device_name segfaulted on the H200
    # machine on 2026-12-04 (see cuda/lattice_cuda.cu, device_info) and a benchmark must not.
    try:
        import torch

        gpu = torch.cuda.get_device_name(dev)
    except Exception:
        gpu = _C.cuda_device_name(dev)
    print(f"GPU: {gpu}")
    rows = []

    # -- reference workload, checked against the CPU first ---------------
    img = smooth_image(*ref_hw)
    probs = label_probs(*ref_hw, 21, sharpness=1.0)
    d_img = dcuda.DeviceArray.from_numpy(img, dev)
    d_probs = dcuda.DeviceArray.from_numpy(probs, dev)
    for n_iter in (5, 10):
        t0 = time.perf_counter()
        cpu = densecrf.refine(img, probs, n_iter=n_iter, **REF)
        cpu_s = time.perf_counter() - t0
        gpu_q = dcuda.refine(d_img, d_probs, n_iter=n_iter, **REF).numpy()
        agree = float((gpu_q.argmax(-1) == cpu.argmax(-1)).mean())
        again = dcuda.refine(d_img, d_probs, n_iter=n_iter, **REF).numpy()
        deterministic = bool(np.array_equal(gpu_q, again))
        print(
            f"reference {n_iter} it: MAP agreement with CPU {agree:.5%}, max |dQ| "
            f"{float(np.abs(gpu_q - cpu).max()):.2e}, bit-identical rerun: {deterministic}"
        )
        if agree < 0.999 or not deterministic:
            print("bench_cuda: CHECK FAILED (agreement < 99.9% or non-deterministic)", file=sys.stderr)
            return 1
        t = time_call(lambda n_iter=n_iter: dcuda.refine(d_img, d_probs, n_iter=n_iter, **REF), reps, device=dev)
        rows.append(
            (
                f"reference {ref_hw[1]}x{ref_hw[0]} K=21, {n_iter} it",
                1,
                t,
                f"agree {agree:.4%}; CPU backend {cpu_s * 1e3:.0f} ms ({densecrf.get_num_threads()} threads)",
            )
        )
        print(rows[-1])

    # -- batches of 512 x 512 ------------------------------------------------
    for b in (1, 4, 16):
        ib = np.stack([smooth_image(side, side, seed=s) for s in range(b)])
        pb = np.stack([label_probs(side, side, 21, seed=s, sharpness=1.0) for s in range(b)])
        d_ib = dcuda.DeviceArray.from_numpy(ib, dev)
        d_pb = dcuda.DeviceArray.from_numpy(pb, dev)
        out = dcuda.refine_batch(d_ib, d_pb, channels_first=False, n_iter=10, **REF).numpy()
        ref0 = densecrf.refine(ib[0], pb[0], n_iter=10, **REF)
        agree = float((out[0].argmax(-1) == ref0.argmax(-1)).mean())
        t = time_call(
            lambda d_ib=d_ib, d_pb=d_pb: dcuda.refine_batch(d_ib, d_pb, channels_first=False, n_iter=10, **REF),
            reps,
            device=dev,
        )
        rows.append((f"batch {b} x {side}x{side} K=21, 10 it", b, t, f"image 0 agree {agree:.4%}"))
        print(rows[-1])

    # -- 128^3 volume, 4 labels, 5-D bilateral features -------------------
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[0:vside, 0:vside, 0:vside]
    vol = np.stack([255.0 * ((xx // 32 + yy // 32 + zz // 32) % 2), 2.0 * xx], -1).astype(np.float32)
    vol += rng.normal(0, 5, vol.shape).astype(np.float32)
    logits = rng.normal(0, 1, (vside, vside, vside, 4)).astype(np.float32)
    logits[..., 0] += 1.5 * ((xx // 32 + yy // 32 + zz // 32) % 2)
    pv = np.exp(logits - logits.max(-1, keepdims=True))
    pv /= pv.sum(-1, keepdims=True)
    vkw = {
        "gaussian_sxy": 3.0,
        "gaussian_compat": 3.0,
        "bilateral_sxy": 10.0,
        "bilateral_srgb": (20.0, 20.0),
        "bilateral_compat": 5.0,
    }
    d_vol = dcuda.DeviceArray.from_numpy(vol, dev)
    d_pv = dcuda.DeviceArray.from_numpy(pv.astype(np.float32), dev)
    t = time_call(lambda: dcuda.refine(d_vol, d_pv, n_iter=10, volume=True, **vkw), max(3, reps // 4), device=dev)
    rows.append((f"volume {vside}^3, K=4, d=3 + d=5, 10 it", 1, t, f"{vside**3 / 1e6:.1f} M points"))
    print(rows[-1])

    # -- 4096 x 4096, K = 21 ------------------------------------------------
    if not args.quick:
        big_img = np.zeros((4096, 4096, 3), np.float32)
        big_img[..., 0] = np.arange(4096, dtype=np.float32)[None, :] % 256
        big_img[..., 1] = np.arange(4096, dtype=np.float32)[:, None] % 256
        big_img[..., 2] = 100.0
        d_big = dcuda.DeviceArray.from_numpy(big_img, dev)
        del big_img
        big_p = dcuda.DeviceArray.from_numpy(label_probs(4096, 4096, 21, sharpness=1.0), dev)
        t = time_call(lambda: dcuda.refine(d_big, big_p, n_iter=10, **REF), 3, warmup=1, device=dev)
        rows.append(("4096x4096 K=21, 10 it", 1, t, "fits"))
        print(rows[-1])

    if args.out:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            "",
            f"## CUDA backend, {stamp}",
            "",
            f"GPU: {gpu}; host: {platform.node()}, {platform.processor() or platform.machine()}; "
            f"densecrf {densecrf.__version__}, architectures {densecrf._native.build_info().get('cuda_architectures')}.",
            f"Command: `python benchmarks/bench_cuda.py{' --smoke' if args.smoke else ' --quick' if args.quick else ''}`. Whole calls "
            "(lattice builds included), inputs already on the GPU, CUDA events, 3 warm-ups, median of n.",
            "",
            "| workload | images | median ms | min ms | max ms | n | note |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, b, t, note in rows:
            lines.append(f"| {name} | {b} | {t['median']:.2f} | {t['min']:.2f} | {t['max']:.2f} | {t['n']} | {note} |")
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
        print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
