"""Whole-dataset throughput: ``densecrf refine`` on folders against pydensecrf in a process pool.

The data: CamVid val frames and the bundled network's softmax maps, made
once by tools/camvid_probs.py (float16 ``[H, W, 11]``) under ``--data``
(default /tmp/densecrf_dataset_bench, never the repository), and from them
the same maps as float32 ``.npy`` and as compressed ``.npz`` (float32,
array ``prob``), so that the three layouts hold the same values.

Each timed run is a whole command in a fresh process, start-up included,
writing one palette PNG per frame (zlib level 6 on both sides) into an
empty folder:

* ``densecrf``: ``python -m densecrf refine IMAGES MAPS -o OUT --iters 10
  --workers W`` (classic parameters: Gaussian 3/3, bilateral 80/13/10);
* ``pydensecrf``: this script's ``pool`` command, the way weakly-supervised
  code runs pydensecrf: ``multiprocessing.Pool(W)`` over the frames, each
  worker reading its files with densecrf.io's readers (the same decoders),
  running pydensecrf's ``DenseCRF2D`` with ``unary_from_softmax`` and the
  same terms for 10 iterations, and writing the PNG with densecrf.io's
  writer (the same encoder and level);
* ``dask`` and ``ray``: ``densecrf refine --executor dask|ray --workers W``
  (a LocalCluster / local Ray instance started and stopped by the command).

Repeats alternate between the sides (densecrf, pydensecrf, densecrf, ...)
after one untimed warm-up of each (warm file cache); medians are reported.
Before any time is printed the outputs are checked: densecrf's PNGs against
pydensecrf's (label agreement over all pixels, >= 99.9 % required) and the
dask and ray PNGs byte for byte against the local ones.

The per-image costs measured alone, in this process on one thread, over the
same frames: read (image + map), CRF (``densecrf.refine(threads=1)``) and
write (arg-max + PNG), measured again in every repeat just before its
runs; the pipeline's efficiency is each repeat's measured images/s over
``W / (read + CRF + write)`` of that repeat, with the costs' means over the
frames (a run's time is their sum), the median over the repeats; the same
with the costs' medians is printed beside it. Before 2026-12-06 the costs
were medians measured once after all repeats, and this host's drift
between the two moved the ratio by tens of percent.

    python benchmarks/dataset_throughput.py --limit 8 --repeats 1        # a check that it runs
    python benchmarks/dataset_throughput.py --repeats 5 --json out.json  # the measurement (quiet machine)
    python benchmarks/dataset_throughput.py pool IMAGES MAPS OUT --workers 2   # the pydensecrf side alone
    python benchmarks/dataset_throughput.py --cuda --skip dask ray --layouts f16  # on a GPU machine

Sides beside the local executor: ``pydensecrf`` (above), ``dask`` and ``ray``
(a cluster started and stopped by each command), and ``dask-running`` and
``ray-running``: a cluster started once by this script before any timed
command (see ``RunningClusters``), each command connecting to it with
``--scheduler ADDRESS``, as a long-lived cluster is used (these two with
``--running``). ``--skip`` drops any.

With ``--cuda`` it also runs ``densecrf refine --executor cuda`` on the same
files and says what bounds it: the GPU alone (``densecrf.cuda.refine_batch``
on preloaded frames, numpy in and Q out) against reading and writing alone
on the reader processes; and the per-image time of 512 x 512 images (K = 21,
10 iterations) in batches of 16.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMVID = os.environ.get("DENSECRF_CAMVID", "/work/shared/data/camvid")
LAYOUTS = ("f32", "f16", "npz")
ITERS = 10
ENGINES = ("pydensecrf", "dask", "ray", "dask-running", "ray-running")  # the sides beside densecrf's local executor
AGREE_MIN = 0.999  # the criterion for label agreement with pydensecrf
RAY_CLI = os.path.join(os.path.dirname(sys.executable), "ray")  # the ray command of this environment


# -- the pydensecrf side: a pool of one process per core, as weakly-supervised code does it ----------
def _pool_init():
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _pool_one(job):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    from densecrf import io

    img_path, map_path, out_path = job
    img = io.read_image(img_path)
    probs = io.read_probs(map_path, img.shape[:2])
    h, w, k = probs.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.moveaxis(probs.astype(np.float32), -1, 0))))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.copy(img), compat=10)  # writable, as psa passes it
    q = np.array(crf.inference(ITERS)).reshape(k, h, w)
    io.write_labels(out_path, q.argmax(0).astype(np.uint8), io.voc_palette())
    return out_path


def cmd_pool(images: str, maps: str, out: str, workers: int) -> int:
    import multiprocessing as mp

    os.makedirs(out, exist_ok=True)
    jobs = []
    for img in sorted(glob.glob(os.path.join(images, "*.png"))):
        stem = os.path.splitext(os.path.basename(img))[0]
        (m,) = glob.glob(os.path.join(maps, stem + ".*"))
        jobs.append((img, m, os.path.join(out, stem + ".png")))
    with mp.Pool(workers, initializer=_pool_init) as pool:
        for _ in pool.imap_unordered(_pool_one, jobs):
            pass
    print(f"{len(jobs)} images")
    return 0


# -- data ----------------------------------------------------------------------------------
def prepare(data: str, limit: int | None) -> dict:
    """Folders of the frames and of their maps in the three layouts (made once, reused)."""
    f16 = os.path.join(data, "f16")
    if not os.path.isdir(f16) or not os.listdir(f16):
        env = {**os.environ, "PYTHONPATH": ROOT}
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "tools", "camvid_probs.py"), CAMVID, f16, "val"], check=True, env=env
        )
    stems = sorted(os.path.splitext(n)[0] for n in os.listdir(f16) if n.endswith(".npy"))
    if limit:
        stems = stems[:limit]
    tag = f"n{len(stems)}"
    dirs = {"images": os.path.join(data, tag, "images")}
    for layout in LAYOUTS:
        dirs[layout] = os.path.join(data, tag, layout)
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    for s in stems:
        img = os.path.join(dirs["images"], s + ".png")
        if not os.path.exists(img):
            shutil.copyfile(os.path.join(CAMVID, "val", s + ".png"), img)
        p = None
        for layout, name in (("f16", s + ".npy"), ("f32", s + ".npy"), ("npz", s + ".npz")):
            path = os.path.join(dirs[layout], name)
            if os.path.exists(path):
                continue
            p = np.load(os.path.join(f16, s + ".npy")) if p is None else p
            if layout == "f16":
                np.save(path, p)
            elif layout == "f32":
                np.save(path, p.astype(np.float32))
            else:
                np.savez_compressed(path, prob=p.astype(np.float32))
    dirs["n"] = len(stems)
    dirs["stems"] = stems
    return dirs


# -- timing --------------------------------------------------------------------------------
def _timed(cmd, out) -> float:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return dt


def side_commands(dirs, layout, workers, scratch, clusters=None):
    py = sys.executable
    maps = dirs[layout]
    clusters = clusters or {}
    base = [py, "-m", "densecrf", "refine", dirs["images"], maps, "--iters", str(ITERS), "--no-progress"]
    cmds = {
        "densecrf": (
            [*base, "-o", os.path.join(scratch, "densecrf"), "--workers", str(workers)],
            os.path.join(scratch, "densecrf"),
        ),
        "pydensecrf": (
            [
                py,
                os.path.abspath(__file__),
                "pool",
                dirs["images"],
                maps,
                os.path.join(scratch, "pydensecrf"),
                "--workers",
                str(workers),
            ],
            os.path.join(scratch, "pydensecrf"),
        ),
        "dask": (
            [*base, "-o", os.path.join(scratch, "dask"), "--executor", "dask", "--workers", str(workers)],
            os.path.join(scratch, "dask"),
        ),
        "ray": (
            [*base, "-o", os.path.join(scratch, "ray"), "--executor", "ray", "--workers", str(workers)],
            os.path.join(scratch, "ray"),
        ),
    }
    # A cluster that was running before the command (what `--scheduler ADDRESS` is for): no
    # --workers, so the command keeps two tasks per worker thread in flight.
    for side, address in (("dask-running", clusters.get("dask")), ("ray-running", clusters.get("ray"))):
        if address:
            out = os.path.join(scratch, side)
            engine = side.split("-")[0]
            # The benchmark's Ray head listens on loopback only, started without token authentication.
            prefix = ["env", "RAY_AUTH_MODE=disabled"] if engine == "ray" else []
            cmds[side] = ([*prefix, *base, "-o", out, "--executor", engine, "--scheduler", address], out)
    return cmds


class RunningClusters:
    """A Dask LocalCluster and a Ray head started once, before any timed command, stopped at the end.

    Dask: ``LocalCluster(n_workers=W, threads_per_worker=1, processes=True)``
    in this process (scheduler on 127.0.0.1), its workers preloading
    densecrf (``preload=["densecrf"]``), as a long-lived cluster's workers
    would (``dask worker --preload densecrf``), and without Dask's
    ``MALLOC_TRIM_THRESHOLD_`` (docs/datasets.md). Ray: ``ray start --head
    --num-cpus W`` on 127.0.0.1 as a separate process tree (token
    authentication off: ``RAY_AUTH_MODE=disabled`` on both ends), stopped by
    ``ray stop``.
    """

    def __init__(self, workers: int, want: set):
        self.workers, self.want = workers, want
        self.addresses: dict = {}
        self._dask = None

    def __enter__(self):
        if "dask-running" in self.want:
            import dask
            from distributed import LocalCluster

            # Configured as docs/datasets.md advises for one's own cluster (and as the command's
            # own LocalCluster runs): workers without Dask's MALLOC_TRIM_THRESHOLD_.
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                self._dask = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    preload=["densecrf"],
                )
            self.addresses["dask"] = self._dask.scheduler_address
        if "ray-running" in self.want:
            env = {
                **os.environ,
                "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "RAY_AUTH_MODE": "disabled",  # loopback only, for this benchmark
            }
            port = 6391
            subprocess.run(
                [
                    RAY_CLI,
                    "start",
                    "--head",
                    f"--num-cpus={self.workers}",
                    f"--port={port}",
                    "--include-dashboard=false",
                ],
                check=True,
                capture_output=True,
                env=env,
                cwd=ROOT,
            )
            self.addresses["ray"] = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        if self._dask is not None:
            self._dask.close()
        if "ray" in self.addresses:
            subprocess.run([RAY_CLI, "stop", "--force"], capture_output=True, check=False)


def agreement(a_dir, b_dir, stems) -> float:
    from densecrf import io

    same = total = 0
    for s in stems:
        a = io.read_labels(os.path.join(a_dir, s + ".png"))
        b = io.read_labels(os.path.join(b_dir, s + ".png"))
        same += int((a == b).sum())
        total += a.size
    return same / total


def identical(a_dir, b_dir, stems) -> bool:
    import filecmp

    return all(
        filecmp.cmp(os.path.join(a_dir, s + ".png"), os.path.join(b_dir, s + ".png"), shallow=False) for s in stems
    )


def item_costs(dirs, layout, stems, warm_up: bool = False) -> dict:
    """Seconds per frame, in this process on one thread, of what a worker does per item: read (image +
    map), CRF, write (the arg-max labels as a run takes them, ``work.labels_of``, and the PNG).
    ``warm_up``: one untimed CRF first (a process's first call sizes the native buffers' cache)."""
    import tempfile

    import densecrf
    from densecrf import io
    from densecrf.dataset import work

    ext = ".npz" if layout == "npz" else ".npy"

    def read(s):
        img = io.read_image(os.path.join(dirs["images"], s + ".png"))
        return img, io.read_probs(os.path.join(dirs[layout], s + ext), img.shape[:2])

    if warm_up:
        densecrf.refine(*read(stems[0]), n_iter=ITERS, threads=1)
    rows: dict = {"read": [], "crf": [], "write": []}
    with tempfile.TemporaryDirectory() as tmp:
        for s in stems:
            t0 = time.perf_counter()
            img, p = read(s)
            t1 = time.perf_counter()
            q = densecrf.refine(img, p, n_iter=ITERS, threads=1)
            t2 = time.perf_counter()
            io.write_labels(os.path.join(tmp, s + ".png"), work.labels_of(q), io.voc_palette())
            t3 = time.perf_counter()
            rows["read"].append(t1 - t0)
            rows["crf"].append(t2 - t1)
            rows["write"].append(t3 - t2)
    return rows


def per_image_costs(dirs, layout, stems) -> dict:
    """ms per image of read (image + map), CRF on one thread, and write (arg-max + PNG), measured alone
    (:func:`item_costs`): ``{"median": {...}, "mean": {...}}`` over the frames of each part."""
    rows = item_costs(dirs, layout, stems)
    return {
        name: {k: f(v) * 1e3 for k, v in rows.items()}
        for name, f in (("median", statistics.median), ("mean", statistics.mean))
    }


def _gpu_name() -> str:
    """torch's name of device 0 when torch is there (densecrf's device_name segfaulted on the H200 machine
    on 2026-12-04, at the end of this report), else densecrf's."""
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:
        from densecrf import cuda as dcuda

        return dcuda.device_name(0)


