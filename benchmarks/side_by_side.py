"""densecrf against pydensecrf (and SimpleCRF, MONAI's CRF where they run) in one process.

Identical inputs (the reference workload of workloads.py unless --size is
given), the same timing for every peer: one warm-up call, then --repeats
rounds in which every (peer, threads) configuration is called once in turn,
so that load from other processes falls on all of them alike; the median
(and minimum) of each is reported. The timed call is the whole call: unary,
features, lattice builds, inference, Q as an array.

Before any time is printed, every peer's output is compared with densecrf's:
MAP label agreement and max |dQ|. pydensecrf must agree (>= 99.9 % of labels,
|dQ| <= 1e-3), else the script exits with status 1 after printing the table;
SimpleCRF returns labels only, MONAI's CRF uses unnormalised filters (a
different model), so their agreement is shown for information.

Peak memory: each (peer, threads, iterations) is run again alone in a child
process (childproc.py) and its ru_maxrss reported, as well as "call", the
peak minus the resident set before the first call (imports and inputs).

    python benchmarks/side_by_side.py                       # 1 and 2 threads, 5 and 10 iterations
    python benchmarks/side_by_side.py --threads 2 --iters 5 --repeats 11 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import childproc  # noqa: E402
import peers  # noqa: E402
import workloads  # noqa: E402

MAP_MIN, DQ_MAX = 0.999, 1e-3


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import densecrf

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "densecrf": densecrf.__version__,
        "densecrf_kernels": densecrf._build_info().get("kernels"),
    }
    try:
        from importlib.metadata import version

        info["pydensecrf2"] = version("pydensecrf2")
    except Exception:
        info["pydensecrf2"] = None
    return info


def _mb(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="densecrf thread counts (default 1 2)")
    ap.add_argument("--iters", type=int, nargs="+", default=[5, 10], help="mean-field iterations (default 5 10)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up (default 5)")
    ap.add_argument(
        "--peers",
        nargs="+",
        default=list(peers.ALL[1:]),
        help="peers besides densecrf (default: pydensecrf simplecrf monai; unavailable ones are skipped)",
    )
    ap.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("W", "H"),
        help="a mirror-tiled W x H photo instead of the 500 x 375 reference",
    )
    ap.add_argument("--labels", type=int, default=workloads.REF_LABELS, help="K (default 21)")
    ap.add_argument("--no-memory", action="store_true", help="skip the child-process peak-memory runs")
    ap.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    args = ap.parse_args(argv)

    if args.size:
        w, h = args.size
        image, regions, source = workloads.photo(w, h)
        wl = workloads.Workload(
            f"{w}x{h}-K{args.labels}",
            image,
            workloads.probs_from_regions(regions, args.labels),
            dict(workloads.CLASSIC),
            source,
        )
    else:
        wl = workloads.reference(args.labels)
    info = machine_info()
    print(f"# densecrf side by side: {wl.name} ({wl.width} x {wl.height}, K = {wl.n_labels}, image {wl.source})")
    print(
        f"# {info['date']}; {info['cpu']}; {info['cores']} cores; load {info['loadavg']}; python {info['python']}, "
        f"numpy {info['numpy']}, densecrf {info['densecrf']} kernels {info['densecrf_kernels']}, pydensecrf2 {info['pydensecrf2']}"
    )
    print(f"# command: python {' '.join([os.path.relpath(__file__)] + sys.argv[1:])}")

    calls, skipped = {}, {}
    for name in ["densecrf"] + [p for p in args.peers if p != "densecrf"]:
        call, reason = peers.load_peer(name)
        if call is None:
            skipped[name] = reason
            print(f"# skipped {name}: {reason}")
        else:
            calls[name] = call
    if "densecrf" not in calls:
        print("densecrf itself does not run", file=sys.stderr)
        return 2

    # Configurations: densecrf at each thread count; MONAI (torch) at the
    # largest; pydensecrf and SimpleCRF have no threads.
    tmax = max(args.threads)
    configs = [("densecrf", t) for t in args.threads]
    configs += [(p, 1 if p in peers.SINGLE_THREADED else tmax) for p in calls if p != "densecrf"]
    rows, ok = [], True
    for n_iter in args.iters:
        # Check before timing: the warm-up call's output is the one compared.
        outs = {}
        for name, t in configs:
            outs[(name, t)] = peers.as_hwk(name, calls[name](wl.image, wl.probs, wl.params, n_iter, t), wl.probs.shape)
        ref = outs[("densecrf", args.threads[0])]
        agree = {c: peers.compare(c[0], o, ref) for c, o in outs.items()}
        times = {c: [] for c in configs}
        for _ in range(args.repeats):
            for name, t in configs:
                t0 = time.perf_counter()
                calls[name](wl.image, wl.probs, wl.params, n_iter, t)
                times[(name, t)].append(time.perf_counter() - t0)
        for name, t in configs:
            a = agree[(name, t)]
            gated = name in peers.GATED or name == "densecrf"
            passed = a["map_agree"] >= MAP_MIN and (a["max_abs_dq"] is None or a["max_abs_dq"] <= DQ_MAX)
            if gated and not passed:
                ok = False
            rows.append(
                {
                    "iters": n_iter,
                    "peer": name,
                    "threads": t,
                    "median_s": statistics.median(times[(name, t)]),
                    "min_s": min(times[(name, t)]),
                    "times": times[(name, t)],
                    **a,
                    "agrees": passed,
                    "gated": gated,
                }
            )

    if not args.no_memory:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "inputs.npz")
            wl.save(path)
            for row in rows:
                res = childproc.run_child(
                    path,
                    {
                        "peer": row["peer"],
                        "iters": row["iters"],
                        "threads": row["threads"],
                        "params": wl.params,
                        "warmup": 0,
                        "repeats": 1,
                    },
                )
                row["peak_mb"] = res.get("peak_mb")
                row["call_mb"] = res.get("call_mb")
                if "error" in res:
                    row["memory_error"] = res["error"]

    print()
    print(
        "| iters | peer | threads | median s | min s | pydensecrf / this | MAP agree | max abs dQ | check | peak RSS MB | call MB |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for row in rows:
        base = next((r for r in rows if r["iters"] == row["iters"] and r["peer"] == "pydensecrf"), None)
        ratio = f"{base['median_s'] / row['median_s']:.2f}x" if base else "-"
        dq = "-" if row["max_abs_dq"] is None else f"{row['max_abs_dq']:.1e}"
        check = "ok" if row["agrees"] else "FAIL"
        if not row["gated"]:
            check = "info"
        print(
            f"| {row['iters']} | {row['peer']} | {row['threads']} | {row['median_s']:.4f} | {row['min_s']:.4f} | {ratio} | "
            f"{100 * row['map_agree']:.3f} % | {dq} | {check} | {_mb(row.get('peak_mb'))} | {_mb(row.get('call_mb'))} |"
        )
    print()
    for n_iter in args.iters:
        base = next((r for r in rows if r["iters"] == n_iter and r["peer"] == "pydensecrf"), None)
        if base is None:
            continue
        parts = [
            f"{base['median_s'] / r['median_s']:.2f}x at {r['threads']} thread{'s' if r['threads'] > 1 else ''}"
            for r in rows
            if r["iters"] == n_iter and r["peer"] == "densecrf"
        ]
        mem = ""
        dc = [r for r in rows if r["iters"] == n_iter and r["peer"] == "densecrf" and r.get("peak_mb")]
        if dc and base.get("peak_mb"):
            mem = f"; peak RSS {max(r['peak_mb'] for r in dc):.0f} MB vs {base['peak_mb']:.0f} MB"
        print(f"{n_iter} iterations: densecrf's speed-up over pydensecrf (median / median): {', '.join(parts)}{mem}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    if not ok:
        print(f"FAIL: a gated output disagrees with densecrf (need MAP >= {100 * MAP_MIN} %, max |dQ| <= {DQ_MAX})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "workload": wl.name,
                    "source": wl.source,
                    "machine": info,
                    "argv": sys.argv[1:],
                    "rows": rows,
                    "skipped": skipped,
                },
                f,
                indent=1,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
