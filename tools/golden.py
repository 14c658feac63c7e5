"""Golden outputs: the same bits as the recorded build, on a fixed set of cases.

    python tools/golden.py check            # exit 1 naming every case that differs
    python tools/golden.py record           # rewrite tools/golden/*.json from this build
    python tools/golden.py check --suite cpu --suite emu   # a subset (cpu, emu, nn)

Three suites, each in its own file under tools/golden/:

- ``cpu`` (cpu.json): the CPU backend's refine and mean field (K = 9..32 on the
  8- and 16-lane paths, 40, 64 and 65; the four normalisations; Potts, diagonal
  and matrix compatibilities; logits far outside [-64, 64]; 1-3 threads; the
  reference workload 500 x 375, K = 21 of ``densecrf.bench``) and lattice
  filters over d = 1..12 (forward and transpose, 1-2 threads, grid and
  scattered features). The hot loops are picked for the CPU at run time, so
  the suite runs once per loop set this CPU offers (``DENSECRF_KERNELS``, each
  in a fresh process) and is recorded per set, keyed by the name the build
  reports (``densecrf.show_config()['kernels']``). ``DENSECRF_KERNELS=avx2-wide``
  runs the AVX-512 build's 16-lane loops compiled for AVX2, so that their
  bits are checked on machines without AVX-512 too. A set with no record on
  this machine (the AVX-512 sets, or avx2-wide) is compared with the AVX2
  record, which every SIMD set must equal, and the output says so.
- ``emu`` (emu.json): the CUDA backend's source built for the host emulation
  of tests/cuda_emu (filter, mean field, refine). Deterministic on one machine
  and compiler; the compiler is recorded, and a different one is reported as
  not comparable rather than checked.
- ``nn`` (nn.json): ``densecrf.nn.CRFasRNN`` forward and backward on a small
  batch (float32 and float64, learned bandwidths). Its softmax and sums are
  torch's, so a different torch version is reported as not comparable.

Per case the file keeps the SHA-256 of the output's bytes, its shape and
dtype, the SHA-256 of the inputs (a changed input is told apart from a
changed result) and a few numbers (sum, largest magnitude, first values) to
start a diagnosis from. The record is made from one commit (``recorded_from``)
and is only ever rewritten on purpose: a change that is meant to keep the bits
must pass ``check`` unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GOLDEN_DIR = os.path.join(HERE, "golden")
SUITES = ("cpu", "emu", "nn")
# DENSECRF_KERNELS caps the loop set picked at run time ('' = the best the CPU has).
KERNEL_CAPS = ("", "avx512vl", "avx2", "avx2-wide", "baseline")
# Every SIMD loop set is meant to give the AVX2 set's bits (benchmarks/RESULTS.md).
SIMD_TWIN = "avx2+fma"


# ---------------------------------------------------------------------------
# Recording one output.


def _sha(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _entry(out, inputs) -> dict:
    a = np.ascontiguousarray(np.asarray(out))
    flat = a.ravel().astype(np.float64)
    finite = flat[np.isfinite(flat)]
    return {
        "sha256": _sha(a),
        "shape": list(a.shape),
        "dtype": str(a.dtype),
        "inputs_sha256": _sha(*inputs)[:16],
        "sum": float(finite.sum()) if finite.size else 0.0,
        "absmax": float(np.abs(finite).max()) if finite.size else 0.0,
        "non_finite": int(flat.size - finite.size),
        "first": [float(x) for x in flat[:3]],
    }


# ---------------------------------------------------------------------------
# Inputs.


def _scene(h, w, k, seed):
    from densecrf.bench import synthetic_scene

    image, _, probs = synthetic_scene(h, w, k, seed)
    return image, probs


def _unary(n, k, seed, scale):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, k)) * scale).astype(np.float32)


def _compat(kind, k, seed):
    rng = np.random.default_rng(seed)
    if kind == "potts":
        return 3.0
    if kind == "diagonal":
        return -(1.0 + 4.0 * rng.random(k)).astype(np.float32)
    m = rng.normal(0.0, 0.5, (k, k))
    m = (m + m.T) / 2 - 3.0 * np.eye(k)
    return m.astype(np.float32)


# ---------------------------------------------------------------------------
# Suites. Each returns {case name: entry}.


def suite_cpu() -> dict:
    import densecrf
    from densecrf.bench import reference_workload

    out = {}
    # refine on a scene: every label count of the unrolled rows (up to 8 one
    # vector; 9-32 the 8- and 16-lane paths with their tails; 33-64 unrolled)
    # and a few of the generic loop beyond.
    for k in (*range(1, 41), 47, 48, 56, 63, 64, 65, 80, 100):
        img, p = _scene(40, 56, k, seed=k)
        for t in (1, 2, 3) if k in (9, 21, 40, 65) else (1,):
            q = densecrf.refine(img, p, n_iter=5, threads=t)
            out[f"refine K={k} threads={t}"] = _entry(q, [img, p])
    # Mean field on two terms (d = 2 grid, d = 5 bilateral): every normalisation
    # and compatibility on a label count of each path.
    for k in (2, 5, 8, 9, 16, 17, 21, 24, 25, 32, 33, 40, 64, 65):
        img, p = _scene(24, 32, k, seed=100 + k)
        h, w = img.shape[:2]
        pos = densecrf.grid_positions((h, w), 3.0)
        bil = densecrf.bilateral_features(img, 20.0, 13.0)
        u = densecrf.unary_from_softmax(p.reshape(-1, k))
        for norm in ("none", "before", "after", "symmetric"):
            for ckind in ("potts", "diagonal", "matrix"):
                c = _compat(ckind, k, seed=k)
                for t in (1, 2) if norm == "symmetric" else (1,):
                    crf = densecrf.DenseCRF(h * w, k, threads=t)
                    crf.set_unary(u)
                    crf.add_pairwise(pos, 2.0, normalization=norm)
                    crf.add_pairwise(bil, c, normalization=norm)
                    q = crf.inference(4)
                    out[f"mean_field K={k} {norm} {ckind} threads={t}"] = _entry(q, [u, pos, bil, np.asarray(c)])
    # Logits far outside [-64, 64] (the softmax's range test, its slow branch).
    for k in (2, 8, 9, 16, 21, 25, 32, 40, 64, 65):
        n = 600
        u = _unary(n, k, seed=7 * k, scale=300.0)
        f = (np.random.default_rng(k).random((n, 3)) * 4).astype(np.float32)
        for t in (1, 3):
            crf = densecrf.DenseCRF(n, k, threads=t)
            crf.set_unary(u)
            crf.add_pairwise(f, 5.0)
            q = crf.inference(3)
            out[f"wide logits K={k} threads={t}"] = _entry(q, [u, f])
    # Start and one step (no prebuilt start; Q passed in).
    k = 21
    u = _unary(500, k, seed=3, scale=2.0)
    f = (np.random.default_rng(3).random((500, 2)) * 5).astype(np.float32)
    crf = densecrf.DenseCRF(500, k, threads=1)
    crf.set_unary(u)
    crf.add_pairwise(f, 3.0)
    q0 = crf.start_inference()
    out["start_inference K=21"] = _entry(q0, [u, f])
    out["step_inference K=21"] = _entry(crf.step_inference(q0), [u, f])
    # Each term's message alone (PairwiseTerm::apply), every compatibility.
    for k in (5, 21):
        n = 700
        u = _unary(n, k, seed=50 + k, scale=2.0)
        f = (np.random.default_rng(50 + k).random((n, 3)) * 4).astype(np.float32)
        crf = densecrf.DenseCRF(n, k, threads=1)
        crf.set_unary(u)
        for ckind in ("potts", "diagonal", "matrix"):
            crf.add_pairwise(f, _compat(ckind, k, seed=k), normalization="after" if ckind == "matrix" else "symmetric")
        q = crf.start_inference()
        for ckind, m in zip(("potts", "diagonal", "matrix"), crf.pairwise_messages(q), strict=True):
            out[f"pairwise_messages K={k} {ckind}"] = _entry(m, [u, f])
    # Unaries from probabilities (the flat pass beyond 64 labels, the row pass below).
    for k in (3, 21, 64, 70):
        _, p = _scene(30, 40, k, seed=200 + k)
        out[f"unary_from_softmax K={k}"] = _entry(densecrf.unary_from_softmax(p, channel_axis=-1), [p])
    # The reference workload.
    img, p, _ = reference_workload()
    for it, t in ((5, 1), (5, 2), (10, 2), (0, 1)):
        q = densecrf.refine(img, p, n_iter=it, threads=t)
        out[f"reference 500x375 K=21 n_iter={it} threads={t}"] = _entry(q, [img, p])
    # Lattice filters over d = 1..12: scattered features (hash tables), plus
    # grid features for d <= 4 (the dense vertex table).
    for d in range(1, 13):
        rng = np.random.default_rng(1000 + d)
        f = (rng.normal(size=(1500, d)) * 2.5).astype(np.float32)
        for c in (1, 4, 21):
            v = rng.normal(size=(1500, c)).astype(np.float32)
            for t in (1, 2) if c == 4 else (1,):
                lat = densecrf.PermutohedralLattice(f, threads=t)
                for tr in (False, True) if c == 4 else (False,):
                    y = lat.filter(v, transpose=tr, threads=t)
                    out[f"filter d={d} C={c} transpose={tr} threads={t}"] = _entry(y, [f, v])
    for d in (1, 2, 3, 4):
        n_side = {1: 3000, 2: 60, 3: 16, 4: 8}[d]
        grids = np.meshgrid(*[np.arange(n_side, dtype=np.float32) / 3.0] * d, indexing="ij")
        f = np.stack([g.ravel() for g in grids], -1).astype(np.float32)
        v = np.random.default_rng(d).normal(size=(f.shape[0], 5)).astype(np.float32)
        for t in (1, 2):
            y = densecrf.PermutohedralLattice(f, threads=t).filter(v, threads=t)
            out[f"filter grid d={d} threads={t}"] = _entry(y, [f, v])
    return out


def _use_emulation():
    """Points the CUDA backend (densecrf.backends.cuda, whose ``_C`` every CUDA call
    goes through) at the host-emulated module, as tests/test_cuda.py's ``backend``
    fixture does; returns densecrf.cuda, the API on top."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "cuda_emu"))
    try:
        import emulate
    finally:
        sys.path.pop(0)
    import densecrf.backends.cuda as cuda_backend
    import densecrf.cuda as dcuda

    cuda_backend._C = emulate.build()
    cuda_backend._built_with_cuda = lambda: True
    return dcuda