def cuda_report(dirs, layout, workers, batch_size, scratch, repeats) -> dict:
    """The cuda executor on the same files, and what bounds it: decoding on the CPUs or the GPU."""
    import densecrf.cuda as dcuda
    from densecrf import io

    n, stems = dirs["n"], dirs["stems"]
    out = os.path.join(scratch, "cuda")
    cmd = [
        sys.executable,
        "-m",
        "densecrf",
        "refine",
        dirs["images"],
        dirs[layout],
        "--iters",
        str(ITERS),
        "--no-progress",
        "-o",
        out,
        "--executor",
        "cuda",
        "--workers",
        str(workers),
        "--batch-size",
        str(batch_size),
    ]
    _timed(cmd, out)  # warm-up, and the outputs to check
    agree = agreement(out, os.path.join(scratch, "densecrf"), stems)
    runs = [_timed(cmd, out) for _ in range(repeats)]
    ext = ".npz" if layout == "npz" else ".npy"
    frames = [
        (
            io.read_image(os.path.join(dirs["images"], s + ".png")),
            np.asarray(io.read_probs(os.path.join(dirs[layout], s + ext)), np.float32),
        )
        for s in stems
    ]
    kw = {"n_iter": ITERS, "channels_first": False}
    gpu = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for i in range(0, n, batch_size):
            chunk = frames[i : i + batch_size]
            dcuda.refine_batch(np.stack([f[0] for f in chunk]), np.stack([f[1] for f in chunk]), **kw)
        gpu.append(time.perf_counter() - t0)
    # 512 x 512, K = 21, batches of 16: the per-image time of one batched call (numpy in, Q out).
    rng = np.random.default_rng(0)
    big_img = rng.integers(0, 256, (16, 512, 512, 3), dtype=np.uint8)
    logits = rng.normal(size=(16, 512, 512, 21)).astype(np.float32)
    big_p = np.exp(logits - logits.max(-1, keepdims=True))
    big_p /= big_p.sum(-1, keepdims=True)
    dcuda.refine_batch(big_img, big_p, **kw)
    big = []
    for _ in range(5):
        t0 = time.perf_counter()
        dcuda.refine_batch(big_img, big_p, **kw)
        big.append((time.perf_counter() - t0) / 16)
    return {
        "agreement_with_local": agree,
        "median_s": statistics.median(runs),
        "images_per_s": n / statistics.median(runs),
        "gpu_alone_per_s": n / statistics.median(gpu),
        "batch512_ms_per_image": statistics.median(big) * 1e3,
        "device": _gpu_name(),
    }


