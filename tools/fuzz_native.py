"""Fuzzes the native entry points (densecrf._C) with atheris.

    pip install atheris
    python -P tools/fuzz_native.py -max_total_time=120          # bounded run
    python -P tools/fuzz_native.py -max_total_time=120 -rss_limit_mb=4096 fuzz-corpus/
    python -P tools/fuzz_native.py crash-<sha1>                 # replay a finding

Each input is decoded into one call sequence on the raw module, bypassing
the Python argument checks: ``Lattice(features, threads)``, ``.filter``,
``PairwiseTerm(lattice, normalization, compat_kind, compat, n_labels,
threads)``, ``.filter`` / ``.apply`` and ``mean_field(unary, terms, n_iter,
Q, threads)``, with fuzzed shapes (including empty and mismatched ones),
values (including NaN, infinities and huge numbers) and integer arguments
(including negative and out-of-range ones). The native layer must either
return or raise ValueError / TypeError; anything else (a crash, another
exception, or a non-finite result from finite, moderate inputs) is a finding.
Without -max_total_time the run is capped at 60 s.

atheris traces Python coverage; the extension is built by g++ without
libFuzzer instrumentation, so the search is guided by the decoding branches
here rather than by native coverage. Run it against the ASan build
(tools/asan_build.sh's .venv-asan with LD_PRELOAD as there) to turn silent
memory errors into findings.
"""

from __future__ import annotations

import sys

import atheris
import numpy as np

with atheris.instrument_imports():
    from densecrf import _C

# Moderate inputs: bounded so that no float32 overflow is possible in one
# filter or a few mean-field iterations, so their results must be finite.
_MODERATE = 1e3


@atheris.instrument_func
def _floats(fdp, count, special):
    """count float32 values: moderate ones, or with NaN / inf / huge mixed in when special."""
    if count <= 0:
        return np.zeros(0, np.float32)
    if special:
        vals = [fdp.ConsumeFloat() for _ in range(count)]
        return (
            np.array(vals, dtype=np.float64).clip(-3e38, 3e38).astype(np.float32) if vals else np.zeros(0, np.float32)
        )
    return np.array(fdp.ConsumeFloatListInRange(count, -_MODERATE, _MODERATE), dtype=np.float32)


@atheris.instrument_func
def _array(fdp, shape, special):
    size = int(np.prod(shape)) if shape else 1
    a = _floats(fdp, size, special)
    if a.size < size:
        a = np.concatenate([a, np.zeros(size - a.size, np.float32)])
    return a.reshape(shape)


@atheris.instrument_func
def _finite(a):
    return a.size == 0 or bool(np.isfinite(a).all())


@atheris.instrument_func
def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    special = fdp.ConsumeBool()
    n = fdp.ConsumeIntInRange(0, 48)
    d = (
        fdp.ConsumeIntInRange(0, 34) if fdp.ConsumeIntInRange(0, 7) == 7 else fdp.ConsumeIntInRange(1, 8)
    )  # valid: 1..32
    threads = fdp.ConsumeIntInRange(-2, 5)
    layout = fdp.ConsumeIntInRange(0, 4) % 4 if fdp.ConsumeBool() else 0
    feats = _array(fdp, (n, d), special)
    if layout == 1:
        feats = np.asfortranarray(feats)
    elif layout == 2:
        feats = feats.astype(np.float64)
    elif layout == 3 and n:
        feats = feats.reshape(n, d, 1) if fdp.ConsumeBool() else feats[:, :, None][..., 0]
    try:
        lat = _C.Lattice(feats, threads)
    except (ValueError, TypeError):
        return
    assert lat.n_points == n and lat.dim == d
    assert 0 <= lat.n_vertices <= n * (d + 1)

    c = fdp.ConsumeIntInRange(0, 6)
    rows = fdp.ConsumeIntInRange(0, 50) if fdp.ConsumeIntInRange(0, 7) == 7 else n
    values = _array(fdp, (rows, c), special)
    try:
        out = lat.filter(values, fdp.ConsumeBool(), threads)
    except (ValueError, TypeError):
        out = None
    if out is not None:
        assert out.shape == (n, c)
        if _finite(feats) and not special:
            assert _finite(out), "filter of finite, moderate values is not finite"

    # Mostly valid arguments (so that the later calls are reached), each one
    # out of range one time in eight.
    bad = fdp.ConsumeIntInRange(0, 255)
    k = fdp.ConsumeIntInRange(-1, 0) if bad & 1 == 1 and bad & 6 == 0 else fdp.ConsumeIntInRange(1, 7)
    norm = fdp.ConsumeIntInRange(-3, 7) if bad & 8 and bad & 16 == 0 and bad & 32 == 0 else fdp.ConsumeIntInRange(0, 3)
    kind = fdp.ConsumeIntInRange(-3, 5) if bad & 64 and bad & 128 == 0 and bad & 2 == 0 else fdp.ConsumeIntInRange(0, 2)
    want = {0: 1, 1: max(k, 0), 2: max(k, 0) ** 2}.get(kind, 1)
    ncompat = fdp.ConsumeIntInRange(0, 70) if bad & 6 == 6 and bad & 1 == 0 else want
    compat = _floats(fdp, ncompat, special)
    try:
        term = _C.PairwiseTerm(lat, norm, kind, compat, k, threads)
    except (ValueError, TypeError):
        return

    q_rows = fdp.ConsumeIntInRange(0, 50) if fdp.ConsumeIntInRange(0, 7) == 7 else n
    q = _array(fdp, (q_rows, max(k, 0)), special)
    for call in (
        lambda: term.filter(q, fdp.ConsumeBool(), threads),
        lambda: term.apply(np.abs(q), fdp.ConsumeBool(), threads),
    ):
        try:
            r = call()
        except (ValueError, TypeError):
            continue
        assert r.shape == q.shape
        if not special:
            assert _finite(r), "term filter/apply of finite, moderate values is not finite"

    unary = _array(fdp, (fdp.ConsumeIntInRange(0, 50) if fdp.ConsumeIntInRange(0, 7) == 7 else n, max(k, 0)), special)
    n_iter = fdp.ConsumeIntInRange(0, 6)
    n_iter = -1 if n_iter == 6 else n_iter
    q0 = None
    if fdp.ConsumeBool():
        q0 = np.abs(
            _array(
                fdp,
                (fdp.ConsumeIntInRange(0, 50) if fdp.ConsumeIntInRange(0, 3) == 3 else unary.shape[0], max(k, 0)),
                special,
            )
        )
    terms = [term] * ((fdp.ConsumeIntInRange(0, 3) + 1) % 4)
    try:
        res = _C.mean_field(unary, terms, n_iter, q0, threads)
    except (ValueError, TypeError):
        return
    assert res.shape == unary.shape
    if not special and q0 is None and res.size:
        assert _finite(res), "mean field from finite, moderate inputs is not finite"
        # float32 softmax over K <= 7 labels: a few ulp from one.
        assert np.allclose(res.sum(1), 1.0, atol=1e-4), "mean field rows do not sum to one"


def main() -> None:
    argv = list(sys.argv)
    if not any(a.startswith(("-max_total_time", "-runs")) for a in argv[1:]) and not any(
        not a.startswith("-") for a in argv[1:]
    ):
        argv.append("-max_total_time=60")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
