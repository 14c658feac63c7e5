"""The portable (baseline), AVX2 and 256-bit AVX-512 hot loops against the ones picked for this CPU.

On an AVX-512 machine the other loops never run unless forced with
DENSECRF_KERNELS=baseline, =avx2 or =avx512vl, which the picker reads once
per process; so each set runs in a subprocess of its own.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import densecrf

_SCRIPT = r"""
import sys, numpy as np, densecrf
sys.path.insert(0, sys.argv[2])
from reference import smooth_image, label_probs
h, w = 120, 150  # 18000 points: lattice builds and filters split across threads
img = smooth_image(h, w)
out = {"kernels": np.array(densecrf._build_info()["kernels"])}
# one to nine 8-lane blocks (65: the generic width); 12 to 64 take the
# AVX-512 build's 16-lane loops (one to four vectors per row, plus an 8-lane
# one for an odd number of blocks)
for k in (3, 12, 21, 32, 40, 64, 65):
    p = label_probs(h, w, k, sharpness=1.0)
    for th in (1, 2):
        out[f"K{k}_t{th}"] = densecrf.refine(img, p, n_iter=4, threads=th)
    # Logits far outside [-64, 64]: the softmax takes the max-shift path.
    crf = densecrf.DenseCRF(h * w, k, threads=2)
    crf.set_unary(-30.0 * np.log(p.reshape(-1, k)))
    crf.add_pairwise(np.random.default_rng(k).random((h * w, 3)).astype(np.float32) * 4, 2.0)
    out[f"K{k}_big"] = crf.inference(3)
np.savez(sys.argv[1], **out)
"""


def _run(tmp_path, name, kernels=None):
    env = dict(os.environ)
    env.pop("DENSECRF_KERNELS", None)
    if kernels:
        env["DENSECRF_KERNELS"] = kernels
    path = tmp_path / f"{name}.npz"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    # cwd: not the checkout, whose densecrf/ (without the compiled extension
    # when the package is installed, not editable) would shadow the package.
    subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(path), tests_dir], env=env, check=True, timeout=300, cwd=tmp_path
    )
    return np.load(path)


def _cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (Linux); None elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _expected_kernels(flags, cap=None):
    """The kernel set csrc/kernels.cpp's pick() must choose on a CPU with these flags, under DENSECRF_KERNELS=cap."""
    if cap == "baseline" or not {"avx2", "fma"} <= flags:
        return "baseline"
    if cap == "avx2" or not {"avx512f", "avx512vl"} <= flags:
        return "avx2+fma"
    if cap == "avx512vl" or "avx512_vbmi2" not in flags:
        return "avx512vl+fma (256-bit)"
    return "avx512f+fma (512-bit rows)"


def test_forced_kernels_match_the_picked_ones(tmp_path):
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo: cannot tell which kernels this CPU should get")
    base = _run(tmp_path, "base", "baseline")
    avx2 = _run(tmp_path, "avx2", "avx2")
    vl = _run(tmp_path, "avx512vl", "avx512vl")
    best = _run(tmp_path, "best")
    for got, cap in ((base, "baseline"), (avx2, "avx2"), (vl, "avx512vl"), (best, None)):
        assert str(got["kernels"]) == _expected_kernels(flags, cap), (
            cap,
            sorted(flags & {"avx2", "fma", "avx512f", "avx512vl", "avx512_vbmi2"}),
        )
    wide = str(best["kernels"]).startswith("avx512f")
    for key in base.files:
        if key == "kernels":
            continue
        q = base[key]
        assert np.isfinite(q).all(), key
        # Rows are distributions: float32 sums of up to 65 terms (6e-8
        # relative rounding each): 1e-5.
        assert np.allclose(q.sum(-1), 1.0, atol=1e-5), key
        if str(best["kernels"]) == "baseline":  # no AVX2 here: the same loops
            assert np.array_equal(q, best[key]), key
        elif key.endswith("_big"):
            # Logits of -30 log p reach ~300, where a float32 ulp is 3e-5:
            # FMA's single rounding against the baseline's two moves such a
            # logit by up to 1.5e-5 and Q by a quarter of that (Q (1 - Q) <=
            # 1/4), 3.8e-6. Measured (baseline against AVX2, 3 iterations):
            # up to 1.9e-6; 4e-6 is one rounding's worth.
            assert np.abs(q - best[key]).max() <= 4e-6, key
        else:
            # refine's logits stay below ~25 (ulp 1.9e-6): FMA moves Q by
            # rounding only; measured (baseline against AVX2, 4 iterations):
            # up to 7.7e-7; 2e-6 is 2.6x that.
            assert np.abs(q - best[key]).max() <= 2e-6, key
        # The AVX2 and 256-bit AVX-512 builds run the same arithmetic lane by
        # lane, with the reductions in the same order: equal bits (measured
        # on an AVX-512 Xeon: 30 cases of K = 3-65, equal).
        assert np.array_equal(avx2[key], vl[key]), key
        k = int(key[1:].split("_")[0])
        if wide and 9 <= k <= 16:
            # The 512-bit build, rows of 9-16 labels (one 16-lane vector):
            # not the same bits as the 8-lane loops. Measured on an AVX-512
            # Xeon with VBMI2: 1 ulp (1.2e-7) after 5 iterations of one term,
            # up to 9.5e-7 after refine's 5 (K = 9-16); 2e-6 is 2x that.
            assert np.abs(best[key] - avx2[key]).max() <= 2e-6, key
        else:
            # every other width: equal bits (measured there: K = 3, 17-65)
            assert np.array_equal(best[key], avx2[key]), key
    for k in (3, 12, 21, 32, 40, 64, 65):  # the forced loops are thread-count independent too
        assert np.array_equal(base[f"K{k}_t1"], base[f"K{k}_t2"])
        assert np.array_equal(avx2[f"K{k}_t1"], avx2[f"K{k}_t2"])
        assert np.array_equal(vl[f"K{k}_t1"], vl[f"K{k}_t2"])


