#!/usr/bin/env bash
# DEER's trade-off table on Multi30k en->de test_2016_flickr: one model trained with dynamic block pruning, exported
# at 75 / 50 / 25 % with physically smaller weights (scripts/export_pruned.py), each size decoded at 0 / 1 / 2 / 4
# editor steps, beside the AR baseline: one scripts/benchmark.py run (sacreBLEU, batch-1 latency, batch-64 and
# 4096-token throughput, parameters, FLOPs) on one machine.
# Usage: examples/deer/multi30k_sizes.sh BENCH_WORK_DIR [OUT_DIR]
#   BENCH_WORK_DIR  the work directory of `make bench` (examples/multi30k/bench.sh): its bin/ and spm/ data, its
#                   AR transformer (ckpt/transformer) and its DEER model trained with --prune (ckpt/deer)
#   OUT_DIR         default BENCH_WORK_DIR/deer-sizes (exports in OUT_DIR/export, report in OUT_DIR/report)
# Settings: SIZES (default '0.75 0.5 0.25'), BENCH_REPEATS (2), LATENCY_SENTENCES (32), THROUGHPUT_BATCHES (4
# batches of each throughput setting are timed; empty: all), DATA (raw Multi30k folder for the reference, default
# ../shared/data/multi30k-en-de), README (a README.md whose <!-- deer-table:begin/end --> section receives the table),
# DEER_CKPT (default BENCH_WORK_DIR/ckpt/deer/checkpoint_last.pt), MASKED (1, the default: also decode each size by
# masking the full checkpoint, --model-overrides "{'prune_size': S}", beside its export; 0: exports only).
set -euo pipefail
WORK=${1:?usage: multi30k_sizes.sh BENCH_WORK_DIR [OUT_DIR]}
OUT=${2:-$WORK/deer-sizes}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python}
SIZES=${SIZES:-0.75 0.5 0.25}
THROUGHPUT_BATCHES=${THROUGHPUT_BATCHES-4}
DATA=${DATA:-$ROOT/../shared/data/multi30k-en-de}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
DEER=${DEER_CKPT:-$WORK/ckpt/deer/checkpoint_last.pt}; AR=$WORK/ckpt/transformer/checkpoint_last.pt
for f in "$DEER" "$AR" "$WORK/spm/spm.model" "$DATA/test_2016_flickr.de"; do
  [ -f "$f" ] || { echo "ERROR: $f not found: run make bench first (or pass its work directory)" >&2; exit 1; }
done
mkdir -p "$OUT/export"
CHECKPOINTS=(--checkpoint "transformer=$AR" --checkpoint "deer@100%=$DEER")
MODEL_ARGS=()
for size in $SIZES; do
  pct=$("$PYTHON" -c "print(round($size * 100))")
  out=$OUT/export/deer.$pct.pt
  if [ ! -f "$out" ]; then
    "$PYTHON" "$ROOT/scripts/export_pruned.py" --checkpoint "$DEER" --size "$size" --out "$out" --data "$WORK/bin"
  fi
  CHECKPOINTS+=(--checkpoint "deer@$pct%=$out")
  if [ "${MASKED:-1}" = 1 ]; then
    CHECKPOINTS+=(--checkpoint "deer@$pct%-masked=$DEER")
    MODEL_ARGS+=(--model-args "deer@$pct%-masked=--model-overrides {'prune_size':$size}")
  fi
done
"$PYTHON" "$ROOT/scripts/benchmark.py" --mode full --out-dir "$OUT/report" --data "$WORK/bin" \
  --reference "$DATA/test_2016_flickr.de" --threads "$OMP_NUM_THREADS" \
  --repeats "${BENCH_REPEATS:-2}" --latency-sentences "${LATENCY_SENTENCES:-32}" \
  ${THROUGHPUT_BATCHES:+--throughput-batches "$THROUGHPUT_BATCHES"} --no-profile \
  --fairseq-args "--bpe sentencepiece --sentencepiece-model $WORK/spm/spm.model" "${CHECKPOINTS[@]}" ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"}
if [ -n "${README:-}" ]; then
  "$PYTHON" "$ROOT/scripts/update_readme_results.py" --readme "$README" --report "$OUT/report/report.md" \
    --section deer-table --drop-sections "NAR / AR ratios" "Batch-1 profile" \
    --note "examples/deer/multi30k_sizes.sh $WORK (sizes $SIZES), $OMP_NUM_THREADS thread(s)"
fi
echo "== report: $OUT/report/report.md"
