#!/usr/bin/env bash
# Every GPU check in one bounded run, for a short lease on a GPU machine:
#
#   OUT=some/dir bash benchmarks/gpu_session.sh
#
# 1. uses densecrf/_C*.so if one built for this Python with CUDA is present
#    (built elsewhere and copied in), else builds the package here;
# 2. the CUDA tests (every GPU test compares with the CPU backend);
# 3. benchmarks/bench_cuda.py (numpy-level workloads) and
#    benchmarks/bench_nn_cuda.py (the torch layer, forward and backward);
# 4. compute-sanitizer memcheck and racecheck on the smoke workload
#    (racecheck is slow: RACECHECK_S seconds, default 60).
# Each step has its own time limit so that a hang costs one step, not the
# lease; logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
export PYTHONPATH=$PWD
if ! $PY -c "import densecrf, sys; sys.exit(0 if densecrf.cuda_available() else 1)" 2>"$OUT/import.txt"; then
  echo "prebuilt module unusable ($(tail -1 "$OUT/import.txt")): building here"
  rm -f densecrf/_C*.so
  unset PYTHONPATH
  $PY -m pip install -q --no-build-isolation --no-deps -e . \
      -C "cmake.define.DENSECRF_CUDA_ARCHITECTURES=90-real" 2>&1 | tail -5
fi
$PY -c "import densecrf; densecrf.show_config(); print('GPU:', densecrf.cuda.device_name(0))" 2>&1 | tee -a "$OUT/gpu.txt"

echo "== tests"
timeout 170 $PY -m pytest -q -rs -p no:cacheprovider --timeout 60 \
    tests/test_cuda.py -k "not emu" 2>&1 | tee "$OUT/tests_cuda.txt" | tail -25
timeout 90 $PY -m pytest -q -rs -p no:cacheprovider --timeout 60 \
    tests/test_nn.py tests/test_hostile.py -k "cuda or gpu or GPU" 2>&1 | tee "$OUT/tests_nn.txt" | tail -15

echo "== bench_cuda"
timeout 150 $PY benchmarks/bench_cuda.py --repeats 10 --out "$OUT/bench_cuda.md" 2>&1 | tee "$OUT/bench_cuda.txt"
echo "== bench_nn_cuda"
timeout 90 $PY benchmarks/bench_nn_cuda.py --repeats 10 2>&1 | tee "$OUT/bench_nn_cuda.txt"

echo "== compute-sanitizer"
for tool in memcheck racecheck; do
  limit=60
  [ $tool = racecheck ] && limit=${RACECHECK_S:-60}
  timeout $limit compute-sanitizer --tool $tool --error-exitcode 3 $PY benchmarks/bench_cuda.py --smoke \
      > "$OUT/sanitizer_$tool.txt" 2>&1
  echo "$tool exit $? ($(grep -c 'ERROR SUMMARY: 0 errors\|RACECHECK SUMMARY: 0 hazards' "$OUT/sanitizer_$tool.txt") clean summaries)"
  tail -3 "$OUT/sanitizer_$tool.txt"
done
