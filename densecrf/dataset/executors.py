"""Where a dataset run's items are refined: this machine's cores, a GPU, a Dask or a Ray cluster.

Every executor runs the same per-item code (:mod:`densecrf.dataset.work`),
so the CPU executors (``local``, ``dask``, ``ray``) write the same bits at
any worker count. Each takes an iterator of tasks and yields one
:class:`~densecrf.dataset.work.ItemResult` per task as items finish (not in
input order), with a bounded number of tasks in flight: results are
recorded as they come, so a killed run loses at most the items in flight.

``local``
    A process pool (``concurrent.futures.ProcessPoolExecutor``, forked on
    Linux) of one process per core, each refining one image at a time on
    one native thread: on the project's 2-core machine a pool of two
    one-thread processes refined 17.2 CamVid maps/s where one process
    calling ``refine`` on two threads refined 12.7 (the figures of issue 18,
    measured before this executor existed). The job is sent to each
    process once (the pool's initializer). The parent asks the kernel to
    read the files of queued items ahead (``posix_fadvise(WILLNEED)``) so
    that workers decode from memory; with one worker the items are refined
    in this process while a thread reads and decodes the next one.
``cuda``
    Batches of same-size images refined by one ``densecrf.cuda.refine_batch``
    call each, fed by reader processes that decode (and renormalise) items
    ahead; with torch's CUDA build present the batches go up through pinned
    host memory on a side stream while the previous batch computes, and
    only the labels come back. PNGs are written by the reader processes.
``dask``
    Dask distributed: a ``Client`` on a scheduler address (or a ``Client``
    given), or a ``LocalCluster(n_workers=N, threads_per_worker=1,
    processes=True)`` on this machine (scheduler, workers and HTTP server on
    127.0.0.1, free ports; workers without Dask's ``MALLOC_TRIM_THRESHOLD_``,
    which costs about 20 % here: see DaskExecutor) closed at the end. The job is scattered to every worker once
    (``client.scatter(..., broadcast=True)``); items go out with
    ``client.submit`` and come back through ``as_completed``.
``ray``
    Ray: the running Ray instance if there is one, a cluster address
    (``ray.init(address=...)``), or a local instance
    (``ray.init(address="local", num_cpus=N, include_dashboard=False)``: a new
    one even when a Ray cluster runs on this machine) shut down at the end.
    Items are ``@ray.remote(num_cpus=1)`` tasks; the job is put in the
    object store once (``ray.put``).

Dask and Ray workers read their inputs and write their outputs themselves:
on a cluster, the folders must be on a file system every worker sees.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from concurrent.futures import (
    FIRST_COMPLETED,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)

import numpy as np

from . import work
from .work import ItemResult, Job, Task

__all__ = ["EXECUTORS", "CudaExecutor", "DaskExecutor", "LocalExecutor", "RayExecutor", "make_executor"]

EXECUTORS = ("local", "cuda", "dask", "ray")


def cpu_count() -> int:
    """Cores this process may use (its affinity mask where the platform has one)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _mp_context():
    import multiprocessing as mp

    # fork: workers start in milliseconds with densecrf already imported (a
    # spawned worker re-imports numpy and densecrf, ~0.3 s each); the native
    # thread pool is fork-safe (tests/test_concurrency.py).
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context()