def suite_emu() -> dict:
    dcuda = _use_emulation()
    out = {}
    for d in (1, 2, 3, 5, 7, 12):
        rng = np.random.default_rng(2000 + d)
        f = (rng.normal(size=(700, d)) * 2).astype(np.float32)
        v = rng.normal(size=(700, 3)).astype(np.float32)
        for tr in (False, True):
            out[f"filter d={d} transpose={tr}"] = _entry(dcuda.filter(f, v, transpose=tr), [f, v])
    for k in (4, 21, 40):
        n = 400
        u = _unary(n, k, seed=k, scale=2.0)
        rng = np.random.default_rng(k)
        f1 = (rng.random((n, 2)) * 3).astype(np.float32)
        f2 = (rng.random((n, 5)) * 3).astype(np.float32)
        for norm in ("none", "before", "after", "symmetric"):
            for ckind in ("potts", "diagonal", "matrix"):
                c = _compat(ckind, k, seed=k)
                q = dcuda.mean_field(u, [(f1, 1.5, norm), (f2, c, norm)], n_iter=5)
                out[f"mean_field K={k} {norm} {ckind}"] = _entry(q, [u, f1, f2, np.asarray(c)])
    for k in (5, 21):
        img, p = _scene(60, 80, k, seed=k)
        out[f"refine 60x80 K={k}"] = _entry(dcuda.refine(img, p, n_iter=10), [img, p])
    return out