def main_bench(args) -> int:
    dirs = prepare(args.data, args.limit)
    n = dirs["n"]
    load = os.getloadavg()
    header = (
        f"{datetime.datetime.now().isoformat(timespec='seconds')} {platform.node()} "
        f"{os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {n} CamVid val frames, "
        f"{ITERS} iterations, classic parameters, {args.workers} workers, {args.repeats} repeats"
    )
    print(header, flush=True)
    report = {"header": header, "layouts": {}}
    wanted = ENGINES if args.running else ENGINES[:3]
    sides = ["densecrf"] + [s for s in wanted if s not in args.skip]
    with RunningClusters(args.workers, set(sides)) as running:
        for layout in args.layouts:
            _bench_layout(args, dirs, layout, sides, running.addresses, report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 1 if report.get("failed") else 0


def _bench_layout(args, dirs, layout, sides, clusters, report) -> None:
    n, stems = dirs["n"], dirs["stems"]
    scratch = os.path.join(args.data, f"out_n{n}")
    cmds = side_commands(dirs, layout, args.workers, os.path.join(scratch, layout), clusters)
    times = {s: [] for s in sides}
    for s in sides:  # warm-up: file cache, and the outputs to check
        _timed(*cmds[s])
    # Without the pydensecrf side (a GPU machine without it installed) there is nothing to agree with.
    agree = agreement(cmds["densecrf"][1], cmds["pydensecrf"][1], stems) if "pydensecrf" in sides else None
    same = {s: identical(cmds["densecrf"][1], cmds[s][1], stems) for s in sides if s not in ("densecrf", "pydensecrf")}
    both = []  # the costs alone measured in each repeat, just before its runs: medians and means over the frames
    for _ in range(args.repeats):
        both.append(per_image_costs(dirs, layout, stems))
        for s in sides:  # alternated: load from others falls on every side alike
            times[s].append(_timed(*cmds[s]))
    # This host's speed drifts by 20-50 % between stretches of a minute (benchmarks/RESULTS.md), so
    # each repeat's densecrf run is set against the costs measured right before it, and the
    # efficiency is the median of those ratios; the costs printed are their medians. The ideal is
    # W / (mean cost per frame): a run's time is the sum of its frames' costs, so the mean is the
    # bound; the median per frame (the figure before 2026-12-06) is printed beside it.
    per_repeat = [b["median"] for b in both]
    costs = {k: statistics.median(c[k] for c in per_repeat) for k in per_repeat[0]}
    implied = args.workers / (sum(costs.values()) / 1e3)

    def effs_of(stat):
        return [
            (n / t) / (args.workers / (sum(b[stat].values()) / 1e3))
            for t, b in zip(times["densecrf"], both, strict=True)
        ]

    effs, effs_median = effs_of("mean"), effs_of("median")
    row = {
        "agreement": agree,
        "identical": same,
        "costs_ms": costs,
        "costs_ms_per_repeat": both,
        "implied_per_s": implied,
        "efficiency_per_repeat": effs,
        "efficiency_per_repeat_median_costs": effs_median,
        "efficiency_median_costs": statistics.median(effs_median),
        "sides": {},
    }
    for s in sides:
        med = statistics.median(times[s])
        row["sides"][s] = {"median_s": med, "min_s": min(times[s]), "images_per_s": n / med, "runs": times[s]}
    d = row["sides"]["densecrf"]["images_per_s"]
    if "pydensecrf" in sides:
        row["speedup_vs_pydensecrf"] = d / row["sides"]["pydensecrf"]["images_per_s"]
    row["efficiency"] = statistics.median(effs)
    report["layouts"][layout] = row
    print(
        f"\n[{layout}] "
        + (
            f"labels agree with pydensecrf on {agree * 100:.3f} % of pixels"
            if agree is not None
            else "no pydensecrf side"
        )
        + "".join(f"; {s} PNGs {'identical' if ok else 'DIFFER'}" for s, ok in same.items())
    )
    for s in sides:
        r = row["sides"][s]
        print(f"  {s:12s} {r['median_s']:7.2f} s median ({r['min_s']:.2f} min)  {r['images_per_s']:6.2f} images/s")
    if "pydensecrf" in sides:
        print(f"  densecrf / pydensecrf: {row['speedup_vs_pydensecrf']:.2f}x")
    print(
        f"  alone, per image: read {costs['read']:.1f} ms, CRF (1 thread) {costs['crf']:.1f} ms, "
        f"write {costs['write']:.1f} ms -> {implied:.2f} images/s on {args.workers} workers; "
        f"efficiency {row['efficiency'] * 100:.0f} % (median over the repeats of each run against the mean "
        f"costs measured just before it: {', '.join(f'{100 * e:.0f}' for e in effs)} %; against the "
        f"median costs {row['efficiency_median_costs'] * 100:.0f} %: "
        f"{', '.join(f'{100 * e:.0f}' for e in effs_median)} %)"
    )
    if args.cuda:
        c = cuda_report(dirs, layout, args.workers, args.batch_size, os.path.join(scratch, layout), args.repeats)
        row["cuda"] = c
        decode = args.workers / ((costs["read"] + costs["write"]) / 1e3)
        bound = "the GPU" if c["gpu_alone_per_s"] < decode else "reading/decoding on the CPUs"
        print(
            f"  cuda ({c['device']}): {c['images_per_s']:.1f} images/s end to end "
            f"(labels agree with local on {c['agreement_with_local'] * 100:.3f} %); GPU alone "
            f"{c['gpu_alone_per_s']:.1f} images/s (numpy in, Q out), CPU read+write alone {decode:.1f} "
            f"images/s on {args.workers} readers: bound by {bound}; 512 x 512, K = 21 in batches of 16: "
            f"{c['batch512_ms_per_image']:.2f} ms per image"
        )
        if c["agreement_with_local"] < AGREE_MIN:
            report["failed"] = True
    if (agree is not None and agree < AGREE_MIN) or not all(same.values()):
        print("  CHECK FAILED: outputs disagree", flush=True)
        report["failed"] = True


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pool"]:
        p = argparse.ArgumentParser(prog="dataset_throughput.py pool")
        p.add_argument("images")
        p.add_argument("maps")
        p.add_argument("out")
        p.add_argument("--workers", type=int, default=os.cpu_count())
        a = p.parse_args(argv[1:])
        return cmd_pool(a.images, a.maps, a.out, a.workers)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/tmp/densecrf_dataset_bench", help="where the maps and outputs go")
    p.add_argument("--limit", type=int, default=None, help="the first N frames only (all 101 by default)")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    p.add_argument("--skip", nargs="*", choices=ENGINES, default=[])
    p.add_argument(
        "--running", action="store_true", help="also dask-running and ray-running (clusters started beforehand)"
    )
    p.add_argument("--json", default=None)
    p.add_argument("--cuda", action="store_true", help="also the cuda executor (needs a GPU)")
    p.add_argument("--batch-size", type=int, default=16, help="the cuda executor's batch (16)")
    return main_bench(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