def _readahead(task: Task) -> None:
    """Asks the kernel to start reading a task's files (no-op where posix_fadvise is missing)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for path in task.input_paths():
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)


def _lost(task: Task, exc: BaseException) -> ItemResult:
    """A task whose worker failed (died, lost its connection): failed, to be redone by a rerun."""
    text = str(exc).strip().splitlines()
    return ItemResult(
        task.index,
        task.key,
        "failed",
        task.image if isinstance(task.image, str) else task.key,
        f"worker failed: {type(exc).__name__}: {text[0] if text else ''}".rstrip(": "),
    )


# -- local -------------------------------------------------------------------------
_JOB: Job | None = None


def _set_job(job: Job) -> None:
    global _JOB
    _JOB = job


def _run_task(task: Task) -> ItemResult:
    return work.process(task, _JOB)


class LocalExecutor:
    """This machine: ``workers`` processes (default: one per core), ``threads`` native threads each."""

    name = "local"

    def __init__(self, workers: int | None = None, threads: int = 1):
        self.workers = int(workers) if workers else cpu_count()
        self.threads = int(threads)
        if self.workers < 1 or self.threads < 1:
            raise ValueError(f"workers and threads must be >= 1, got {workers} and {threads}")

    def describe(self) -> str:
        return f"local, {self.workers} process(es) x {self.threads} thread(s)"

    def check(self) -> None:
        """Raises before any work when this executor cannot run here."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def run(self, tasks, job: Job):
        if self.workers == 1:
            yield from self._serial(tasks, job)
            return
        window = 2 * self.workers
        with ProcessPoolExecutor(self.workers, mp_context=_mp_context(), initializer=_set_job, initargs=(job,)) as pool:
            pending: dict = {}
            it = iter(tasks)
            exhausted = False
            try:
                while True:
                    while not exhausted and len(pending) < window:
                        task = next(it, None)
                        if task is None:
                            exhausted = True
                            break
                        _readahead(task)
                        pending[pool.submit(_run_task, task)] = task
                    if not pending:
                        return
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        task = pending.pop(fut)
                        try:
                            yield fut.result()
                        except Exception as exc:
                            yield _lost(task, exc)
            finally:
                for fut in pending:
                    fut.cancel()

    @staticmethod
    def _serial(tasks, job: Job):
        """One item at a time in this process, the next one read by a thread meanwhile."""
        it = iter(tasks)
        with ThreadPoolExecutor(1, thread_name_prefix="densecrf-read") as reader:
            task = next(it, None)
            fut = reader.submit(work.load, task, job) if task is not None else None
            while fut is not None:
                loaded = fut.result()
                current = task
                task = next(it, None)
                fut = reader.submit(work.load, task, job) if task is not None else None
                if isinstance(loaded, ItemResult):
                    yield loaded
                else:
                    yield work.refine_and_write(current, *loaded, job)


