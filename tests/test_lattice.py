"""PermutohedralLattice against the exact Gaussian filter, and its structural properties."""

import numpy as np
import pytest

import densecrf
from densecrf._native import _C
from reference import gaussian_filter_exact


def normalized(filt, n, v):
    return filt(v) / filt(np.ones((n, 1)))


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_filter_approximates_exact_gaussian(rng, d):
    # Dense points (spread of 2 bandwidths per axis) carrying smooth values.
    # The lattice replaces the Gaussian by a [1/2, 1, 1/2] blur between
    # barycentric splat and slice; for the normalised filter the mean
    # deviation from the exact filter is 4.7-6.6 % of the mean change the
    # exact filter itself makes (measured over 20 draws for d = 1..5). The
    # bound 0.1 leaves room for other draws; filtering with a wrong blur
    # weight or bandwidth scale moves the result by a large fraction of the
    # smoothing and fails.
    n = 300
    f = rng.random((n, d)) * 2.0
    v = np.stack([np.sin(f.sum(1)), np.cos(f[:, 0]), f[:, -1] / 2.0], axis=1)
    lat = densecrf.PermutohedralLattice(f)
    approx = normalized(lambda x: lat.filter(x).astype(np.float64), n, v)
    exact = normalized(lambda x: gaussian_filter_exact(f, x), n, v)
    rel = np.abs(approx - exact).mean() / np.abs(exact - v).mean()
    assert rel < 0.1, rel
    # A filter of double the bandwidth is off by more than the bound: the check can fail.
    wide = normalized(lambda x: gaussian_filter_exact(f / 2.0, x), n, v)
    assert np.abs(approx - wide).mean() / np.abs(exact - v).mean() > 0.1


def test_filter_mass_close_to_exact(rng):
    # The unnormalised lattice response to a constant is 0.78..0.94 of the
    # exact Gaussian sum for dense 2-D points (the discrete blur loses mass
    # in the tails); a factor-of-two error in alpha or the blur would leave
    # this range.
    f = rng.random((300, 2)) * 2.0
    lat = densecrf.PermutohedralLattice(f)
    ratio = lat.filter(np.ones(300)) / gaussian_filter_exact(f, np.ones((300, 1)))[:, 0]
    assert 0.7 < ratio.min() and ratio.max() < 1.0


def test_transpose_is_adjoint(rng):
    # <K x, y> = <x, K^T y> holds exactly in exact arithmetic (same lattice,
    # reversed blur order); float32 rounding over ~1e4 terms of size ~1 leaves
    # a relative error of order 1e-6.
    f = rng.random((500, 3)) * 4
    lat = densecrf.PermutohedralLattice(f)
    x = rng.normal(size=(500, 4))
    y = rng.normal(size=(500, 4))
    lhs = np.sum(lat.filter(x).astype(np.float64) * y)
    rhs = np.sum(x * lat.filter(y, transpose=True).astype(np.float64))
    assert abs(lhs - rhs) <= 1e-5 * (abs(lhs) + abs(rhs))
    # and the forward filter alone is not symmetric, so the test can fail:
    asym = np.sum(x * lat.filter(y).astype(np.float64))
    assert abs(lhs - asym) > 1e-4 * abs(lhs)


def test_linear_in_values(rng):
    # Linearity: filter(a x + b y) = a filter(x) + b filter(y), up to float32
    # rounding: outputs of magnitude up to ~10, a few dozen roundings of
    # 6e-8 relative each, ~2e-5 absolute at worst (measured 7.6e-6); 3e-5.
    f = rng.random((400, 2)) * 5
    lat = densecrf.PermutohedralLattice(f)
    x, y = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    lhs = lat.filter(2 * x - 3 * y)
    rhs = 2 * lat.filter(x) - 3 * lat.filter(y)
    assert np.allclose(lhs, rhs, rtol=0, atol=3e-5)


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32])
def test_any_dimension_and_threads_bit_identical(rng, d):
    # 70000 points make the build split into several chunks (16384 points per
    # chunk at least), so the merge of thread-local tables is exercised; high
    # d lattices have ~N(d+1) vertices, so fewer points keep them quick.
    n = 70000 if d <= 5 else 4000
    f = (rng.random((n, d)) * 6).astype(np.float32)
    v = rng.random((n, 3)).astype(np.float32)
    one = densecrf.PermutohedralLattice(f, threads=1)
    two = densecrf.PermutohedralLattice(f, threads=2)
    five = densecrf.PermutohedralLattice(f, threads=5)
    assert one.n_vertices == two.n_vertices == five.n_vertices
    r1 = one.filter(v, threads=1)
    assert np.array_equal(r1, two.filter(v, threads=2))
    assert np.array_equal(r1, five.filter(v, threads=3))
    assert np.array_equal(r1, one.filter(v, threads=1))  # run to run
    assert np.isfinite(r1).all() and (r1 > 0).all()


