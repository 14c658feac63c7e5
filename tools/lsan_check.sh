#!/usr/bin/env bash
# LeakSanitizer over tools/leak_check.py, against the ASan build made by
# tools/asan_build.sh (.venv-asan). CPython itself leaves objects unfreed at
# exit by design, so LeakSanitizer always prints reports; this script fails
# only on a leak whose allocation stack passes through densecrf's extension
# (its module _C*.so, a csrc/ source file or the dcrf:: namespace).
#
#   tools/lsan_check.sh          # 300 calls of each entry point
#   tools/lsan_check.sh 1000
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DENSECRF_ASAN_VENV:-$ROOT/.venv-asan}"
CALLS="${1:-300}"
LOG="$(mktemp -d)/lsan"
CXX_BIN="${CXX:-g++}"
[[ -x "$VENV/bin/python" ]] || { echo "lsan_check.sh: run tools/asan_build.sh first" >&2; exit 2; }

set +e
# RSS is meaningless under ASan (freed memory sits in quarantine), so the
# RSS bound is lifted and LeakSanitizer is the judge here.
LD_PRELOAD="$("$CXX_BIN" -print-file-name=libasan.so) $("$CXX_BIN" -print-file-name=libubsan.so)" \
ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:malloc_context_size=40:log_path=$LOG" \
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" PYTHONMALLOC=malloc \
  "$VENV/bin/python" -P "$ROOT/tools/leak_check.py" -n "$CALLS" --limit-kib 100000000
rc=$?
set -e
reports=$(cat "$LOG".* 2>/dev/null || true)
total=$(grep -c "leak of" <<<"$reports" || true)
# Split the log into one block per leak and keep those touching densecrf.
ours=$(awk '/leak of/{if (blk ~ /_C\.cpython|csrc\/|dcrf::/) n++; blk=""} {blk = blk "\n" $0}
            END {if (blk ~ /_C\.cpython|csrc\/|dcrf::/) n++; print n+0}' <<<"$reports")
if grep -q "ERROR: AddressSanitizer\|runtime error:" <<<"$reports"; then
  echo "lsan_check.sh: AddressSanitizer/UBSan error, see $LOG.*" >&2
  exit 1
fi
echo "lsan_check.sh: $total leak reports at exit, $ours with densecrf in the allocation stack (log: $LOG.*)"
[[ "$ours" == 0 ]] || exit 1
# leak_check.py itself exits 0 (RSS bound lifted) unless an entry point failed;
# LeakSanitizer makes the process exit non-zero whenever it prints a report.
[[ $rc == 0 || $total -gt 0 ]] || exit "$rc"