def test_unary_with_start_distribution(rng):
    # refine computes the unary and mean field's start, softmax(-u) =
    # max(p, clip) / sum(max(p, clip)), in one pass for K <= 64. The unary
    # and the statistics must be those of the plain pass, bit for bit, for
    # every width (pad lanes, rows whose whole-vector loads would leave the
    # array, bad values); the start must be softmax(-u) to rounding.
    from densecrf._native import _C

    for k in (1, 3, 8, 9, 21, 32, 33, 64, 65):
        for n in (1, 7, 5000):
            p = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
            p[0, 0] = 0.0  # clipped
            if n > 1:
                p[n // 2, -1] = 1.5  # out of [0, 1]: reported by the range statistics
            plain = _C.unary_from_probs(p, 1e-5, 2)
            u, lo, hi, dev, bad, start = _C.unary_from_probs(p, 1e-5, 2, True)
            assert np.array_equal(u, plain[0]) and (lo, hi, dev, bad) == tuple(plain[1:]), (k, n)
            if k > 64:
                assert start is None
                continue
            assert (start.n_points, start.n_labels, start.used) == (n, k, False)
            q0 = _C.mean_field(u, [], 0, start=start)
            assert start.used
            # Two routes to the same softmax: float32 exp(log(c)) against c,
            # a few ulp of each probability (1.2e-7 near one).
            assert np.abs(q0 - _C.mean_field(u, [], 0)).max() < 1e-6, (k, n)
        bad_p = rng.dirichlet(np.ones(k), size=50).astype(np.float32)
        bad_p[37, k - 1] = np.nan
        assert _C.unary_from_probs(bad_p, 1e-5, 2, True)[4] == 37 * k + k - 1
        assert _C.unary_from_probs(bad_p, 1e-5, 2)[4] == 37 * k + k - 1


def test_unary_job_shared_by_threads(rng):
    # refine's two chains share the unary pass through a _C.UnaryJob: chunks
    # of 2048 rows go to whichever thread calls run() first. Whoever computes
    # which chunks, the result must be unary_from_probs's: u and the start
    # bit for bit, the same range statistics and the first bad element.
    import threading

    from densecrf._native import _C

    n, k = 20000, 21  # ten chunks
    p = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    p[123, 4] = 0.0
    ref_u, *ref_stats, ref_start = _C.unary_from_probs(p, 1e-5, 1, True)
    ref_q0 = _C.mean_field(ref_u, [], 0, start=ref_start)
    for runners in ((), (1,), (1, 1), (2, 1, 1)):
        job = _C.UnaryJob(p, 1e-5, True)
        threads = [threading.Thread(target=job.run, args=(t,)) for t in runners]
        for t in threads:
            t.start()
        u, *stats, start = job.result()  # computes what is left, waits for the rest
        for t in threads:
            t.join()
        assert np.array_equal(u, ref_u) and stats == ref_stats, runners
        assert np.array_equal(_C.mean_field(u, [], 0, start=start), ref_q0), runners
    # The first NaN is reported even when a later chunk finds one first.
    bad = p.copy()
    bad[19000, 3] = np.nan
    bad[3000, 7] = np.inf
    job = _C.UnaryJob(bad, 1e-5, True)
    job.run(2)
    assert job.result()[4] == 3000 * k + 7
    with pytest.raises(ValueError, match="clip"):
        _C.UnaryJob(p, 0.0, True)


def test_mean_field_start_is_taken_once_and_checked(rng):
    from densecrf._native import _C

    n, k = 3000, 5
    p = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    lat = densecrf.PermutohedralLattice((rng.random((n, 2)) * 10).astype(np.float32))
    term = _C.PairwiseTerm(lat._lat, 3, 0, np.array([3.0], np.float32), k, 1)
    u, *_, start = _C.unary_from_probs(p, 1e-5, 1, True)
    fresh = _C.mean_field(u, [term], 4)
    given = _C.mean_field(u, [term], 4, start=start)
    # The two starts differ by a few ulp; 4 iterations of a contraction keep
    # that at the 1e-6 level.
    assert np.abs(given - fresh).max() < 2e-6
    with pytest.raises(ValueError, match="used already"):
        _C.mean_field(u, [term], 4, start=start)
    _, *_, other = _C.unary_from_probs(p[:100], 1e-5, 1, True)
    with pytest.raises(ValueError, match="start distribution is for 100 points"):
        _C.mean_field(u, [term], 4, start=other)
    with pytest.raises(ValueError, match="not both"):
        _C.mean_field(u, [term], 4, fresh, start=other)


@pytest.mark.parametrize("k", [3, 12, 21, 32, 40, 64, 65])
def test_overflow_is_caught_at_every_row_width(k):
    # The fused pass reports a row whose logits reached infinity; K = 12 to
    # 64 take the AVX-512 build's 16-lane loops (where the CPU has them), 3
    # the 8-lane ones, 65 the generic loop over blocks. The bad row is in
    # the middle, with finite rows on both sides.
    u = np.zeros((7, k), np.float32)
    u[4, :] = 3e38
    u[4, 1] = -3e38
    crf = densecrf.DenseCRF(7, k)
    crf.set_unary(u)
    crf.add_pairwise(np.zeros((7, 2), np.float32), 3e38)
    with pytest.raises(ValueError, match="overflowed float32"):
        crf.inference(2)
