"""Times densecrf.nn.CRFasRNN forward and backward on the CPU.

Workload: B = 2 images of 256 x 256, K = 11 classes, T = 5 iterations, the
default terms (spatial sxy 3, weight 3; bilateral sxy 80, srgb 13, weight 5).
The images are synthetic scenes: 16 x 16-pixel blocks of random colour plus
Gaussian noise (sigma 10 grey levels); the logits are noisy one-hot block
labels. Checks the forward against the numpy DenseCRF first, warms up, then
reports medians. Each configuration runs in its own process so that its peak
RSS (whole process: torch, inputs, graph) is its own.

    python benchmarks/bench_nn.py [--repeats 5] [--size 256] [--batch 2] [--classes 11] [--iters 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import densecrf
from densecrf.nn import CRFasRNN


def check_against_numpy(mod, logits, image):
    """The module's probabilities equal DenseCRF2D's for image 0."""
    k, h, w = logits.shape[1:]
    crf = densecrf.DenseCRF2D(w, h, k)
    crf.set_unary(-logits[0].permute(1, 2, 0).reshape(-1, k).numpy())
    mu = mod.compat.detach().numpy()
    crf.add_pairwise_gaussian(3.0, mu * float(mod.weights["spatial"].detach()))
    crf.add_pairwise_bilateral(
        80.0, 13.0, image[0].permute(1, 2, 0).numpy(), mu * float(mod.weights["bilateral"].detach())
    )
    want = crf.inference(mod.n_iter)
    with torch.no_grad():
        got = torch.softmax(mod(logits[:1], image[:1])[0], 0).permute(1, 2, 0).reshape(-1, k).numpy()
    err = float(np.abs(got - want).max())
    assert err < 1e-4, f"forward differs from DenseCRF by {err}"
    return err


def make_inputs(b, k, s):
    g = torch.Generator().manual_seed(0)
    blocks = (s + 15) // 16
    colours = torch.rand(b, 3, blocks, blocks, generator=g) * 255
    image = colours.repeat_interleave(16, 2).repeat_interleave(16, 3)[:, :, :s, :s]
    image = (image + 10 * torch.randn(b, 3, s, s, generator=g)).clamp(0, 255)
    labels = torch.randint(0, k, (b, blocks, blocks), generator=g)
    labels = labels.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, :s, :s]
    logits = torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2).float() * 2
    logits = logits + 1.5 * torch.randn(b, k, s, s, generator=g)
    return logits, image


CONFIGS = {"default": {}, "recompute": {"recompute": True}, "learn_bandwidths": {"learn_bandwidths": True}}


def time_config(args, name):
    logits, image = make_inputs(args.batch, args.classes, args.size)
    mod = CRFasRNN(args.classes, args.iters, **CONFIGS[name])
    x = logits.clone().requires_grad_(True)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t_inf, t_fwd, t_bwd = [], [], []
    for rep in range(args.repeats + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            mod(logits, image)
        t1 = time.perf_counter()
        out = mod(x, image)
        loss = torch.nn.functional.cross_entropy(out, logits.argmax(1))
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if rep:  # the first round is the warm-up
            t_inf.append(t1 - t0)
            t_fwd.append(t2 - t1)
            t_bwd.append(t3 - t2)
        del out, loss
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stat = lambda ts: f"{statistics.median(ts):.3f} ({min(ts):.3f})"  # noqa: E731
    return {
        "no_grad": stat(t_inf),
        "forward": stat(t_fwd),
        "backward": stat(t_bwd),
        "rss_mb": f"{rss:.0f} (+{rss - rss0:.0f})",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--configs", default="default,recompute,learn_bandwidths")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # internal: one config, JSON out
    args = ap.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.only:
        print(json.dumps(time_config(args, args.only)))
        return

    logits, image = make_inputs(args.batch, args.classes, args.size)
    err = check_against_numpy(CRFasRNN(args.classes, args.iters), logits, image)
    print(
        f"# densecrf {densecrf.__version__}, torch {torch.__version__}, {platform.machine()}, "
        f"{densecrf.get_num_threads()} native threads, {torch.get_num_threads()} torch threads"
    )
    print(
        f"# B={args.batch} K={args.classes} {args.size}x{args.size} T={args.iters}; forward == DenseCRF "
        f"to {err:.1e}; median (min) of {args.repeats} after 1 warm-up; load average {os.getloadavg()[0]:.1f}"
    )
    print("| config | no_grad forward (s) | forward (s) | backward (s) | peak RSS MB (+ over inputs) |")
    print("|---|---|---|---|---|")
    for name in args.configs.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--only",
            name,
            "--repeats",
            str(args.repeats),
            "--size",
            str(args.size),
            "--batch",
            str(args.batch),
            "--classes",
            str(args.classes),
            "--iters",
            str(args.iters),
            "--torch-threads",
            str(args.torch_threads),
        ]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['no_grad']} | {r['forward']} | {r['backward']} | {r['rss_mb']} |", flush=True)


if __name__ == "__main__":
    main()