# -- cuda ----------------------------------------------------------------------------
def _read_for_gpu(task: Task):
    """Reader process: the item decoded and ready for the GPU (scores renormalised), or its failure."""
    job = _JOB
    loaded = work.load(task, job)
    if isinstance(loaded, ItemResult):
        return loaded
    image, probs, seconds = loaded
    t0 = time.perf_counter()
    try:
        p = np.asarray(probs)
        if not np.isfinite(p).all():  # a batch is one call: bad maps are caught here, one by one
            bad = np.argwhere(~np.isfinite(p))[0]
            raise ValueError(f"probs must be finite; found {p[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
        if job.scores:
            p, clip = work.as_distribution(p, job.clip)
        else:
            clip = job.clip
            sums = p.sum(axis=-1, dtype=np.float64)
            # 1e-2 and 1e-3: densecrf.refine's own tolerances.
            if p.min() < 0 or p.max() > 1 + 1e-3:
                raise ValueError(f"probs must lie in [0, 1]; found values in [{p.min():g}, {p.max():g}]")
            if np.abs(sums - 1).max() > 1e-2:
                raise ValueError("probs must sum to one over the label axis; pass softmax probabilities")
        if p.dtype not in (np.float16, np.float32):
            p = p.astype(np.float32)
    except ValueError as exc:
        return work.failed(task, exc)
    seconds["read"] += time.perf_counter() - t0
    return task, image, np.ascontiguousarray(p), clip, seconds


def _write_for_gpu(task: Task, labels: np.ndarray, q, seconds: dict) -> ItemResult:
    job = _JOB
    t0 = time.perf_counter()
    try:
        outputs = work.write_item(task, labels, q, job) if job.write else {}
    except (OSError, ValueError) as exc:
        return ItemResult(task.index, task.key, "failed", task.png, f"could not write: {exc}", seconds=seconds)
    seconds["write"] = time.perf_counter() - t0
    res = ItemResult(task.index, task.key, "done", outputs=outputs, seconds=seconds)
    if job.keep_arrays:
        res.labels = labels
        res.probs = q if job.return_probs else None
    return res


class CudaExecutor:
    """One GPU: batches of up to ``batch_size`` same-size images; ``workers`` reader processes."""

    name = "cuda"

    def __init__(self, workers: int | None = None, device: str = "cuda", batch_size: int = 8):
        self.workers = int(workers) if workers else cpu_count()
        self.device = str(device)
        self.batch_size = int(batch_size)
        if self.workers < 1 or self.batch_size < 1:
            raise ValueError(f"workers and batch_size must be >= 1, got {workers} and {batch_size}")

    def describe(self) -> str:
        return f"cuda ({self.device}), batches of {self.batch_size}, {self.workers} reader process(es)"

    def check(self) -> None:
        """No CUDA build, no device, or a bad device string: one clear error before any work."""
        from .. import arrays, cuda

        cuda.require_cuda()
        arrays.parse_device(self.device)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def run(self, tasks, job: Job):
        self.check()
        feeder = _TorchFeeder.make(self.device)
        window = max(2 * self.workers, 2 * self.batch_size)
        with ProcessPoolExecutor(self.workers, mp_context=_mp_context(), initializer=_set_job, initargs=(job,)) as pool:
            reading: dict = {}
            writing: dict = {}
            groups: dict = {}  # (shape of image, shape of probs, clip) -> [(task, image, probs, seconds)]
            it = iter(tasks)
            exhausted = False
            try:
                while True:
                    while not exhausted and len(reading) + sum(map(len, groups.values())) < window:
                        task = next(it, None)
                        if task is None:
                            exhausted = True
                            break
                        _readahead(task)
                        reading[pool.submit(_read_for_gpu, task)] = task
                    # A full group goes to the GPU. So does the largest one when nothing is left
                    # to read, or when the window is full of items waiting in groups too small
                    # (many sizes): reading more would need room, and nothing else frees it.
                    full = [g for g, items in groups.items() if len(items) >= self.batch_size]
                    room = window - len(reading) - sum(map(len, groups.values()))
                    if (
                        not full
                        and groups
                        and ((exhausted and not reading) or (room <= 0 and not any(f.done() for f in reading)))
                    ):
                        full = [max(groups, key=lambda g: len(groups[g]))]
                    for g in full:
                        items = groups.pop(g)
                        batch, rest = items[: self.batch_size], items[self.batch_size :]
                        if rest:
                            groups[g] = rest
                        yield from self._compute(batch, g[2], job, feeder, pool, writing)
                    if not reading and not groups and not writing and exhausted:
                        return
                    waiting = list(reading) + list(writing)
                    if not waiting:
                        continue
                    done, _ = wait(waiting, timeout=None if not full else 0, return_when=FIRST_COMPLETED)
                    for fut in done:
                        if fut in reading:
                            task = reading.pop(fut)
                            try:
                                got = fut.result()
                            except Exception as exc:
                                yield _lost(task, exc)
                                continue
                            if isinstance(got, ItemResult):
                                yield got
                                continue
                            t, image, p, clip, seconds = got
                            groups.setdefault((image.shape, p.shape, clip), []).append((t, image, p, seconds))
                        else:
                            task = writing.pop(fut)
                            try:
                                yield fut.result()
                            except Exception as exc:
                                yield _lost(task, exc)
            finally:
                for fut in list(reading) + list(writing):
                    fut.cancel()

    def _compute(self, batch, clip: float, job: Job, feeder, pool, writing):
        """Refines one batch on the GPU; hands the writing to the reader processes."""
        import dataclasses

        t0 = time.perf_counter()
        sub = dataclasses.replace(job, device=self.device, scores=False, clip=clip)
        keep = job.save_probs is not None or job.return_probs
        try:
            if feeder is not None:
                labels, qs = feeder.refine(batch, sub, keep_probs=keep)
            else:
                qs = work.refine_items([b[1] for b in batch], [b[2] for b in batch], sub)
                labels = [work.labels_of(q) for q in qs]
                if not keep:
                    qs = [None] * len(qs)
        except Exception as exc:
            for b in batch:
                yield work.failed(b[0], exc)
            return
        dt = (time.perf_counter() - t0) / len(batch)
        for (t, _, _, seconds), lab, q in zip(batch, labels, qs, strict=True):
            seconds["crf"] = dt
            writing[pool.submit(_write_for_gpu, t, lab, q, seconds)] = t


class _TorchFeeder:
    """Pinned host buffers and a copy stream, through torch's CUDA build (when it is installed)."""

    def __init__(self, torch, device):
        self.torch = torch
        self.device = torch.device(device)
        self.copy_stream = torch.cuda.Stream(self.device)

    @classmethod
    def make(cls, device: str):
        if "torch" not in sys.modules:
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                return None
        try:
            import torch

            if not torch.cuda.is_available():
                return None
            return cls(torch, device if device != "cuda" else "cuda:0")
        except Exception:
            return None

    def refine(self, batch, job: Job, keep_probs: bool):
        torch = self.torch
        with torch.cuda.device(self.device), torch.cuda.stream(self.copy_stream):
            imgs = torch.from_numpy(np.stack([b[1] for b in batch])).pin_memory()
            prbs = torch.from_numpy(np.stack([b[2] for b in batch])).pin_memory()
            d_img = imgs.to(self.device, non_blocking=True)
            d_prb = prbs.to(self.device, non_blocking=True).float()
        torch.cuda.current_stream(self.device).wait_stream(self.copy_stream)
        from .. import cuda

        kw = job.refine_kwargs()
        q = cuda.refine_batch(d_img.float(), d_prb, channels_first=False, device=self.device, **kw)
        labels = q.argmax(-1).to(torch.uint8 if q.shape[-1] <= 256 else torch.int32).cpu().numpy()
        lab = [labels[i] if q.shape[-1] <= 256 else labels[i].astype(np.uint16) for i in range(len(batch))]
        qs = list(q.cpu().numpy()) if keep_probs else [None] * len(batch)
        return lab, qs


# -- dask --------------------------------------------------------------------------
class DaskExecutor:
    """Dask distributed: ``scheduler`` an address or a ``distributed.Client``; else a LocalCluster of ``workers``."""

    name = "dask"

    def __init__(self, workers: int | None = None, scheduler=None):
        self.workers = int(workers) if workers else None
        self.scheduler = scheduler
        self.client = self._cluster = None
        self._own_client = False

    def describe(self) -> str:
        where = (
            self.scheduler
            if isinstance(self.scheduler, str)
            else "LocalCluster"
            if self.scheduler is None
            else "given client"
        )
        return f"dask ({where}), {self._in_flight()} task(s) in flight"

    def check(self) -> None:
        import importlib.util

        if importlib.util.find_spec("distributed") is None:
            raise ImportError("the dask executor needs dask.distributed: pip install 'densecrf[dask]'")

    def __enter__(self):
        self.check()
        from distributed import Client, LocalCluster

        if self.scheduler is None:
            import dask

            # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which also freezes
            # glibc's mmap threshold at 128 KiB: every large array of every item is then fresh
            # pages from the kernel. Measured here on CamVid maps (480 x 360 x 11, 10 iterations,
            # one thread): 8,000 page faults and 30-37 ms of system time per image, 0 and 2.4 ms
            # without it (benchmarks/RESULTS.md). The cluster is ours, so its workers run without it.
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                self._cluster = LocalCluster(
                    n_workers=self.workers or cpu_count(),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                )
            self.client = Client(self._cluster)
            self._own_client = True
        elif isinstance(self.scheduler, str):
            self.client = Client(self.scheduler)
            self._own_client = True
        else:
            self.client = self.scheduler
        return self

    def __exit__(self, *exc):
        if self._own_client and self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        self.client = self._cluster = None

    def _in_flight(self) -> int:
        if self.workers:
            return 2 * self.workers if self.scheduler is None else self.workers
        if self.client is not None:
            return max(2, 2 * sum(self.client.nthreads().values()))
        return 2 * cpu_count()

    def run(self, tasks, job: Job):
        from distributed import as_completed

        client = self.client
        job_f = client.scatter(job, broadcast=True, hash=False)
        window = self._in_flight()
        pending: dict = {}
        ac = as_completed()
        it = iter(tasks)

        def submit() -> bool:
            task = next(it, None)
            if task is None:
                return False
            fut = client.submit(work.process, task, job_f, pure=False)
            pending[fut] = task
            ac.add(fut)
            return True

        try:
            while len(pending) < window and submit():
                pass
            for fut in ac:
                task = pending.pop(fut)
                try:
                    yield fut.result()
                except Exception as exc:
                    yield _lost(task, exc)
                finally:
                    fut.release()
                submit()
        finally:
            for fut in pending:
                fut.cancel()
            with contextlib.suppress(Exception):
                client.cancel([job_f])


# -- ray ---------------------------------------------------------------------------
def ray_init(**kwargs):
    """``ray.init(**kwargs)`` from the folder that holds the imported densecrf package.

    Ray puts the driver's working directory at the front of its workers'
    ``sys.path``. Started from a source checkout (a repository root, as in
    ``pytest tests``), the workers would import the checkout's uncompiled
    ``densecrf`` instead of the installed one the driver uses and fail; from
    the package's own parent folder they import the same package as the driver.
    """
    import ray

    import densecrf

    here = os.getcwd()
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(densecrf.__file__))))
    try:
        return ray.init(**kwargs)
    finally:
        os.chdir(here)


