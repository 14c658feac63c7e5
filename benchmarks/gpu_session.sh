#!/usr/bin/env bash
# Every GPU and many-core check in one bounded run, for a short lease on a GPU machine:
#
#   OUT=some/dir DENSECRF_CAMVID=path/to/camvid bash benchmarks/gpu_session.sh
#
# Ordered by value, each step with its own time limit (so a hang costs one
# step, not the lease), logs under $OUT:
#  1. build (CUDA for sm_90 only: the lease is short) unless a usable module is there;
#  2. the CUDA tests (every GPU test compares with the CPU backend): the
#     backend, the torch layer, the dataset pipeline's cuda executor, the losses;
#  3. compute-sanitizer memcheck on the smoke workload;
#  4. benchmarks/bench_cuda.py --quick and bench_nn_cuda.py (issue "GPU near its
#     memory floor": the before figures on this device);
#  5. the scratch pool and index division before/after (benchmarks/cuda_ab.py); float64 on the GPU (the reference workload, against
#     float32 and the CPU's float64);
#     benchmarks/thread_scaling.py on all cores (2048 x 2048 and the reference workload);
#  6. the dataset pipeline on the GPU (benchmarks/dataset_throughput.py --cuda)
#     when CamVid is at $DENSECRF_CAMVID;
#  7. DenseCRFLoss forward + backward on the GPU (benchmarks/rloss_compare.py without --rloss);
#  8. racecheck last (slow: RACECHECK_S seconds, default 45).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T0=$(date +%s)
BUDGET=${BUDGET_S:-540}   # the whole run's seconds: every step's limit is cut to what is left
step() { echo; echo "== $1 ($(( $(date +%s) - T0 )) s)"; }
# lim N: N seconds, or what is left of the budget if less (at least 1)
lim() { local left=$(( BUDGET - ($(date +%s) - T0) )); [ $left -lt 1 ] && left=1; [ $1 -lt $left ] && echo $1 || echo $left; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"
export PYTHONPATH=$PWD
if ! $PY -c "import densecrf, sys; sys.exit(0 if densecrf.cuda_available() else 1)" 2>"$OUT/import.txt"; then
  step "build"
  rm -f densecrf/_C*.so
  unset PYTHONPATH
  timeout $(lim 240) $PY -m pip install -q --no-build-isolation --no-deps -e . \
      -C "cmake.define.DENSECRF_CUDA_ARCHITECTURES=90-real" > "$OUT/build.txt" 2>&1
  echo "build exit $?"; tail -3 "$OUT/build.txt"
fi
$PY -X faulthandler -c "import densecrf; densecrf.show_config(); print('GPU:', densecrf.cuda.device_name(0))" 2>&1 | tee -a "$OUT/gpu.txt"

step "CUDA tests"
tests="tests/test_cuda.py"
for f in tests/test_dataset.py tests/test_losses.py tests/test_instances.py; do [ -f $f ] && tests="$tests $f"; done
timeout $(lim 150) $PY -m pytest -q -rs -p no:cacheprovider --timeout 60 $tests -k "not emu and (cuda or gpu or GPU)" \
    2>&1 | tee "$OUT/tests_cuda.txt" | tail -15
timeout $(lim 60) $PY -m pytest -q -rs -p no:cacheprovider --timeout 60 \
    tests/test_nn.py tests/test_hostile.py tests/test_float64.py -k "cuda or gpu or GPU" 2>&1 | tee "$OUT/tests_nn.txt" | tail -6

step "memcheck"
timeout $(lim 60) compute-sanitizer --tool memcheck --error-exitcode 3 $PY benchmarks/bench_cuda.py --smoke \
    > "$OUT/sanitizer_memcheck.txt" 2>&1
echo "memcheck exit $?"; tail -2 "$OUT/sanitizer_memcheck.txt"

step "bench_cuda"
timeout $(lim 90) $PY benchmarks/bench_cuda.py --quick --out "$OUT/bench_cuda.md" 2>&1 | tee "$OUT/bench_cuda.txt" | tail -20
step "bench_nn_cuda"
timeout $(lim 60) $PY benchmarks/bench_nn_cuda.py --repeats 10 2>&1 | tee "$OUT/bench_nn_cuda.txt" | tail -8

step "before/after of 2026-12-05's CUDA changes (scratch pool, index division), alternating processes"
for side in "0 1" "1 0" "0 0" "1 1" "0 1" "1 0"; do
  set -- $side
  DENSECRF_CUDA_SCRATCH_POOL=$1 DENSECRF_CUDA_PLAIN_DIV=$2 timeout $(lim 40) $PY benchmarks/cuda_ab.py --calls 20 2>&1 | tail -1
done | tee "$OUT/cuda_ab.txt"

step "float64 on the GPU"
# the reference workload (500 x 375, K = 21, 10 iterations, lattice build included) in
# float32 and float64, alternated, 5 each after a warm-up; milliseconds per call (wall, synchronised)
timeout $(lim 60) $PY - <<'PYEOF' 2>&1 | tee "$OUT/float64_cuda.txt"
import time, numpy as np, densecrf
from densecrf.bench import reference_workload
img, probs, _ = reference_workload()
t = {"float32": [], "float64": []}
for rep in range(6):
    for name, dt in (("float32", None), ("float64", np.float64)):
        t0 = time.perf_counter(); densecrf.refine(img, probs, n_iter=10, device="cuda", dtype=dt); dt_s = time.perf_counter() - t0
        if rep: t[name].append(dt_s * 1e3)
q32 = densecrf.refine(img, probs, n_iter=10, device="cuda")
q64 = densecrf.refine(img, probs, n_iter=10, device="cuda", dtype=np.float64)
c64 = densecrf.refine(img, probs, n_iter=10, dtype=np.float64)
print({k: round(float(np.median(v)), 2) for k, v in t.items()}, "ms median (numpy in and out)")
print("float64 GPU vs CPU max abs", float(np.abs(q64 - c64).max()), "| float32 vs float64 labels agree", float((q32.argmax(-1) == q64.argmax(-1)).mean()))
PYEOF

step "thread scaling"
timeout $(lim 120) $PY benchmarks/thread_scaling.py --repeats 3 --json "$OUT/thread_scaling.json" 2>&1 \
    | tee "$OUT/thread_scaling.txt"

if [ -n "${DENSECRF_CAMVID:-}" ] && [ -d "$DENSECRF_CAMVID/val" ] && [ -f benchmarks/dataset_throughput.py ]; then
  step "dataset pipeline on the GPU"
  timeout $(lim 150) $PY benchmarks/dataset_throughput.py --cuda --skip pydensecrf dask ray --layouts f16 --repeats 2 \
      --limit ${DATASET_FRAMES:-48} --workers $(nproc) \
      --data /tmp/densecrf_ds --json "$OUT/dataset_cuda.json" 2>&1 | tee "$OUT/dataset_cuda.txt" | tail -25
fi

step "DenseCRFLoss on the GPU"
timeout $(lim 60) $PY benchmarks/rloss_compare.py --repeats 20 2>&1 | tee "$OUT/loss_cuda.txt" | tail -6

step "racecheck"
timeout $(lim ${RACECHECK_S:-45}) compute-sanitizer --tool racecheck --error-exitcode 3 $PY benchmarks/bench_cuda.py --smoke \
    > "$OUT/sanitizer_racecheck.txt" 2>&1
echo "racecheck exit $? ($(grep -c 'RACECHECK SUMMARY: 0 hazards' "$OUT/sanitizer_racecheck.txt") clean summaries)"
step "done"
