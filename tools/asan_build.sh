#!/usr/bin/env bash
# Builds densecrf._C with AddressSanitizer + UndefinedBehaviorSanitizer into
# its own virtual environment (.venv-asan, build dir build/asan) and runs the
# test suite against it. Any sanitizer report aborts the run (halt_on_error),
# so a zero exit status means: the suite passed and no report was printed.
#
#   tools/asan_build.sh              # build + run the whole suite
#   tools/asan_build.sh tests/test_hostile.py -x   # extra args go to pytest
#
# CPython itself is not built with ASan, so libasan must be preloaded before
# anything else is loaded. Leak detection is off for the suite: the
# interpreter keeps allocations alive until exit by design and LeakSanitizer
# would report those; tools/leak_check.py checks for leaks of our own instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DENSECRF_ASAN_VENV:-$ROOT/.venv-asan}"
cd "$ROOT"

CXX_BIN="${CXX:-g++}"
LIBASAN="$("$CXX_BIN" -print-file-name=libasan.so)"
LIBUBSAN="$("$CXX_BIN" -print-file-name=libubsan.so)"
for lib in "$LIBASAN" "$LIBUBSAN"; do
  if [[ ! -e "$lib" ]]; then
    echo "asan_build.sh: $lib not found (install the compiler's sanitizer runtime, e.g. libasan8 libubsan1)" >&2
    exit 2
  fi
done

if [[ ! -x "$VENV/bin/python" ]]; then
  python -m venv --system-site-packages "$VENV"
fi
# Editable install, like the development venv: its import hook is found
# before any other densecrf on the system site-packages. Own build dir, so the
# normal build is left alone.
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$VENV/bin/pip" install --no-build-isolation --no-deps -q -e . \
  -C cmake.define.DENSECRF_SANITIZE=ON -C cmake.build-type=RelWithDebInfo \
  -C build-dir=build/asan

export LD_PRELOAD="$LIBASAN $LIBUBSAN"
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=0:strict_init_order=1:check_initialization_order=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONMALLOC=malloc  # let ASan see every allocation, not pymalloc arenas
cd "$ROOT"
# The module imported must be this tree's, and instrumented.
SO="$("$VENV/bin/python" -P -c 'import densecrf, densecrf._C as m; assert densecrf.__file__.startswith("'"$ROOT"'/"), densecrf.__file__; print(m.__file__)')"
nm -D "$SO" | grep -q __asan_report || { echo "asan_build.sh: $SO is not instrumented" >&2; exit 2; }
echo "asan_build.sh: testing $SO"
# -P: do not put the source tree first on sys.path (it would shadow the
# installed, sanitized package).
exec "$VENV/bin/python" -P -m pytest -q -p no:cacheprovider "${@:-tests}"
