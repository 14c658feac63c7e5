"""The CPU backend keeps built position-only (Gaussian) terms for the next
image of the same grid (densecrf.backends.cpu.position_terms): a kept term
must give the very bits of a fresh one, must never be used for another
grid, bandwidth, compatibility, normalisation or label count, and the
cache must stay within its bounds."""

import numpy as np
import pytest

import densecrf
from densecrf.backends import cpu


@pytest.fixture(autouse=True)
def fresh_cache():
    cpu.position_terms.clear()
    yield
    cpu.position_terms.clear()


def problem(rng, h, w, k):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    logits = rng.normal(size=(h, w, k)).astype(np.float32) * 2
    p = np.exp(logits)
    return image, (p / p.sum(-1, keepdims=True)).astype(np.float32)


def fresh(image, probs, **kw):
    cpu.position_terms.clear()
    return densecrf.refine(image, probs, **kw)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("k", [2, 5, 11, 21])
def test_kept_term_gives_the_bits_of_a_fresh_one(rng, threads, k):
    a, pa = problem(rng, 37, 53, k)
    b, pb = problem(rng, 37, 53, k)
    expect = fresh(b, pb, n_iter=4, threads=threads)
    densecrf.refine(a, pa, n_iter=4, threads=threads)  # keeps the Gaussian term of this grid
    assert len(cpu.position_terms) == 1
    got = densecrf.refine(b, pb, n_iter=4, threads=threads)  # uses it
    # exact: a kept term is the same lattice and normalisation, and neither
    # depends on thread counts
    np.testing.assert_array_equal(got, expect)


@pytest.mark.parametrize(
    "change",
    [
        {"gaussian_sxy": 2.0},
        {"gaussian_sxy": (3.0, 2.5)},
        {"gaussian_compat": 5.0},
        {"gaussian_compat": np.linspace(1, 4, 6)},
        {"normalization": "before"},
    ],
)
def test_another_term_is_not_taken_for_a_kept_one(rng, change):
    image, probs = problem(rng, 29, 31, 6)
    densecrf.refine(image, probs, n_iter=3)
    expect = fresh(image, probs, n_iter=3, **change)
    densecrf.refine(image, probs, n_iter=3)  # the classic term kept again
    got = densecrf.refine(image, probs, n_iter=3, **change)
    np.testing.assert_array_equal(got, expect)
    assert len(cpu.position_terms) == 2  # both kept, under their own keys


def test_other_grid_and_label_count_are_other_keys(rng):
    image, probs = problem(rng, 20, 30, 4)
    densecrf.refine(image, probs, n_iter=2)
    t_image, t_probs = np.ascontiguousarray(image.transpose(1, 0, 2)), np.ascontiguousarray(probs.transpose(1, 0, 2))
    expect_t = fresh(t_image, t_probs, n_iter=2)
    densecrf.refine(image, probs, n_iter=2)
    np.testing.assert_array_equal(densecrf.refine(t_image, t_probs, n_iter=2), expect_t)
    _, p5 = problem(rng, 20, 30, 5)
    expect5 = fresh(image, p5, n_iter=2)
    densecrf.refine(image, probs, n_iter=2)
    np.testing.assert_array_equal(densecrf.refine(image, p5, n_iter=2), expect5)


def test_batch_threads_share_a_kept_term(rng):
    pairs = [problem(rng, 33, 41, 7) for _ in range(5)]
    expect = [fresh(im, p, n_iter=3, threads=1) for im, p in pairs]
    cpu.position_terms.clear()
    got = densecrf.refine_batch([im for im, _ in pairs], [p for _, p in pairs], n_iter=3, threads=3)
    for g, e in zip(got, expect, strict=True):
        np.testing.assert_array_equal(g, e)


def test_bounds_slots_and_points():
    cache = cpu._PositionTerms(slots=2, max_points=100)
    for i in range(3):
        cache.put(("k", i), 10, (f"term{i}", f"lattice{i}"))
    assert len(cache) == 2 and cache.get(("k", 0)) is None  # the least recently used went
    assert cache.get(("k", 1)) == ("term1", "lattice1")
    cache.put(("k", 3), 95, ("term3", "lattice3"))  # 10 + 10 + 95 > 100 points: the others go
    assert len(cache) == 1 and cache.get(("k", 3)) is not None
    cache.put(("big",), 101, ("t", "l"))  # over max_points alone: never kept
    assert cache.get(("big",)) is None and len(cache) == 1


def test_large_grids_are_not_kept(rng, monkeypatch):
    monkeypatch.setattr(cpu.position_terms, "max_points", 500)
    image, probs = problem(rng, 20, 30, 3)  # 600 points
    densecrf.refine(image, probs, n_iter=1)
    assert len(cpu.position_terms) == 0
    image, probs = problem(rng, 20, 20, 3)  # 400 points
    densecrf.refine(image, probs, n_iter=1)
    assert len(cpu.position_terms) == 1
