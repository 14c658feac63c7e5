#!/usr/bin/env bash
# The fold-protocol training runs of issues "A bundled network that holds up" and
# "The dense-CRF loss", plus the GPU figures of "Refine whole datasets", in one
# bounded run on a GPU machine:
#
#   OUT=dir DATA=camvid_dir [PNG=camvid_png_dir] bash benchmarks/gpu_folds.sh
#
# DATA: a CamVid layout (train/, trainannot/, val/, valannot/; images PNG or JPEG).
# Phase 1, all at once on the one GPU (each run measures its epoch time first and
# cuts its fixed schedule to its --max-seconds): per fold A and B, today's recipe
# (classic), the strong recipe with DeepLabLite and with the U-Net, and the sparse
# (scribble) runs with partial cross-entropy alone and with DenseCRFLoss.
# Phase 2, once the strong DeepLabLite runs end: the CRF-as-RNN fine-tune and its
# matched control (the same fine-tune without the head), per fold.
# Then the dataset pipeline's cuda executor on PNG frames (PNG=...), and the
# runs packed into $OUT (tools/pack_runs.py). DEVICE=cpu LIMIT=4 S1=20 ... is a smoke run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/out}
DATA=${DATA:?CamVid folder}
DEVICE=${DEVICE:-cuda}
LIMIT=${LIMIT:-0}
S2=${S2:-90}     # seconds of the phase-2 fine-tunes
HARD=${HARD:-560}  # the whole run's deadline: stragglers are killed, what finished is packed
RUNS=${RUNS:-runs/folds}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
AMP=bf16; [ "$DEVICE" = cpu ] && AMP=none
common="--data $DATA --device $DEVICE --amp $AMP --limit $LIMIT"

if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
  export PYTHONPATH=$PWD
  if ! $PY -c "import densecrf, sys; sys.exit(0 if densecrf.cuda_available() else 1)" 2>/dev/null; then
    echo "== build ($(el) s)"
    rm -f densecrf/_C*.so
    unset PYTHONPATH
    timeout 240 $PY -m pip install -q --no-build-isolation --no-deps -e . \
        -C "cmake.define.DENSECRF_CUDA_ARCHITECTURES=90-real" > "$OUT/build.txt" 2>&1
    echo "build exit $? ($(el) s)"; tail -3 "$OUT/build.txt"
  fi
  $PY -X faulthandler -c "import densecrf; print('device_name:', densecrf.cuda.device_name(0))" 2>&1 | tee -a "$OUT/gpu.txt"
fi

# the training budgets are what is left after the build: phase 1 ends about 170 s before the
# deadline (evaluation, phase 2's tail, the dataset figures, packing); the strong runs 70 s earlier
left=$(( HARD - $(el) ))
S1=${S1:-$(( left - 170 ))}
S1S=${S1S:-$(( S1 - 70 ))}
echo "budgets: phase 1 $S1 s, strong $S1S s, phase 2 $S2 s"
run() {  # run NAME ARGS...: one training process, its output in RUNS/NAME/stdout.txt
  local name=$1; shift
  mkdir -p "$RUNS/$name"
  $PY -m densecrf.models.folds $common --out "$RUNS/$name" "$@" > "$RUNS/$name/stdout.txt" 2>&1 &
  echo $! > "$RUNS/$name/pid"
}
echo "== phase 1 ($(el) s)"
for f in A B; do
  run "${f}_strong" --fold $f --recipe strong --arch deeplab --max-seconds $S1S
  run "${f}_classic" --fold $f --recipe classic --arch deeplab --max-seconds $S1
  run "${f}_unet" --fold $f --recipe strong --arch unet --max-seconds $S1
  run "${f}_pce" --fold $f --recipe strong --sparse scribbles --max-seconds $S1 --workers 3
  run "${f}_pce_crfloss" --fold $f --recipe strong --sparse scribbles --crf-loss 2e-9 --max-seconds $S1 --workers 3
done
alive() { kill -0 "$(cat "$RUNS/$1/pid")" 2>/dev/null; }
for f in A B; do  # phase 2 starts per fold as soon as that fold's strong network is there
  while alive "${f}_strong" && [ $(el) -lt $(( HARD - S2 - 40 )) ]; do sleep 2; done
  if [ -f "$RUNS/${f}_strong/final.pt" ]; then
    echo "== phase 2, fold $f ($(el) s)"
    run "${f}_crfrnn" --fold $f --init "$RUNS/${f}_strong/final.pt" --head crf --max-seconds $S2
    run "${f}_control" --fold $f --init "$RUNS/${f}_strong/final.pt" --head none --max-seconds $S2
  else
    echo "fold $f: no strong network by $(el) s; no phase 2"
  fi
done
while [ $(el) -lt $(( HARD - 90 )) ] && pgrep -f densecrf.models.folds > /dev/null; do sleep 2; done
pkill -f densecrf.models.folds && echo "killed the runs still going at $(el) s"
sleep 1
for d in "$RUNS"/*/; do echo "-- $d"; tail -3 "$d/stdout.txt"; done

if [ "$DEVICE" = cuda ] && [ -n "${PNG:-}" ] && [ -d "$PNG/val" ]; then
  echo "== dataset pipeline on the GPU ($(el) s)"
  DENSECRF_CAMVID=$PNG timeout $(( HARD - 30 - $(el) )) $PY benchmarks/dataset_throughput.py --cuda \
      --skip pydensecrf dask ray --layouts f16 --repeats 2 --limit ${DATASET_FRAMES:-24} --workers $(nproc) \
      --data /tmp/densecrf_ds --json "$OUT/dataset_cuda.json" > "$OUT/dataset_cuda.txt" 2>&1
  echo "exit $?"; tail -12 "$OUT/dataset_cuda.txt"
fi
echo "== pack ($(el) s)"
$PY tools/pack_runs.py pack "$RUNS" "$OUT"
# the device returns at most 8 files: the small ones go back in one tar
(cd "$OUT" && ls *.txt *.json 2>/dev/null | grep -v '^runs.json$' | xargs -r tar cf misc.tar --remove-files)
echo "== done ($(el) s)"