class RayExecutor:
    """Ray: the running instance, ``scheduler`` (a cluster address) or a local instance of ``workers`` CPUs."""

    name = "ray"

    def __init__(self, workers: int | None = None, scheduler: str | None = None):
        self.workers = int(workers) if workers else None
        self.scheduler = scheduler
        self._own = False
        self._ray = None

    def describe(self) -> str:
        where = self.scheduler or ("running instance" if not self._own else "local instance")
        return f"ray ({where}), {self._in_flight()} task(s) in flight"

    def check(self) -> None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ImportError("the ray executor needs ray: pip install 'densecrf[ray]'")

    def __enter__(self):
        self.check()
        import ray

        self._ray = ray
        if not ray.is_initialized():
            if self.scheduler:
                ray_init(address=self.scheduler, log_to_driver=False)
            else:
                # address="local": a new instance even when a Ray cluster is already running on
                # this machine (a bare ray.init would join it, and then refuse num_cpus).
                ray_init(
                    address="local",
                    num_cpus=self.workers or cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            self._own = True
        return self

    def __exit__(self, *exc):
        if self._own:
            self._ray.shutdown()
            self._own = False

    def _in_flight(self) -> int:
        if self.workers:
            return 2 * self.workers if not self.scheduler else self.workers
        if self._ray is not None and self._ray.is_initialized():
            return max(2, 2 * int(self._ray.cluster_resources().get("CPU", 1)))
        return 2 * cpu_count()

    def run(self, tasks, job: Job):
        ray = self._ray
        remote = ray.remote(num_cpus=1)(work.process)
        job_ref = ray.put(job)
        window = self._in_flight()
        pending: dict = {}
        it = iter(tasks)

        def submit() -> bool:
            task = next(it, None)
            if task is None:
                return False
            pending[remote.remote(task, job_ref)] = task
            return True

        try:
            while len(pending) < window and submit():
                pass
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        yield ray.get(ref)
                    except Exception as exc:
                        yield _lost(task, exc)
                    submit()
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)


def make_executor(executor="local", *, workers=None, scheduler=None, threads=1, device="cuda", batch_size=8):
    """An executor object from its name (or the object itself)."""
    if not isinstance(executor, str):
        return executor
    if executor == "local":
        return LocalExecutor(workers, threads)
    if executor == "cuda":
        return CudaExecutor(workers, device, batch_size)
    if executor == "dask":
        return DaskExecutor(workers, scheduler)
    if executor == "ray":
        return RayExecutor(workers, scheduler)
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
