"""Times densecrf.nn.CRFasRNN forward and backward on a CUDA GPU.

Workload: B images of S x S (default 8 of 512 x 512), K = 21 classes, T = 5
iterations, the default terms (spatial sxy 3, weight 3; bilateral sxy 80,
srgb 13, weight 5), float32, inputs already on the GPU. Before timing, the
GPU forward and the gradients of the logits and of every learnable
parameter are compared with the CPU backend on image 0 (relative L2 error
below 1e-3, or the script exits 1). Timing: torch.cuda.Event around each
call on the current stream, 3 warm-ups, median of --repeats; peak GPU memory
from torch.cuda.max_memory_allocated.

    python benchmarks/bench_nn_cuda.py [--batch 8] [--size 512] [--classes 21] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

import densecrf
from densecrf.nn import CRFasRNN

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_nn


def make_inputs(b, k, s, device):
    logits, image = bench_nn.make_inputs(b, k, s)  # the CPU benchmark's synthetic scenes
    return logits.to(device), image.to(device)


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check(mod_gpu, logits, image, learn):
    """GPU forward and gradients against the CPU backend on image 0."""
    mod_cpu = CRFasRNN(logits.shape[1], learn_bandwidths=learn)
    mod_cpu.load_state_dict({k: v.cpu() for k, v in mod_gpu.state_dict().items()})
    errs = {}
    outs = []
    for mod, dev in ((mod_cpu, "cpu"), (mod_gpu, "cuda")):
        mod.zero_grad()
        x = logits[:1].detach().to(dev).requires_grad_(True)
        out = mod(x, image[:1].to(dev))
        w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=dev).reshape(out.shape)
        (out * w).sum().backward()
        outs.append((out.detach(), x.grad, {n: p.grad for n, p in mod.named_parameters() if p.grad is not None}))
    errs["forward"] = rel(outs[1][0], outs[0][0])
    errs["d logits"] = rel(outs[1][1], outs[0][1])
    for name, g in outs[0][2].items():
        errs[f"d {name}"] = rel(outs[1][2][name], g)
    return errs


def time_ms(fn, repeats):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b))
    return statistics.median(ms), min(ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    if not (torch.cuda.is_available() and densecrf.cuda_available()):
        print("bench_nn_cuda: no CUDA device, or densecrf built without CUDA", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; densecrf {densecrf.__version__}")
    logits, image = make_inputs(args.batch, args.classes, args.size, "cuda")
    rows = []
    for name, learn in (("default", False), ("learn_bandwidths=True", True)):
        mod = CRFasRNN(args.classes, learn_bandwidths=learn).cuda()
        errs = check(mod, logits, image, learn)
        worst = max(errs.values())
        print(f"{name}: GPU vs CPU relative L2 errors: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
        # float32 on both sides, different summation orders and exp: errors
        # land near 1e-6; 1e-3 flags a real disagreement, not rounding.
        if not worst < 1e-3:
            print(f"bench_nn_cuda: CHECK FAILED ({name}: {worst:.2e})", file=sys.stderr)
            return 1

        def fwd(mod=mod):
            with torch.no_grad():
                mod(logits, image)

        x = logits.detach().requires_grad_(True)

        def fwd_bwd(mod=mod, x=x):
            mod.zero_grad()
            mod(x, image).sum().backward()

        torch.cuda.reset_peak_memory_stats()
        f = time_ms(fwd, args.repeats)
        fb = time_ms(fwd_bwd, args.repeats)
        peak = torch.cuda.max_memory_allocated() / 2**20
        rows.append((name, f, fb, peak))
        print(rows[-1])
    print(
        f"\nCRFasRNN on {torch.cuda.get_device_name(0)}: B={args.batch}, {args.size}x{args.size}, "
        f"K={args.classes}, T=5; ms median (min) of {args.repeats}"
    )
    print("| config | no_grad forward ms | forward + backward ms | peak GPU MB |")
    print("|---|---:|---:|---:|")
    for name, f, fb, peak in rows:
        print(f"| {name} | {f[0]:.1f} ({f[1]:.1f}) | {fb[0]:.1f} ({fb[1]:.1f}) | {peak:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
