"""Where a local dataset run's wall time goes, against the per-image costs measured alone.

The pipeline's efficiency of issue "Refine whole datasets" is the measured
images/s over ``W / (read + CRF on one thread + write)``, the per-image costs
measured alone (benchmarks/dataset_throughput.py). This script splits the
gap between the two into three parts, on the same files (CamVid val, the
bundled network's maps as float32 ``.npy``, 10 iterations, classic
parameters; the data folder of dataset_throughput.py):

* **start-up**: from the command's start to the end of ``import densecrf``,
  plus the run's own set-up and the end of the run after its last item, as
  ``total - (run's seconds)`` of a fresh process;
* **orchestration**: the run's seconds less the workers' summed per-item
  times divided by W (``sum of read + CRF + write over the items / W``,
  each worker's share if the items were spread perfectly): what the
  parent, the pool and the tail of the last items cost beyond the items'
  own work;
* **slower items**: that share less the same sum measured alone (one process,
  one thread, nothing else running), i.e. how much slower each item's read,
  CRF and write ran beside W - 1 other workers than alone (shared caches,
  memory bandwidth, SMT siblings, the host's other tenants).

Each round runs, back to back: the items alone in this process, one API run
(``densecrf.refine_dataset`` with the local executor, W workers, in a fresh
process that reports its own times) and one whole CLI command (``python -m
densecrf refine ... --workers W --no-resume``, as dataset_throughput.py
times it). The ideal is the sum of the items' costs alone over W
(``dataset_throughput.item_costs``, which dataset_throughput.py's
efficiency uses as well). Medians over the rounds are printed; ``--json``
keeps every round.

    python benchmarks/pipeline_overhead.py --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dataset_throughput as dt  # noqa: E402

ITERS = dt.ITERS

# Run in a fresh interpreter: the API run and its own times. argv: images, maps, out, workers, start time.
_CHILD = """
import json, shutil, sys, time
images, maps, out, workers, t_start = sys.argv[1:6]
import densecrf
t_import = time.time()
shutil.rmtree(out, ignore_errors=True)
s = densecrf.refine_dataset(images, maps, out, executor="local", workers=int(workers), n_iter={iters},
                            resume=False, progress=False)
t_end = time.time()
if s.failed:
    raise SystemExit(f"items failed: {{s.failed}}")
print(json.dumps({{"import_s": t_import - float(t_start), "run_s": s.seconds, "stages": s.stage_seconds,
                  "n": len(s.done), "total_s": t_end - float(t_start)}}))
"""


def alone(dirs, stems) -> dict:
    """Per item, in this process on one thread: read (image + map), CRF, write (arg-max + PNG), seconds."""
    return dt.item_costs(dirs, "f32", stems, warm_up=True)


def api_run(dirs, workers: int, scratch: str) -> dict:
    env = {**os.environ, "PYTHONPATH": dt.ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD.format(iters=ITERS),
            dirs["images"],
            dirs["f32"],
            os.path.join(scratch, "api"),
            str(workers),
            repr(t0),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the API run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    return res


def cli_wall(dirs, workers: int, scratch: str) -> float:
    cmd = [sys.executable, "-m", "densecrf", "refine", dirs["images"], dirs["f32"], "-o", os.path.join(scratch, "cli")]
    return dt._timed(
        [*cmd, "--iters", str(ITERS), "--workers", str(workers), "--no-resume"], os.path.join(scratch, "cli")
    )


def one_round(dirs, stems, workers: int, scratch: str) -> dict:
    a = alone(dirs, stems)
    alone_sum = sum(map(sum, a.values()))
    api = api_run(dirs, workers, scratch)
    busy = sum(api["stages"].values()) / workers
    n = api["n"]
    cli = cli_wall(dirs, workers, scratch)
    ideal = alone_sum / workers
    return {
        "n": n,
        "alone_ms_per_item": {k: 1e3 * statistics.mean(v) for k, v in a.items()},
        "alone_median_ms_per_item": {k: 1e3 * statistics.median(v) for k, v in a.items()},
        "in_run_ms_per_item": {k: 1e3 * v / n for k, v in api["stages"].items()},
        "ideal_s": ideal,
        "api_total_s": api["total_s"],
        "api_wall_s": api["wall_s"],
        "cli_wall_s": cli,
        "startup_s": api["total_s"] - api["run_s"],
        "import_s": api["import_s"],
        "orchestration_s": api["run_s"] - busy,
        "slower_items_s": busy - ideal,
        "efficiency_api": ideal / api["wall_s"],
        "efficiency_cli": ideal / cli,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/tmp/densecrf_dataset_bench", help="dataset_throughput.py's data folder")
    p.add_argument("--limit", type=int, default=None, help="the first N frames only (all 101 by default)")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    dirs = dt.prepare(args.data, args.limit)
    stems = dirs["stems"]
    rounds = []
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        for k in range(args.rounds):
            r = one_round(dirs, stems, args.workers, scratch)
            rounds.append(r)
            print(
                f"round {k + 1}: alone CRF {r['alone_ms_per_item']['crf']:.1f} ms, in the run "
                f"{r['in_run_ms_per_item']['crf']:.1f} ms; ideal {r['ideal_s']:.2f} s, API {r['api_wall_s']:.2f} s "
                f"(start-up {r['startup_s']:.2f}, orchestration {r['orchestration_s']:.2f}, slower items "
                f"{r['slower_items_s']:.2f}), CLI {r['cli_wall_s']:.2f} s: efficiency {100 * r['efficiency_cli']:.0f} %",
                flush=True,
            )
    med = {
        k: statistics.median(r[k] for r in rounds)
        for k in (
            "ideal_s",
            "api_wall_s",
            "cli_wall_s",
            "startup_s",
            "import_s",
            "orchestration_s",
            "slower_items_s",
            "efficiency_api",
            "efficiency_cli",
        )
    }
    for stage in ("read", "crf", "write"):
        med[f"alone_{stage}_ms"] = statistics.median(r["alone_ms_per_item"][stage] for r in rounds)
        med[f"in_run_{stage}_ms"] = statistics.median(r["in_run_ms_per_item"][stage] for r in rounds)
    print(json.dumps(med, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"workers": args.workers, "n": len(stems), "rounds": rounds, "medians": med}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