def suite_nn() -> dict:
    import torch

    import densecrf.nn as dnn

    torch.set_num_threads(1)  # torch's own reductions in one order
    out = {}
    img, p = _scene(16, 20, 5, seed=11)
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        logits = torch.log(torch.from_numpy(p)).permute(2, 0, 1)[None].repeat(2, 1, 1, 1).to(dtype)
        logits = (logits + 0.3 * torch.randn(logits.shape, dtype=dtype)).requires_grad_(True)
        image = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None].repeat(2, 1, 1, 1).to(dtype)
        layer = dnn.CRFasRNN(5, n_iter=3, learn_bandwidths=True, threads=1).to(dtype)
        z = layer(logits, image)
        g = torch.linspace(-1, 1, z.numel(), dtype=dtype).reshape(z.shape)
        (z * g).sum().backward()
        name = str(dtype).replace("torch.", "")
        ins = [logits.detach().numpy(), image.numpy()]
        out[f"CRFasRNN {name} forward"] = _entry(z.detach().numpy(), ins)
        out[f"CRFasRNN {name} grad logits"] = _entry(logits.grad.numpy(), ins)
        for pname, prm in layer.named_parameters():
            out[f"CRFasRNN {name} grad {pname}"] = _entry(prm.grad.numpy(), ins)
        with torch.no_grad():  # the fused native mean field (float32) or the plain loop
            out[f"CRFasRNN {name} no_grad"] = _entry(layer(logits, image).numpy(), ins)
    return out


