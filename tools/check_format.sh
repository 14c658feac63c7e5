#!/usr/bin/env bash
# C++/CUDA formatting check: clang-format (the PyPI wheel, `pip install
# clang-format`) with the repository's .clang-format over csrc/, cuda/ and
# tests/cuda_emu/. Exits non-zero naming each file that is not formatted.
#
#   tools/check_format.sh          # check (CI, pre-commit)
#   tools/check_format.sh --fix    # rewrite the files in place
#
# CLANG_FORMAT picks the binary (default: clang-format on PATH). The record
# was formatted with clang-format 23.1.5; other major versions may format
# some constructs differently.
set -euo pipefail
cd "$(dirname "$0")/.."
cf="${CLANG_FORMAT:-clang-format}"
if ! command -v "$cf" >/dev/null 2>&1; then
  echo "check_format: $cf not found (pip install clang-format)" >&2
  exit 2
fi
mapfile -t files < <(git ls-files -- 'csrc/*.cpp' 'csrc/*.h' 'cuda/*.cu' 'cuda/*.cuh' 'cuda/*.h' \
  'tests/cuda_emu/*.cpp' 'tests/cuda_emu/*.h' 'tests/cuda_emu/*.cuh')
if [ "${#files[@]}" -eq 0 ]; then
  echo "check_format: no C++/CUDA files found" >&2
  exit 2
fi
if [ "${1:-}" = "--fix" ]; then
  "$cf" --style=file -i "${files[@]}"
  echo "check_format: formatted ${#files[@]} files with $("$cf" --version)"
  exit 0
fi
"$cf" --style=file --dry-run --Werror "${files[@]}"
echo "check_format: ${#files[@]} files formatted as .clang-format says ($("$cf" --version))"
