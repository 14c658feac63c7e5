"""Runs one (peer, case) in a fresh child process: its times and its peak resident memory.

Peak memory of native code is invisible to tracemalloc, so each measurement
runs in its own process, which reports ``VmHWM`` from /proc/self/status at
its end: the kernel's high-water mark of its resident set, covering every
allocation (numpy, C++, Eigen, torch). Not ``ru_maxrss`` (getrusage or
os.wait4 on the child): Linux carries the parent's high-water mark across
fork and exec into the child's ru_maxrss, so a child of a 600 MB parent
reports at least 600 MB whatever it does. The child imports only the peer it
runs, loads the inputs from an .npz written by the parent (so input generation
leaves no temporaries in its high-water mark), records its resident set just
before the first call (``base``), then calls: ``peak - base`` is what the
call itself needed.

Child usage (internal): ``python childproc.py INPUTS.npz OUT.json SPEC_JSON``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _densecrf_phases(image, probs, params, n_iter, threads):
    """densecrf's whole call split into setup (unary, features, lattices) and inference.

    Equivalent to densecrf.refine; written out so that the bilateral term can
    have any number of channels, none included (d = 2).
    """
    import numpy as np

    import densecrf

    t0 = time.perf_counter()
    h, w, k = probs.shape
    n = h * w
    crf = densecrf.DenseCRF(n, k, threads=threads)
    crf.set_unary(densecrf.unary_from_softmax(probs))
    crf.add_pairwise(densecrf.grid_positions((h, w), params["gaussian_sxy"]), params["gaussian_compat"])
    feats = densecrf.grid_positions((h, w), params["bilateral_sxy"])
    if image.shape[2]:
        feats = np.concatenate(
            [feats, image.reshape(n, -1).astype(np.float32) / np.float32(params["bilateral_srgb"])], axis=1
        )
    crf.add_pairwise(feats, params["bilateral_compat"])
    t1 = time.perf_counter()
    q = crf.inference(n_iter)
    t2 = time.perf_counter()
    return q, t1 - t0, t2 - t1


def child_main(argv) -> int:
    inputs, out_path, spec = argv[0], argv[1], json.loads(argv[2])
    sys.path.insert(0, HERE)
    import peers
    import workloads

    peer, n_iter, threads = spec["peer"], spec["iters"], spec["threads"]
    params = spec.get("params", workloads.CLASSIC)
    phases = spec.get("phases", False)
    if peer == "densecrf":
        import densecrf

        densecrf.set_num_threads(threads)
    image, probs = workloads.load(inputs)
    call = None
    if not phases:
        call, reason = peers.load_peer(peer)
        if call is None:
            json.dump({"error": reason}, open(out_path, "w"))
            return 0
    base = _rss_mb()
    totals, setups, infers = [], [], []
    for r in range(spec.get("warmup", 1) + spec.get("repeats", 1)):
        t0 = time.perf_counter()
        if phases:
            _, ts, ti = _densecrf_phases(image, probs, params, n_iter, threads)
        else:
            call(image, probs, params, n_iter, threads)
            ts = ti = float("nan")
        t = time.perf_counter() - t0
        if r >= spec.get("warmup", 1):
            totals.append(t)
            setups.append(ts)
            infers.append(ti)
    res = {"base_mb": base, "peak_mb": _rss_mb("VmHWM"), "times": totals}
    if totals:
        res["median_s"] = statistics.median(totals)
        res["min_s"] = min(totals)
    if phases and totals:
        res["setup_s"] = statistics.median(setups)
        res["infer_s"] = statistics.median(infers)
        # the split of the fastest call
        fastest = totals.index(min(totals))
        res["setup_min_s"], res["infer_min_s"] = setups[fastest], infers[fastest]
    with open(out_path, "w") as f:
        json.dump(res, f)
    return 0


def run_child(inputs: str, spec: dict, timeout: float = 600.0) -> dict:
    """Runs one measurement in a child; returns its JSON: times, ``peak_mb`` (VmHWM), ``base_mb``, ``call_mb``.

    ``spec``: peer, iters, threads, and optionally params, warmup, repeats,
    phases (densecrf only: setup and inference timed apart). On failure the
    result has ``error``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "out.json")
        err_path = os.path.join(tmp, "err.txt")
        env = dict(os.environ)
        # One thread count for everything in the child (OpenMP, BLAS, torch).
        env["OMP_NUM_THREADS"] = str(spec["threads"])
        with open(err_path, "w") as err:
            p = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), inputs, out_path, json.dumps(spec)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
            timer = threading.Timer(timeout, p.kill)
            timer.start()
            try:
                _, status, _ = os.wait4(p.pid, 0)
            finally:
                timer.cancel()
            p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0 or not os.path.exists(out_path):
            tail = open(err_path).read().strip().splitlines()[-3:]
            return {"error": f"child exited with {p.returncode}: {' | '.join(tail)}"}
        res = json.load(open(out_path))
    if "base_mb" in res:
        res["call_mb"] = res["peak_mb"] - res["base_mb"]
    return res


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