def _table_cases(rng):
    # (name, features, table auto should pick): image and volume grids at
    # the Gaussian term's bandwidth (the dense table's use), a 1-D signal,
    # points spread over a small box in d = 1..4, tied and negative
    # coordinates, and d = 4 spread too widely for one slot per point.
    from densecrf import grid_positions

    yield "image grid", grid_positions((75, 100), 3.0), "dense"
    yield "volume grid", grid_positions((20, 24, 28), (2.0, 3.0, 3.0)), "dense"
    yield "signal", np.arange(5000, dtype=np.float32)[:, None] / 4, "dense"
    for d in (1, 2, 3, 4):
        # The dense table takes at most one slot per point (plus 2^16) over
        # all the build's chunks (two here on two threads): a d = 4 box as
        # wide as the others would need more.
        n, width = (40000, 6) if d <= 3 else (100000, 2)
        yield f"box d={d}", rng.random((n, d)) * width - width / 2, "dense"
    yield "ties d=3", np.round(rng.random((20000, 3)) * 16) / 4 - 2, "dense"
    yield "wide d=4", rng.random((3000, 4)) * 200, "packed"


def test_dense_packed_and_general_tables_build_the_same_lattice(rng):
    # The build numbers vertices with a dense array (d <= 4, keys in a small
    # box), packed 64-bit keys or the general hash table, whichever applies
    # first; all number vertices by first appearance, so every one must give
    # the same lattice: vertex count and filters (both directions) equal bit
    # for bit, on one thread and on two (multi-chunk builds merge tables).
    from densecrf._native import _C

    for name, f, picked in _table_cases(rng):
        f = np.ascontiguousarray(f, dtype=np.float32)
        v = rng.random((f.shape[0], 3)).astype(np.float32)
        for th in (1, 2):
            auto = _C.Lattice(f, th)
            assert auto._table == picked, name
            ref = auto.filter(v, False, 1), auto.filter(v, True, 1)
            others = [_C.Lattice(f, th, _table="general")]
            if f.shape[1] >= 2:
                others.append(_C.Lattice(f, th, _table="packed"))
            for other in others:
                assert other.n_vertices == auto.n_vertices, (name, other._table)
                assert np.array_equal(other.filter(v, False, 1), ref[0]), (name, other._table)
                assert np.array_equal(other.filter(v, True, 1), ref[1]), (name, other._table)
    with pytest.raises(ValueError, match="_table"):
        _C.Lattice(np.zeros((4, 2), np.float32), 1, _table="dense")


@pytest.mark.parametrize("d", [3, 5, 8])
def test_far_apart_clusters_filter_as_if_alone(rng, d):
    # For 2 <= d <= 8 the build packs each vertex key into 64 bits (64/d bits
    # per coordinate) and starts over with the general hash table when a
    # coordinate does not fit (d = 2 always fits: keys beyond 1e9 are
    # refused anyway). A cluster near the origin fits; one 1e6 (d = 3), 1e5
    # (d = 5) or 300 (d = 8) feature units away does not. Two clusters that far apart
    # do not interact, so each one's response within the fallback-built
    # lattice must equal its response alone, bit for bit.
    far = {3: 1e6, 5: 1e5, 8: 300.0}[d]
    a = (rng.random((3000, d)) * 4).astype(np.float32)
    b = (rng.random((2000, d)) * 4 + far).astype(np.float32)
    va, vb = rng.random((3000, 4)).astype(np.float32), rng.random((2000, 4)).astype(np.float32)
    both = densecrf.PermutohedralLattice(np.concatenate([a, b]), threads=1)
    alone_a = densecrf.PermutohedralLattice(a, threads=1)
    alone_b = densecrf.PermutohedralLattice(b, threads=1)
    # (d <= 4: a compact cluster fills a small box wherever it lies: dense)
    expected = ("dense", "general", "dense") if d <= 4 else ("packed", "general", "general")
    assert (alone_a._lat._table, both._lat._table, alone_b._lat._table) == expected
    assert both.n_vertices == alone_a.n_vertices + alone_b.n_vertices
    out = both.filter(np.concatenate([va, vb]))
    assert np.array_equal(out[:3000], alone_a.filter(va))  # fallback against packed
    assert np.array_equal(out[3000:], alone_b.filter(vb))


