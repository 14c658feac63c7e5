#!/usr/bin/env bash
# The CUDA backend's check on a GPU machine, in one command:
#
#   bash benchmarks/gpu_check.sh            # build, GPU tests, full benchmark (appends to RESULTS.md)
#   bash benchmarks/gpu_check.sh --quick    # the same with a shorter benchmark
#
# Builds densecrf with its CUDA backend into the active environment, fails
# unless a GPU is visible (so that nothing passes by skipping), runs the CUDA
# tests (every GPU test compares with the CPU backend), then the benchmark
# (which checks the reference workload against the CPU before timing it).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e . --no-build-isolation
python - <<'PY'
import sys
import densecrf
densecrf.show_config()
if not densecrf.cuda_available():
    sys.exit("gpu_check: no CUDA device visible, or densecrf was built without CUDA (is nvcc on PATH?)")
print("GPU:", densecrf.cuda.device_name(0))
PY
python -m pytest -q -rs tests/test_cuda.py tests/test_nn.py
python benchmarks/bench_cuda.py "$@"
