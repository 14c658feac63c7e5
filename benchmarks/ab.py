"""Interleaved A/B timing of two builds of densecrf.

    python benchmarks/ab.py A_DIR B_DIR                         # refine, 5 and 10 iterations, 1 and 2 threads, 11 rounds
    python benchmarks/ab.py /tmp/ab_base . --rounds 21 --json ab.json
    python benchmarks/ab.py /tmp/ab_base . --op inference --iters 5 --threads 1 2
    python benchmarks/ab.py /tmp/ab_base . --iters 0 --labels 40 --size 1000 750

A_DIR and B_DIR each hold an importable ``densecrf`` package with its own
compiled ``_C`` module: a worktree (``densecrf/_C*.so`` built in place), or a
copy made for the purpose, e.g. of main before a change::

    mkdir -p /tmp/ab_base && cp -r /work/main/densecrf /tmp/ab_base/

On a shared or virtual host the same build's time moves by tens of percent
within minutes, so two builds timed one after the other are not comparable.
Here each build runs in a worker process of its own (``PYTHONPATH`` set to its
directory alone; the worker checks that ``densecrf`` was imported from there),
and the driver calls them in alternation: in the first half of the rounds A
then B for each case (ABAB...), in the second half B then A (BABA...), so
that a slow stretch and any first-or-second effect fall on both alike. Each
call is timed inside its worker (``perf_counter`` around the library call
alone; no pipe or pickling in the time).

Inputs: the reference workload (``densecrf.bench.reference_workload``:
500 x 375, K = 21 unless ``--size`` / ``--labels``), made once by build A's
package and handed to both workers as the same arrays. Before timing, each
case runs once on both (the warm-up) and the driver compares the two outputs'
bytes: "same bits" or the largest difference is printed per case;
``--require-same-bits`` turns a difference into exit status 1.

Operations (``--op``, repeatable): ``refine`` times ``densecrf.refine(image,
probs, n_iter, threads)``, the whole call; ``inference`` times
``DenseCRF2D.inference(n_iter)`` on terms built once (mean field alone).
Cases are every (op, iterations, threads) combination.

Report: per case the minimum and median of each build (ms) and B/A of the
minimum and of the median (below 1: B is faster). The minimum is the less
noisy estimate of what the code costs; the median says what a user sees
under the same load. On a noisy host repeat the run and give the ranges:
ratios within a few percent of 1 are noise. ``--json`` writes the command,
the host, the load average, every raw time and the ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

# ---------------------------------------------------------------------------
# Worker: one build, commands as JSON lines on stdin, answers on stdout.


def _worker(build_dir: str) -> None:
    import numpy as np

    import densecrf

    here = os.path.realpath(os.path.dirname(densecrf.__file__))
    if not here.startswith(os.path.realpath(build_dir) + os.sep):
        raise SystemExit(f"ab worker: densecrf was imported from {here}, not from {build_dir}")
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing the library prints may corrupt the protocol
    image = probs = None
    crfs = {}

    def reply(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"ready": here, "kernels": densecrf._build_info().get("kernels")})
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "make_inputs":
            from densecrf.bench import reference_workload

            img, p, source = reference_workload(width=msg["width"], height=msg["height"], n_labels=msg["labels"])
            np.savez(msg["path"], image=img, probs=p)
            reply({"source": source})
        elif cmd == "load":
            with np.load(msg["path"]) as z:
                image, probs = z["image"], z["probs"]
            reply({"shape": list(probs.shape)})
        elif cmd == "run":
            op, n_iter, threads = msg["op"], msg["iters"], msg["threads"]
            if op == "refine":
                t0 = time.perf_counter()
                q = densecrf.refine(image, probs, n_iter=n_iter, threads=threads)
                t = time.perf_counter() - t0
            else:  # inference: terms built once per thread count
                key = threads
                if key not in crfs:
                    h, w, k = probs.shape
                    crf = densecrf.DenseCRF2D(w, h, k, threads=threads)
                    crf.set_unary(densecrf.unary_from_softmax(probs))
                    crf.add_pairwise_gaussian(3.0, 3.0)
                    crf.add_pairwise_bilateral(80.0, 13.0, image, 10.0)
                    crfs[key] = crf
                t0 = time.perf_counter()
                q = crfs[key].inference(n_iter)
                t = time.perf_counter() - t0
            ans = {"t": t}
            if msg.get("digest"):
                q = np.ascontiguousarray(q)
                ans["sha256"] = hashlib.sha256(q.tobytes()).hexdigest()
                path = msg.get("save")
                if path:
                    np.save(path, q)
            reply(ans)
        elif cmd == "quit":
            reply({"bye": True})
            return


# ---------------------------------------------------------------------------
# Driver.


class Worker:
    def __init__(self, name: str, build_dir: str):
        build_dir = os.path.abspath(build_dir)
        if not os.path.isdir(os.path.join(build_dir, "densecrf")):
            raise SystemExit(f"{name}: {build_dir} holds no densecrf/ package")
        env = dict(os.environ)
        env["PYTHONPATH"] = build_dir
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.name, self.dir = name, build_dir
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_worker", build_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        hello = self._read()
        self.package, self.kernels = hello["ready"], hello["kernels"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(
                f"worker {self.name} ({self.dir}) exited (status {self.proc.wait()}); see its stderr above"
            )
        return json.loads(line)

    def ask(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.ask(cmd="quit")
        except (BrokenPipeError, SystemExit):
            pass
        self.proc.wait(timeout=30)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("a_dir", help="directory holding build A's densecrf/ (the baseline)")
    parser.add_argument("b_dir", help="directory holding build B's densecrf/ (the change)")
    parser.add_argument("--rounds", type=int, default=11, help="timed calls per build and case (default 11)")
    parser.add_argument(
        "--op", action="append", choices=("refine", "inference"), help="what to time (repeatable; default refine)"
    )
    parser.add_argument("--iters", type=int, nargs="+", default=[5, 10], help="mean-field iterations (default 5 10)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="native threads (default 1 2)")
    parser.add_argument(
        "--size", type=int, nargs=2, default=[500, 375], metavar=("W", "H"), help="image size (default 500 375)"
    )
    parser.add_argument("--labels", type=int, default=21, help="K (default 21)")
    parser.add_argument("--json", help="write the raw times and ratios here")
    parser.add_argument(
        "--require-same-bits", action="store_true", help="exit 1 when the two builds' outputs differ on any case"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    ops = args.op or ["refine"]
    cases = [(op, it, th) for op in ops for it in args.iters for th in args.threads]

    workers = [Worker("A", args.a_dir), Worker("B", args.b_dir)]
    a, b = workers
    print(f"A: {a.package} ({a.kernels})\nB: {b.package} ({b.kernels})")
    print(
        f"host: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {_load()}"
    )
    same = {}
    diffs = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "inputs.npz")
        src = a.ask(cmd="make_inputs", path=inputs, width=args.size[0], height=args.size[1], labels=args.labels)
        for w in workers:
            w.ask(cmd="load", path=inputs)
        print(f"inputs: {args.size[0]} x {args.size[1]}, K = {args.labels} ({src['source']}, made by A)")
        import numpy as np

        for case in cases:
            op, it, th = case
            outs = []
            for w in workers:
                path = os.path.join(tmp, f"{w.name}.npy")
                r = w.ask(cmd="run", op=op, iters=it, threads=th, digest=True, save=path)
                outs.append((r["sha256"], path))
            same[case] = outs[0][0] == outs[1][0]
            if not same[case]:
                qa, qb = np.load(outs[0][1]), np.load(outs[1][1])
                diffs[case] = float(np.abs(qa.astype(np.float64) - qb).max()) if qa.shape == qb.shape else float("nan")

        times = {case: {"A": [], "B": []} for case in cases}
        t_start = time.time()
        for rnd in range(args.rounds):
            order = workers if rnd < (args.rounds + 1) // 2 else workers[::-1]
            for case in cases:
                op, it, th = case
                for w in order:
                    times[case][w.name].append(w.ask(cmd="run", op=op, iters=it, threads=th)["t"])
        elapsed = time.time() - t_start
    for w in workers:
        w.close()

    print(f"{args.rounds} rounds (first half ABAB, second BABA), {elapsed:.0f} s, load after {_load()}\n")
    print("| case | A min / median ms | B min / median ms | B/A min | B/A median | outputs |")
    print("|---|---:|---:|---:|---:|---|")
    rows = []
    for case in cases:
        op, it, th = case
        ta, tb = times[case]["A"], times[case]["B"]
        amin, amed, bmin, bmed = min(ta), statistics.median(ta), min(tb), statistics.median(tb)
        bits = "same bits" if same[case] else f"DIFFER (max |dQ| {diffs[case]:.3g})"
        print(
            f"| {op}, {it} it, {th} thr | {amin * 1e3:.1f} / {amed * 1e3:.1f} | {bmin * 1e3:.1f} / {bmed * 1e3:.1f} "
            f"| {bmin / amin:.3f} | {bmed / amed:.3f} | {bits} |"
        )
        rows.append(
            {
                "op": op,
                "iters": it,
                "threads": th,
                "a_times_s": ta,
                "b_times_s": tb,
                "ratio_min": bmin / amin,
                "ratio_median": bmed / amed,
                "same_bits": same[case],
                "max_abs_diff": diffs.get(case, 0.0),
            }
        )
    if args.json:
        doc = {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "a": a.package,
            "b": b.package,
            "kernels": {"a": a.kernels, "b": b.kernels},
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "rounds": args.rounds,
            "size": args.size,
            "labels": args.labels,
            "cases": rows,
        }
        tmp_json = args.json + ".tmp"
        with open(tmp_json, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp_json, args.json)
        print(f"\nraw times: {args.json}")
    if args.require_same_bits and not all(same.values()):
        print("outputs differ between A and B (--require-same-bits)")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "_worker":
        _worker(sys.argv[2])
    else:
        sys.exit(main())
