#!/bin/bash
# Run 2026-12-06 with the package of commit b5af296 copied to /tmp/snap_fit (run.py there imports it
# instead of the editable checkout), so that edits to the checkout during the hour could not change the run.
# From a checkout of b5af296, "python tools/camvid_instances.py" in place of the two snap_fit paths does the same.
# issue 21: instance fits (joint, binary) with the stuff guard, then the six evaluations
source /work/venv/bin/activate
cd /work/main
export DENSECRF_INST_CACHE=/tmp/inst_cache
F=benchmarks/results/instances_stuffguard/fits
P=benchmarks/results/instances_2026-12-05/fits
E=benchmarks/results/instances_stuffguard/eval
for m in joint binary; do for k in detector network; do
  [ -f $F/fitA_${k}_$m.json ] || python /tmp/snap_fit/run.py /tmp/snap_fit/tools/camvid_instances.py fit ../shared/data/camvid 0006R0 $k $m $F/fitA_${k}_$m.json --step 2 --n-random 16 --n-local 8 > $F/fitA_${k}_$m.log 2>&1
  [ -f $F/fitB_${k}_$m.json ] || python /tmp/snap_fit/run.py /tmp/snap_fit/tools/camvid_instances.py fit ../shared/data/camvid 0001TP $k $m $F/fitB_${k}_$m.json --step 2 --n-random 16 --n-local 8 > $F/fitB_${k}_$m.log 2>&1
done; done
echo fits done $(date)
for k in detector network; do
  for sd in "val 3 A B" "0001TP 2 A" "0006R0 3 B"; do
    set -- $sd; split=$1; step=$2; shift 2
    rows="input=none textbook=textbook"
    pan=""
    for f in "$@"; do rows="$rows joint$f=$F/fit${f}_${k}_joint.json"; done
    for f in "$@"; do rows="$rows cal$f=$F/fit${f}_${k}_joint.json:n_iter=0"; done
    for f in "$@"; do rows="$rows binary$f=$F/fit${f}_${k}_binary.json"; done
    for f in "$@"; do rows="$rows panoptic$f=$P/fit${f}_${k}_panoptic.json"; pan="$pan panoptic$f"; done
    [ -f $E/eval_${k}_$split.json ] || python /tmp/snap_fit/run.py /tmp/snap_fit/tools/camvid_instances.py eval ../shared/data/camvid $split $k $rows inputP=none:merge=ids --panoptic input --panoptic-only $pan --step $step --json $E/eval_${k}_$split.json > $E/eval_${k}_$split.log 2>&1
  done
done
echo evals done $(date)