# ---------------------------------------------------------------------------
# Environment of a record: what must match for bits to be comparable.


def _compiler_version() -> str:
    cxx = os.environ.get("CXX", "g++")
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def _environment(suite: str) -> dict:
    env = {"numpy": np.__version__, "machine": platform.machine()}
    if suite == "emu":
        env["emulation_compiler"] = _compiler_version()
    if suite == "nn":
        import torch

        env["torch"] = torch.__version__
    return env


def _not_comparable(suite: str, recorded: dict, here: dict) -> list[str]:
    keys = {"emu": ["emulation_compiler", "machine"], "nn": ["torch", "machine"], "cpu": ["machine"]}[suite]
    return [f"{k}: recorded {recorded.get(k)!r}, here {here.get(k)!r}" for k in keys if recorded.get(k) != here.get(k)]


# ---------------------------------------------------------------------------
# Workers (one process per suite and loop set) and the driver.


def _worker(suite: str) -> None:
    import densecrf

    t0 = time.perf_counter()
    cases = {"cpu": suite_cpu, "emu": suite_emu, "nn": suite_nn}[suite]()
    info = densecrf._build_info()
    result = {
        "kernels": info["kernels"],
        "compiler": info["compiler"],
        "environment": _environment(suite),
        "cases": cases,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    json.dump(result, sys.stdout)


def _run_worker(suite: str, cap: str) -> dict:
    env = dict(os.environ)
    env["DENSECRF_KERNELS"] = cap
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "_worker", suite],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"golden worker for suite {suite!r} (DENSECRF_KERNELS={cap!r}) failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def _runs(suite: str) -> list[dict]:
    """The suite's results, once per distinct loop set for cpu, once otherwise."""
    if suite != "cpu":
        return [_run_worker(suite, "")]
    runs, seen = [], set()
    for cap in KERNEL_CAPS:
        r = _run_worker(suite, cap)
        if r["kernels"] not in seen:
            seen.add(r["kernels"])
            runs.append(r)
    return runs


def _path(suite: str) -> str:
    return os.path.join(GOLDEN_DIR, f"{suite}.json")


