"""Concurrency: Python threads calling at once, and forked / spawned worker processes.

Every wait has a timeout, so a deadlock fails the test instead of blocking CI.
Results must be bit-identical to sequential calls: the native core is
deterministic for any thread count, and a region started while the pool is
busy runs inline with the same chunking.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import densecrf

# Generous for the work (each call is milliseconds) on a loaded 2-core
# machine; only a hang gets near it.
TIMEOUT_S = 120


def _problem(seed, h=100, w=120, k=5):
    # 12000 points: several 2048-point chunks, so the thread pool really runs.
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    p = rng.random((h, w, k)) ** 2 + 1e-3
    return image, (p / p.sum(-1, keepdims=True)).astype(np.float32)


def _refine(seed, threads=2):
    image, probs = _problem(seed)
    return densecrf.refine(image, probs, n_iter=4, threads=threads)


def test_threads_calling_refine_at_once_match_sequential():
    seeds = list(range(8))
    want = {s: _refine(s) for s in seeds}
    barrier = threading.Barrier(4, timeout=TIMEOUT_S)

    def work(seed):
        barrier.wait() if seed < 4 else None  # the first four start together
        return seed, [_refine(seed) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=4) as ex:
        futures = [ex.submit(work, s) for s in seeds]
        for f in futures:
            seed, results = f.result(timeout=TIMEOUT_S)
            for r in results:
                assert np.array_equal(r, want[seed])


def test_threads_sharing_one_lattice_and_crf():
    # One lattice and one CRF object used from several threads at once: both
    # are read-only after construction.
    rng = np.random.default_rng(3)
    feats = rng.random((20000, 5)).astype(np.float32) * 10
    values = [rng.random((20000, c)).astype(np.float32) for c in (1, 3, 4, 7)]
    lat = densecrf.PermutohedralLattice(feats, threads=2)
    crf = densecrf.DenseCRF(20000, 4, threads=2)
    crf.set_unary(rng.normal(size=(20000, 4)).astype(np.float32))
    crf.add_pairwise(feats, 3.0)
    want_f = [lat.filter(v, transpose=bool(i % 2)) for i, v in enumerate(values)]
    want_q = crf.inference(3)

    def work(i):
        return [lat.filter(values[i % 4], transpose=bool(i % 2)) for _ in range(5)], crf.inference(3)

    with ThreadPoolExecutor(max_workers=6) as ex:
        futures = [ex.submit(work, i) for i in range(12)]
        for i, f in enumerate(futures):
            outs, q = f.result(timeout=TIMEOUT_S)
            assert all(np.array_equal(o, want_f[i % 4]) for o in outs)
            assert np.array_equal(q, want_q)


def test_set_num_threads_while_others_run():
    # Changing the default thread count mid-flight must not change any result.
    want = _refine(11, threads=None)
    stop = threading.Event()

    def toggler():
        while not stop.is_set():
            for n in (1, 2, 3):
                densecrf.set_num_threads(n)
        densecrf.set_num_threads(None)

    t = threading.Thread(target=toggler, daemon=True)
    t.start()
    try:
        with ThreadPoolExecutor(max_workers=3) as ex:
            for r in ex.map(lambda _: _refine(11, threads=None), range(9), timeout=TIMEOUT_S):
                assert np.array_equal(r, want)
    finally:
        stop.set()
        t.join(TIMEOUT_S)
    assert not t.is_alive()


def _child(seeds):
    return [_refine(s) for s in seeds]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_processes_after_parent_used_the_pool(method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    # The parent runs multi-threaded work first, so its pool has live workers
    # at fork time (as with a DataLoader started after a warm-up batch).
    want = [_refine(s, threads=2) for s in range(4)]
    ctx = mp.get_context(method)
    with ctx.Pool(2) as pool:
        got = pool.map_async(_child, [[0, 1], [2, 3]]).get(timeout=TIMEOUT_S)
        # A second round in the same workers: their own pools are reused.
        again = pool.map_async(_child, [[3, 2], [1, 0]]).get(timeout=TIMEOUT_S)
    assert all(np.array_equal(a, b) for a, b in zip(got[0] + got[1], want, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(again[0] + again[1], want[::-1], strict=True))


def test_fork_while_another_thread_is_inside_native_code():
    # A fork taken while a Python thread is in a parallel region: the child
    # gets a fresh pool and must still compute (not wait on the parent's
    # workers, which do not exist in it).
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    want = _refine(5)
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            _refine(6)

    t = threading.Thread(target=busy, daemon=True)
    t.start()
    try:
        ctx = mp.get_context("fork")
        for _ in range(3):
            with ctx.Pool(1) as pool:
                (got,) = pool.map_async(_child, [[5]]).get(timeout=TIMEOUT_S)
            assert np.array_equal(got[0], want)
    finally:
        stop.set()
        t.join(TIMEOUT_S)
