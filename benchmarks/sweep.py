"""Scaling sweeps of densecrf's whole call: image size N, labels K, feature dimension d, iterations.

Each case runs in its own child process (childproc.py) at 1 and 2 threads:
one warm-up call then --repeats timed calls (median), split into setup
(unary, features, lattice builds) and inference, and the child's peak
resident memory (VmHWM). Inputs come from workloads.py: the reference photo
mirror-tiled to each size, so that the per-pixel statistics stay those of one
photo and time per pixel should be flat in N.

    sweep N:      128^2 ... 2048^2, K = 21, 5 iterations
    sweep K:      2 ... 64 labels on 500 x 375, 5 iterations
    sweep d:      bilateral feature dimension 2 ... 8 on 500 x 375, K = 21
    sweep iters:  1 ... 20 iterations on the reference workload

Writes sweep.md (a table per sweep, with the command and the machine),
sweep.csv and sweep.png (time per pixel against N, K, d and iterations)
into --out (default benchmarks/results/). --stat min reports and plots each
case's fastest call (with its own setup / inference split) instead of the
median: on a host whose speed drifts for seconds at a time the minimum
shows the cost of the work, the median also the host's noise. --with-pydensecrf adds pydensecrf
to the N and K sweeps (time and memory, same children). --quick runs small
sizes and writes sweep_quick.* (under a minute).

    python benchmarks/sweep.py --quick
    python benchmarks/sweep.py                       # all four sweeps
    python benchmarks/sweep.py --sweeps N K --with-pydensecrf --repeats 5
    python benchmarks/sweep.py --with-pydensecrf --repeats 7 --stat min
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import childproc  # noqa: E402
import workloads  # noqa: E402
from side_by_side import machine_info  # noqa: E402

FULL = {
    "N": [128, 256, 512, 1024, 1448, 2048],
    "K": [2, 4, 8, 16, 21, 32, 64],
    "d": [2, 3, 4, 5, 6, 7, 8],
    "iters": [1, 2, 5, 10, 20],
}
QUICK = {"N": [64, 128, 256], "K": [2, 8, 21], "d": [2, 5, 8], "iters": [1, 5]}
QUICK_SIZE = (200, 150)  # W, H of the K, d and iterations sweeps with --quick
LARGE = 1 << 20  # pixels above which a case gets one timed call


def cases(sweep: str, values, quick: bool):
    """Yields (value, Workload, n_iter) for one sweep."""
    w, h = QUICK_SIZE if quick else (workloads.REF_WIDTH, workloads.REF_HEIGHT)
    for v in values:
        if sweep == "N":
            yield v, workloads.by_size(v), 5
        elif sweep == "K":
            yield v, workloads.by_labels(v, w, h), 5
        elif sweep == "d":
            yield v, workloads.by_feature_dim(v, w, h), 5
        else:
            yield v, workloads.by_labels(workloads.REF_LABELS, w, h), v


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def plot(rows, path, stat="median"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sweeps = [s for s in ("N", "K", "d", "iters") if any(r["sweep"] == s for r in rows)]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 3.6), squeeze=False)
    xlabel = {"N": "pixels N", "K": "labels K", "d": "bilateral feature dimension d", "iters": "iterations"}
    for ax, s in zip(axes[0], sweeps, strict=True):
        sel = [r for r in rows if r["sweep"] == s and r.get(stat + "_s")]
        for key in sorted({(r["peer"], r["threads"]) for r in sel}):
            pts = sorted(
                (r["n_pixels"] if s == "N" else r["x"], 1e9 * r[stat + "_s"] / r["n_pixels"])
                for r in sel
                if (r["peer"], r["threads"]) == key
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{key[0]}, {key[1]} thr")
        if s == "N":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(xlabel[s])
        ax.set_ylabel("ns per pixel (whole call)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"densecrf scaling ({'fastest' if stat == 'min' else 'median'} of repeats, setup + inference)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweeps", nargs="+", choices=list(FULL), default=list(FULL))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per case after one warm-up (default 3)")
    ap.add_argument(
        "--full-repeats",
        action="store_true",
        help=f"--repeats timed calls for every case (default: one above {LARGE} pixels)",
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 repeat, outputs named sweep_quick.*")
    ap.add_argument("--with-pydensecrf", action="store_true", help="add pydensecrf to the N and K sweeps")
    ap.add_argument("--sizes", type=int, nargs="+", help="override the N sweep's sides")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder (default benchmarks/results)")
    ap.add_argument(
        "--stat",
        choices=["median", "min"],
        default="median",
        help="statistic of the repeats in the table and plot (default median)",
    )
    args = ap.parse_args(argv)
    values = dict(QUICK if args.quick else FULL)
    if args.sizes:
        values["N"] = args.sizes
    repeats = 1 if args.quick else args.repeats
    stem = "sweep_quick" if args.quick else "sweep"
    os.makedirs(args.out, exist_ok=True)
    info = machine_info()
    command = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
    print(f"# {command}\n# {info['date']}; {info['cpu']}; {info['cores']} cores; load {info['loadavg']}")

    rows = []
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.sweeps:
            for x, wl, n_iter in cases(s, values[s], args.quick):
                path = os.path.join(tmp, "inputs.npz")
                wl.save(path)
                runs = [("densecrf", t) for t in args.threads]
                if args.with_pydensecrf and s in ("N", "K"):
                    runs.append(("pydensecrf", 1))
                for peer, t in runs:
                    # Above LARGE pixels one timed call (after the warm-up) is enough
                    # and keeps the default run near 3 minutes.
                    reps = repeats if wl.n_pixels <= LARGE or args.full_repeats else 1
                    spec = {
                        "peer": peer,
                        "iters": n_iter,
                        "threads": t,
                        "params": wl.params,
                        "warmup": 1,
                        "repeats": reps,
                        "phases": peer == "densecrf",
                    }
                    res = childproc.run_child(path, spec)
                    mn = args.stat == "min"
                    row = {
                        "sweep": s,
                        "x": x,
                        "peer": peer,
                        "threads": t,
                        "width": wl.width,
                        "height": wl.height,
                        "n_pixels": wl.n_pixels,
                        "K": wl.n_labels,
                        "d": wl.feature_dim,
                        "iters": n_iter,
                        "median_s": res.get("median_s"),
                        "min_s": res.get("min_s"),
                        "setup_s": res.get("setup_min_s" if mn else "setup_s"),
                        "infer_s": res.get("infer_min_s" if mn else "infer_s"),
                        "peak_mb": res.get("peak_mb"),
                        "call_mb": res.get("call_mb"),
                        "error": res.get("error", ""),
                    }
                    rows.append(row)
                    if row["error"]:
                        print(f"{s}={x} {peer} {t} thr: ERROR {row['error']}")
                    else:
                        tot = row[args.stat + "_s"]
                        print(
                            f"{s}={x:>5} {peer:>10} {t} thr: {tot:.4f} s "
                            f"({1e9 * tot / row['n_pixels']:.0f} ns/px), peak {row['peak_mb']:.0f} MB",
                            flush=True,
                        )
            os.remove(path)

    fields = [
        "sweep",
        "x",
        "peer",
        "threads",
        "width",
        "height",
        "n_pixels",
        "K",
        "d",
        "iters",
        "median_s",
        "min_s",
        "setup_s",
        "infer_s",
        "peak_mb",
        "call_mb",
        "error",
    ]
    with open(os.path.join(args.out, stem + ".csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=fields)
        wr.writeheader()
        wr.writerows(rows)
    lines = [
        "# densecrf scaling sweeps",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, load {info['loadavg']:.2f} at start; "
        f"python {info['python']}, numpy {info['numpy']}, densecrf {info['densecrf']} "
        f"kernels {info['densecrf_kernels']}; {info['date']}; image {wl.source}; "
        f"{repeats} timed call(s) after a warm-up (one above {LARGE} pixels unless --full-repeats), "
        + ("the fastest call (its setup / inference split); " if args.stat == "min" else "median; ")
        + "peak = child VmHWM, call = peak minus RSS before the call.",
        "",
        f"![time per pixel]({stem}.png)",
        "",
    ]
    for s in args.sweeps:
        head = "side" if s == "N" else s
        lines += [
            f"## {s}",
            "",
            "| "
            + head
            + " | W x H | K | d | iters | peer | threads | total s | setup s | inference s | ns/px | peak MB | call MB |",
            "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in (r for r in rows if r["sweep"] == s):
            tot = r[args.stat + "_s"]
            nspx = None if tot is None else 1e9 * tot / r["n_pixels"]
            lines.append(
                f"| {r['x']} | {r['width']} x {r['height']} | {r['K']} | {r['d']} | {r['iters']} | {r['peer']} | "
                f"{r['threads']} | {fmt(tot, '.4f')} | {fmt(r['setup_s'], '.4f')} | "
                f"{fmt(r['infer_s'], '.4f')} | {fmt(nspx, '.0f')} | {fmt(r['peak_mb'], '.0f')} | "
                f"{fmt(r['call_mb'], '.0f')} |" + (f" {r['error']}" if r["error"] else "")
            )
        lines.append("")
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write("\n".join(lines))
    written = ["md", "csv"]
    try:
        plot(rows, os.path.join(args.out, stem + ".png"), args.stat)
        written.append("png")
    except ImportError as exc:
        print(f"no plot ({exc}); pip install matplotlib")
    print(f"wrote {os.path.join(args.out, stem)}.{{{','.join(written)}}} in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