@pytest.mark.parametrize("d", [1, 2, 5, 9])
def test_normalisation_from_build_weight_sums(rng, d):
    # A term's normalisation is the filter of ones. A lattice built as one
    # chunk (one thread, or fewer than 2 x 16384 points) keeps each vertex's
    # weight sum from the build and skips that splat; a lattice merged from
    # several chunks splats the ones. Both must equal filter(ones) bit for
    # bit, for packed (d = 2, 5) and general (d = 1, 9) hash tables.
    from densecrf._native import _C

    n = 70000 if d <= 5 else 6000
    f = (rng.random((n, d)) * (12 if d <= 5 else 3)).astype(np.float32)
    ones = np.ones((n, 1), np.float32)
    for threads in (1, 2, 3):
        lat = densecrf.PermutohedralLattice(f, threads=threads)
        term = _C.PairwiseTerm(lat._lat, 0, 0, np.array([1.0], np.float32), 2, threads)
        assert np.array_equal(term.norm, lat.filter(ones, threads=threads)[:, 0])
        assert np.array_equal(term.norm, _C.PairwiseTerm(lat._lat, 0, 0, np.array([1.0], np.float32), 2, 1).norm)


def test_single_point_and_identical_points():
    # One point: its own vertex weights sum to 1, so the response to 1 is
    # alpha * sum_r w_r * (blurred mass at r) > 0 and the normalised filter
    # returns the value itself exactly up to rounding.
    lat = densecrf.PermutohedralLattice(np.array([[0.3, -1.2]]))
    assert lat.n_points == 1
    out = lat.filter(np.array([[2.0, -1.0]]))
    norm = lat.filter(np.ones(1))
    assert np.allclose(out / norm[:, None], [[2.0, -1.0]], rtol=1e-6)  # a product and a quotient: a few ulp
    # Identical points behave as one point with summed values.
    f = np.tile([[0.5, 0.25, 4.0]], (7, 1))
    lat7 = densecrf.PermutohedralLattice(f)
    assert lat7.n_vertices == 4  # d + 1 vertices of one simplex
    res = lat7.filter(np.arange(7.0))
    assert np.all(res == res[0]) and res[0] > 0  # the same vertices and weights: the same bits


def test_empty_and_shapes():
    lat = densecrf.PermutohedralLattice(np.zeros((0, 3)))
    assert lat.n_points == 0 and lat.n_vertices == 0
    assert lat.filter(np.zeros((0, 2))).shape == (0, 2)
    # [..., d] features and [..., C] values keep their leading shape
    f = np.random.default_rng(0).random((4, 5, 2))
    lat = densecrf.PermutohedralLattice(f)
    assert lat.n_points == 20
    assert lat.filter(np.ones((4, 5, 3))).shape == (4, 5, 3)
    assert lat.filter(np.ones(20)).shape == (20,)


def test_far_apart_points_do_not_interact():
    # Points 100 bandwidths apart share no lattice vertex or neighbour: each
    # normalised output is exactly its own value.
    f = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    lat = densecrf.PermutohedralLattice(f)
    v = np.array([[1.0], [5.0], [-3.0]])
    out = lat.filter(v) / lat.filter(np.ones((3, 1)))
    assert np.allclose(out, v, rtol=1e-6)  # a product and a quotient of float32: a few ulp


def test_input_not_modified_and_float64_accepted(rng):
    f = rng.random((100, 2))
    v = rng.random((100, 2))
    f0, v0 = f.copy(), v.copy()
    lat = densecrf.PermutohedralLattice(f)
    out = lat.filter(v)
    assert out.dtype == np.float32
    assert np.array_equal(f, f0) and np.array_equal(v, v0)
    assert np.array_equal(out, densecrf.PermutohedralLattice(f.astype(np.float32)).filter(v.astype(np.float32)))


@pytest.mark.parametrize(
    "features,err,match",
    [
        (np.zeros(5), ValueError, r"\[N, d\]"),
        (np.zeros((5, 0)), ValueError, "1 to 32"),
        (np.zeros((5, 33)), ValueError, "1 to 32"),
        (np.array([[0.0, np.nan]]), ValueError, "finite"),
        (np.array([[np.inf, 0.0]]), ValueError, "finite"),
        (np.array([[1e12, 0.0]]), ValueError, "key range"),
        (np.zeros((3, 2), dtype=complex), TypeError, "complex"),
        (np.array([["a", "b"]], dtype=object), TypeError, "object"),
    ],
)
def test_bad_features(features, err, match):
    with pytest.raises(err, match=match):
        densecrf.PermutohedralLattice(features)