def _git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record(suites, note: str | None) -> int:
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    for suite in suites:
        runs = _runs(suite)
        doc = {
            "suite": suite,
            "recorded_from": note or _git_head(),
            "environment": runs[0]["environment"],
            "compiler": runs[0]["compiler"],
            "kernels": {r["kernels"]: r["cases"] for r in runs},
        }
        tmp = _path(suite) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, _path(suite))
        n = sum(len(r["cases"]) for r in runs)
        print(
            f"{suite}: recorded {n} cases ({', '.join(r['kernels'] for r in runs)}) in "
            f"{sum(r['seconds'] for r in runs):.1f} s -> {os.path.relpath(_path(suite))}"
        )
    return 0


def _diff(name: str, want: dict, got: dict | None) -> str:
    if got is None:
        return f"  {name}: missing from this run"
    if want["inputs_sha256"] != got["inputs_sha256"]:
        return f"  {name}: the INPUTS changed (inputs sha {want['inputs_sha256']} -> {got['inputs_sha256']})"
    parts = []
    for key in ("shape", "dtype", "non_finite", "sum", "absmax", "first"):
        if want[key] != got[key]:
            parts.append(f"{key} {want[key]} -> {got[key]}")
    return f"  {name}: output differs" + (f" ({'; '.join(parts)})" if parts else " (same summary numbers)")


def check(suites) -> int:
    failed = 0
    for suite in suites:
        if not os.path.exists(_path(suite)):
            print(f"{suite}: no record at {os.path.relpath(_path(suite))} (run `record` first)")
            failed += 1
            continue
        with open(_path(suite)) as f:
            doc = json.load(f)
        t0 = time.perf_counter()
        try:
            runs = _runs(suite)
        except RuntimeError as exc:
            print(f"{suite}: FAILED to run\n{exc}")
            failed += 1
            continue
        for r in runs:
            reasons = _not_comparable(suite, doc["environment"], r["environment"])
            if reasons:
                print(
                    f"{suite} [{r['kernels']}]: NOT COMPARED, the record is from another setup ({'; '.join(reasons)})"
                )
                continue
            want = doc["kernels"].get(r["kernels"])
            against = r["kernels"]
            if want is None and r["kernels"] != "baseline" and SIMD_TWIN in doc["kernels"]:
                want, against = doc["kernels"][SIMD_TWIN], SIMD_TWIN
            if want is None:
                print(
                    f"{suite} [{r['kernels']}]: NOT COMPARED, no record for these loops "
                    f"(recorded: {', '.join(doc['kernels'])})"
                )
                continue
            bad = [
                _diff(name, w, r["cases"].get(name))
                for name, w in want.items()
                if r["cases"].get(name, {}).get("sha256") != w["sha256"]
            ]
            extra = sorted(set(r["cases"]) - set(want))
            label = r["kernels"] if against == r["kernels"] else f"{r['kernels']} against the {against} record"
            if bad:
                failed += 1
                print(
                    f"{suite} [{label}]: {len(bad)} of {len(want)} cases DIFFER from the record "
                    f"({doc['recorded_from']}):"
                )
                print("\n".join(bad))
            else:
                print(f"{suite} [{label}]: {len(want)} cases, same bits as the record ({doc['recorded_from']})")
            if extra:
                print(f"  (not in the record, not checked: {', '.join(extra)})")
        print(f"{suite}: {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("record", "check"):
        sp = sub.add_parser(mode)
        sp.add_argument(
            "--suite", action="append", choices=SUITES, help="a suite to run (repeatable; default: all three)"
        )
        if mode == "record":
            sp.add_argument("--note", help="what the record is made from (default: the short HEAD hash)")
    wp = sub.add_parser("_worker")
    wp.add_argument("suite", choices=SUITES)
    args = parser.parse_args(argv)
    if args.mode == "_worker":
        _worker(args.suite)
        return 0
    suites = args.suite or list(SUITES)
    if args.mode == "record":
        return record(suites, args.note)
    return check(suites)


if __name__ == "__main__":
    sys.exit(main())
