"""What one dataset worker spends per image, piece by piece (issue "Refine whole datasets").

Times, in one process on one native thread, each step that
``densecrf refine`` runs per item of a folder: the image's PNG decode, the
map's ``.npy`` read, the CRF (split by cProfile into mean field, lattice
builds and unary; and with its Gaussian term kept from the call before
against rebuilt, alternated), the arg-max and the palette PNG write; with float16 maps
(``--layout f16``) also the map's widening to float32 by numpy's cast and by
densecrf's native one, which the CRF row includes. Medians of
``--frames`` calls: the reads go over the first ``--frames`` frames of the
folders that ``dataset_throughput.py`` prepares; the CRF, arg-max and write
repeat the first frame. ``dataset_throughput.per_image_costs`` measures the
same item in three coarser parts (read, CRF, write) over every frame.

    python benchmarks/worker_costs.py --data /tmp/densecrf_dataset_bench/n101
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import os
import pstats
import tempfile
import time

import numpy as np

import densecrf
from densecrf import _checks, io
from densecrf.backends.cpu import position_terms
from densecrf.dataset import work


def median_ms(fn, n: int) -> float:
    ts = []
    for k in range(n):
        t0 = time.perf_counter()
        fn(k)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/tmp/densecrf_dataset_bench/n101")
    p.add_argument("--layout", default="f32", help="the maps' folder under --data (f32, f16)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args()
    maps = sorted(glob.glob(os.path.join(args.data, args.layout, "*.npy")))[: args.frames]
    images = sorted(glob.glob(os.path.join(args.data, "images", "*.png")))[: args.frames]
    if not maps or len(maps) != len(images):
        raise SystemExit(f"no matching frames under {args.data} (run dataset_throughput.py first)")
    n = len(maps)
    im, pr = io.read_image(images[0]), io.read_probs(maps[0])
    q = densecrf.refine(im, pr, n_iter=args.iters, threads=1)
    lab = work.labels_of(q)
    out = os.path.join(tempfile.mkdtemp(), "x.png")
    rows = {
        "read image (PNG decode)": median_ms(lambda k: io.read_image(images[k]), n),
        "read map (.npy)": median_ms(lambda k: io.read_probs(maps[k], im.shape[:2]), n),
        f"CRF, {args.iters} iterations, 1 thread": median_ms(
            lambda k: densecrf.refine(im, pr, n_iter=args.iters, threads=1), n
        ),
        "arg-max (native, what a run uses)": median_ms(lambda k: work.labels_of(q), n),
        "write palette PNG (level 6)": median_ms(lambda k: io.write_labels(out, lab, None), n),
    }
    for name, ms in rows.items():
        print(f"{name:40s} {ms:7.2f} ms")
    print(f"{'sum':40s} {sum(rows.values()):7.2f} ms")
    assert np.array_equal(work.labels_of(q), q.argmax(-1))
    print(
        f"  not in the sum: arg-max by numpy's argmax      {median_ms(lambda k: q.argmax(-1).astype(np.uint8), n):7.2f} ms"
    )
    # The CRF with its Gaussian term kept from the call before (what a run
    # does from its second image on: densecrf.backends.cpu.position_terms)
    # against one that rebuilds it, alternated call by call.
    kept, rebuilt = [], []
    for k in range(2 * n):
        if k % 2:
            position_terms.clear()
        t0 = time.perf_counter()
        densecrf.refine(im, pr, n_iter=args.iters, threads=1)
        (rebuilt if k % 2 else kept).append(time.perf_counter() - t0)
    print(
        f"  CRF with the Gaussian term kept {np.median(kept) * 1e3:7.2f} ms, rebuilt {np.median(rebuilt) * 1e3:7.2f} ms "
        f"(medians of {n} each, alternated)"
    )
    if pr.dtype == np.float16:  # the CRF's own widening of the map, against numpy's cast (same bits)
        pr32 = pr.astype(np.float32)
        assert np.array_equal(_checks.as_f32(pr, "probs"), pr32)
        for name, fn in (
            ("numpy's cast", lambda k: pr.astype(np.float32)),
            ("densecrf's (native)", lambda k: _checks.as_f32(pr, "probs", finite=False)),
        ):
            print(f"  inside the CRF: float16 to float32, {name:20s} {median_ms(fn, n):7.2f} ms")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        densecrf.refine(im, pr, n_iter=args.iters, threads=1)
    prof.disable()
    stats = pstats.Stats(prof).stats
    for (_, _, fname), (_, _, tottime, _, _) in sorted(stats.items(), key=lambda kv: -kv[1][2])[:5]:
        print(f"  inside the CRF: {fname:32s} {tottime / n * 1e3:7.2f} ms per call")


if __name__ == "__main__":
    main()