def test_bad_values():
    lat = densecrf.PermutohedralLattice(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"N = 4"):
        lat.filter(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="finite"):
        lat.filter(np.full((4, 1), np.nan))
    with pytest.raises(ValueError, match="threads"):
        lat.filter(np.zeros((4, 1)), threads=0)


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6, 7, 8])
def test_vectorised_point_location_is_bit_identical(rng, d):
    # The lattice build locates points 8 at a time on AVX2; every simplex
    # and weight must be the scalar locate_point's to the bit (the CUDA
    # kernels use the scalar code, and vertex keys depend on every bit).
    from densecrf._native import _C

    if not _C._cpu_has_avx2():
        pytest.skip("this CPU has no AVX2: the build uses the scalar code only")
    n = 8 * 4000 + 5  # a tail of 5 points stays scalar in both
    parts = [
        (rng.random((n, d)) * 40 - 20),  # generic
        np.round(rng.random((n, d)) * 12) / 4,  # many exact ties and lattice-plane points
        (rng.random((n, d)) - 0.5) * 2e5,  # large coordinates
        (rng.random((n, d)) - 0.5) * 1e-3,  # near the origin, both signs
        np.repeat(rng.random((n // 8 + 1, d)) * 3, 8, axis=0)[:n],  # runs of equal points
    ]
    for f in parts:
        f = np.ascontiguousarray(f, dtype=np.float32)
        scalar = _C._locate_points(f, False)
        vector = _C._locate_points(f, True)
        for name, a, b in zip(("remainder-0 vertex", "ranks", "barycentric weights"), scalar, vector, strict=True):
            assert np.array_equal(a, b), name


def test_vectorised_point_location_rejects_what_the_scalar_rejects():
    from densecrf._native import _C

    if not _C._cpu_has_avx2():
        pytest.skip("this CPU has no AVX2")
    for bad in (np.nan, np.inf, -np.inf, 3e38):
        f = np.zeros((16, 5), np.float32)
        f[11, 2] = bad
        with pytest.raises(ValueError, match="block 1"):
            _C._locate_points(f, True)
        with pytest.raises(ValueError, match="point 11"):
            _C._locate_points(f, False)
        # and the lattice itself names the problem
        with pytest.raises(ValueError, match="finite"):
            densecrf.PermutohedralLattice(f)


# --------------------------------------------------------------------------
# The splat's schedule: owner computes (a scan in point order per vertex
# range) or a gather over per-vertex entry lists, by a rule on cost.
# --------------------------------------------------------------------------
def _recurring_colour_features():
    """Bilateral features (sxy 80, srgb 13) of a 384 x 384 image whose 64 x 64
    blocks of colour recur across it, and Gaussian ones (sxy 3): the
    bilateral lattice's vertices, numbered by first appearance, are touched
    again far down the image, as in a real photo."""
    rng = np.random.default_rng(0)
    tile = (rng.random((8, 8, 3)) * 255).astype(np.float32).repeat(8, 0).repeat(8, 1)
    img = np.tile(tile, (6, 6, 1))
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bil = np.concatenate([np.stack([xx / 80, yy / 80], -1), img / 13], -1).reshape(-1, 5)
    gauss = np.stack([xx / 3, yy / 3], -1).reshape(-1, 2)
    return np.ascontiguousarray(bil, np.float32), np.ascontiguousarray(gauss, np.float32)


@pytest.fixture
def splat_mode():
    """Sets the process-wide splat mode for a test; 'auto' again after it."""
    yield _C.Lattice._set_splat_mode
    _C.Lattice._set_splat_mode("auto")


def test_splat_rule_keeps_the_scan_at_one_and_two_threads():
    bil, gauss = _recurring_colour_features()
    b, g = _C.Lattice(bil, 1), _C.Lattice(gauss, 1)
    # the rule's quantity: one range scans every point (1.0 exactly)
    assert b._splat_scan_excess(1) == 1.0
    assert b._splat_scan_excess(2) <= 2.0 < b._splat_scan_excess(3)
    assert g._splat_scan_excess(8) < 2.0
    # the rule: excess > 2 over min(threads, cores, one range per 2048 vertices) ranges
    cores = _C.hardware_threads()
    for lat in (b, g):
        for t in (1, 2, 3, 4, 8, 16):
            nt = min(t, cores, max(1, lat.n_vertices // 2048))
            assert lat._splat_by_lists(t) == (nt >= 2 and lat._splat_scan_excess(nt) > 2.0), (t, nt)
    # 1 and 2 threads: always the scan (the scan's excess cannot exceed 2 there)
    assert [b._splat_by_lists(t) for t in (1, 2)] == [False, False]
    assert not any(g._splat_by_lists(t) for t in (2, 4, 8, 16))
    assert not b._has_entry_lists
    v = np.random.default_rng(1).random((bil.shape[0], 21)).astype(np.float32)
    one = b.filter(v, False, 1)
    assert not b._has_entry_lists  # one thread never builds them
    assert np.array_equal(b.filter(v, False, 4), one)
    assert b._has_entry_lists == b._splat_by_lists(4)  # built exactly when the rule asks


@pytest.mark.parametrize("d", [2, 5, 9])
@pytest.mark.parametrize("channels", [1, 3, 8, 21, 64, 70])
def test_splat_gather_is_bit_identical_to_the_scan(rng, splat_mode, d, channels):
    # Every row width (register rows of 1..8 blocks, the generic width above
    # 64 channels), forward and transpose, 1 and 3 threads: the gather adds
    # each vertex's entries in the scan's order with the same operations.
    f = (rng.random((3000, d)) * 4).astype(np.float32)
    v = rng.normal(size=(3000, channels)).astype(np.float32)
    lat = _C.Lattice(f, 1)
    out = {}
    for mode in ("scan", "lists"):
        splat_mode(mode)
        for threads in (1, 3):
            for transpose in (False, True):
                out[mode, threads, transpose] = lat.filter(v, transpose, threads)
    for key, val in out.items():
        assert np.array_equal(val, out["scan", 1, key[2]]), key


@pytest.mark.parametrize("normalization", ["none", "before", "after", "symmetric"])
def test_splat_gather_in_mean_field_is_bit_identical(rng, splat_mode, normalization):
    # the splat's per-point scale (normalisation) and the fused mean field
    bil, gauss = _recurring_colour_features()
    n = bil.shape[0]
    u = rng.normal(size=(n, 6)).astype(np.float32)
    out = []
    for mode in ("scan", "lists"):
        splat_mode(mode)
        crf = densecrf.DenseCRF(n, 6, threads=3)
        crf.set_unary(u)
        crf.add_pairwise(gauss, 3.0, normalization=normalization)
        crf.add_pairwise(bil, 5.0, normalization=normalization)
        out.append(crf.inference(3))
    assert np.array_equal(out[0], out[1])


def test_splat_mode_rejects_unknown_names():
    with pytest.raises(ValueError, match="'auto', 'scan' or 'lists'"):
        _C.Lattice._set_splat_mode("fast")


# --------------------------------------------------------------------------
# The dense table on several threads: one box shared by every chunk.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_shared_dense_build_is_the_one_chunk_lattice(rng, d):
    # 40,000 points: up to two chunks of 16,384 and more (the shared box),
    # against one chunk (its own table): same vertices in the same order,
    # same neighbours and weights, so the same filter bits both ways.
    cases = {"scattered": (rng.random((40000, d)) * 12).astype(np.float32)}
    if d == 2:  # grid positions, as a Gaussian term's (sxy 3)
        yy, xx = np.mgrid[0:200, 0:200].astype(np.float32)
        cases["grid"] = np.ascontiguousarray(np.stack([xx, yy], -1).reshape(-1, 2) / 3.0)
    v = rng.normal(size=(40000, 4)).astype(np.float32)
    for name, f in cases.items():
        one = _C.Lattice(f, 1)
        if d <= 3:
            assert one._table == "dense", name  # the box applies
        for threads in (2, 3, 8):
            lat = _C.Lattice(f, threads)
            assert lat._table == one._table and lat.n_vertices == one.n_vertices, (name, threads)
            for transpose in (False, True):
                assert np.array_equal(lat.filter(v, transpose, 1), one.filter(v, transpose, 1)), (name, threads)


def test_shared_dense_build_reports_bad_features():
    f = np.zeros((40000, 2), np.float32)
    f[:, 0] = np.arange(40000) / 7.0
    f[33333, 1] = np.nan
    with pytest.raises(ValueError, match="finite and within the lattice key range"):
        _C.Lattice(f, 4)
