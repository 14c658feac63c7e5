"""Repeats every native entry point many times and checks that memory stays flat.

    python tools/leak_check.py            # 1000 calls of each entry point
    python tools/leak_check.py -n 200     # quicker

For each entry point: warm up (so that caches, the thread pool and numpy's
allocator reach their steady state), trim the C heap, read the resident set
size, run n more calls, trim and read again. A leak of even 1 KiB per call
shows as 1 MiB over 1000 calls, the bound used here; the buffers each call
allocates and frees are 100 KiB to 1 MiB, so leaking any of them would exceed it
many times over. Error paths (native exceptions) are exercised too, since a
throw that skips a free is the classic leak. Exits non-zero on growth.

Under the ASan build (tools/asan_build.sh), LeakSanitizer gives the
allocation-level view instead:

    ASAN_OPTIONS=detect_leaks=1 LD_PRELOAD="$(g++ -print-file-name=libasan.so)" \\
        .venv-asan/bin/python -P tools/leak_check.py -n 1000
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys

import numpy as np

import densecrf
from densecrf import _C
from densecrf.compat.pydensecrf import densecrf as dcrf

_PAGE = os.sysconf("SC_PAGE_SIZE")
try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # pragma: no cover - not glibc
    _libc = None


def rss_bytes() -> int:
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)  # return freed heap pages, so RSS tracks live memory
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def _entry_points():
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    feats = (rng.random((n, 5)) * 8).astype(np.float32)
    values = rng.random((n, k)).astype(np.float32)
    unary = rng.normal(size=(n, k)).astype(np.float32)
    lat = _C.Lattice(feats, 2)
    term = _C.PairwiseTerm(lat, 3, 0, np.array([3.0], np.float32), k, 2)
    image = rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)
    probs = rng.random((50, 80, k)).astype(np.float32)
    probs /= probs.sum(-1, keepdims=True)
    bad_feats = feats.copy()
    bad_feats[7, 2] = 3e9  # beyond the lattice key range: the native build throws

    def native_error():
        try:
            _C.Lattice(bad_feats, 2)
        except ValueError:
            return
        raise AssertionError("expected the native key-range error")

    def native_shape_error():
        try:
            term.apply(values[:10], False, 2)
        except ValueError:
            return
        raise AssertionError("expected the native shape error")

    def compat_flow():
        d = dcrf.DenseCRF2D(80, 50, k)
        d.setUnaryEnergy(np.ascontiguousarray(-np.log(probs.reshape(-1, k).T)))
        d.addPairwiseGaussian(3, 3)
        d.addPairwiseBilateral(60, 13, image, 5)
        d.inference(2)

    return {
        "_C.Lattice (build)": lambda: _C.Lattice(feats, 2),
        "_C.Lattice.filter": lambda: lat.filter(values, False, 2),
        "_C.Lattice.filter transpose": lambda: lat.filter(values, True, 2),
        "_C.PairwiseTerm (build)": lambda: _C.PairwiseTerm(lat, 3, 2, np.eye(k, dtype=np.float32).ravel(), k, 2),
        "_C.PairwiseTerm.apply": lambda: term.apply(values, False, 2),
        "_C.mean_field": lambda: _C.mean_field(unary, [term], 3, None, 2),
        "_C.mean_field from Q": lambda: _C.mean_field(unary, [term], 1, values, 2),
        "native error path (key range)": native_error,
        "native error path (shape)": native_shape_error,
        "densecrf.refine": lambda: densecrf.refine(image, probs, n_iter=2),
        "compat DenseCRF2D flow": compat_flow,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="calls per entry point (default 1000)")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--limit-kib", type=int, default=1024, help="allowed RSS growth per entry point")
    args = ap.parse_args(argv)
    failed = []
    for name, fn in _entry_points().items():
        for _ in range(args.warmup):
            fn()
        before = rss_bytes()
        for _ in range(args.n):
            fn()
        grown = (rss_bytes() - before) / 1024
        ok = grown <= args.limit_kib
        print(f"{'ok  ' if ok else 'LEAK'} {name:34s} {args.n} calls: RSS {grown:+8.0f} KiB")
        if not ok:
            failed.append(name)
    if failed:
        print(f"leak_check: RSS grew more than {args.limit_kib} KiB for: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"leak_check: no growth over {args.limit_kib} KiB in {args.n} calls of each entry point")
    return 0


if __name__ == "__main__":
    sys.exit(main())
