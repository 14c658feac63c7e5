#!/usr/bin/env bash
# Second, short GPU run after benchmarks/gpu_folds.sh (2026-12-04): the arms that its time
# budgets left unmatched, rerun with the same fixed schedule on both sides, and the
# dataset pipeline's GPU figures:
#
#   OUT=dir DATA=camvid_dir INIT=dir_with_{A,B}_strong/final.pt [PNG=camvid_png_dir] bash benchmarks/gpu_folds_matched.sh
#
# - partial cross-entropy on scribbles for the epochs its DenseCRFLoss twin got in the first
#   run (fold A 41, fold B 30; both arms also make the same timing passes, so they draw the
#   same random crops);
# - the CRF-as-RNN fine-tune and its control, both 10 epochs from the same strong network.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/out2}; DATA=${DATA:?}; INIT=${INIT:?}
HARD=${HARD:-250}
RUNS=${RUNS:-runs/folds2}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
export PYTHONPATH=$PWD
if ! $PY -c "import densecrf, sys; sys.exit(0 if densecrf.cuda_available() else 1)" 2>/dev/null; then
  rm -f densecrf/_C*.so; unset PYTHONPATH
  timeout 120 $PY -m pip install -q --no-build-isolation --no-deps -e . \
      -C "cmake.define.DENSECRF_CUDA_ARCHITECTURES=90-real" > "$OUT/build.txt" 2>&1
  echo "build exit $? ($(el) s)"
fi
$PY -X faulthandler -c "import densecrf; print('device_name:', densecrf.cuda.device_name(0))" 2>&1 | tee "$OUT/device_name.txt"
run() { local name=$1; shift; mkdir -p "$RUNS/$name"
  OMP_NUM_THREADS=1 $PY -m densecrf.models.folds --data "$DATA" --device cuda --amp bf16 --eval "" \
      --out "$RUNS/$name" "$@" > "$RUNS/$name/stdout.txt" 2>&1 & }
run A_pce --fold A --recipe strong --sparse scribbles --epochs 41 --max-seconds 100000 --workers 4
run B_pce --fold B --recipe strong --sparse scribbles --epochs 30 --max-seconds 100000 --workers 4
for f in A B; do
  run ${f}_crfrnn --fold $f --init "$INIT/${f}_strong/final.pt" --head crf --epochs 10 --max-seconds 100000
  run ${f}_control --fold $f --init "$INIT/${f}_strong/final.pt" --head none --epochs 10 --max-seconds 100000
done
while [ $(el) -lt $(( HARD - 100 )) ] && pgrep -f densecrf.models.folds > /dev/null; do sleep 2; done
pkill -f densecrf.models.folds && echo "killed the runs still going at $(el) s"
for d in "$RUNS"/*/; do echo "-- $d"; tail -2 "$d/stdout.txt"; done
if [ -n "${PNG:-}" ] && [ -d "$PNG/val" ]; then
  echo "== dataset pipeline on the GPU ($(el) s)"
  DENSECRF_CAMVID=$PNG timeout -s ABRT $(( HARD - 15 - $(el) )) $PY -X faulthandler benchmarks/dataset_throughput.py --cuda \
      --skip pydensecrf dask ray --layouts f16 --repeats 1 --limit 24 --workers $(nproc) \
      --data /tmp/densecrf_ds --json "$OUT/dataset_cuda.json" > "$OUT/dataset_cuda.txt" 2>&1
  echo "exit $?"; tail -12 "$OUT/dataset_cuda.txt"
fi
$PY tools/pack_runs.py pack "$RUNS" "$OUT"
(cd "$OUT" && ls *.txt *.json 2>/dev/null | grep -v '^runs.json$' | xargs -r tar cf misc.tar --remove-files)
echo "== done ($(el) s)"
