#!/usr/bin/env bash
# The BERT-NAR-BERT comparison on Multi30k en->de test_2016_flickr: BnB-LC and BnB-CTC x random / pretrained
# (MiniLM by default) initialisation x raw / distilled data, beside the AR teacher of the same depth and width, every
# model trained for the same wall-clock budget; then one scripts/benchmark.py run (full mode) gives sacreBLEU and
# decoding time at batch 1 and at batch 64 for all of them, on one machine, in one run (benchmark models: `bnb` for
# the CTC systems, `bnb_lc` for the length-classification ones, each decoded with length beam 1 and 3; the teacher
# greedy and with beam 4).
# Usage: examples/bnb/multi30k_table.sh DATA_DIR WORK_DIR MINUTES
#   Each system is one examples/bnb/multi30k.sh call (its settings apply: CHECKPOINT, ARCH, LR, ...); the teacher is
#   trained for MINUTES too (TEACHER_MINUTES). Resumable: finished systems are reused.
#   Output: WORK_DIR/report/{report.md,results.csv,plot.png}; BENCH_REPEATS (2), LATENCY_SENTENCES (32) and
#   THROUGHPUT_BATCHES (4 batches of each throughput setting are timed; empty: all) set the timing protocol; with
#   README=path/README.md its <!-- bnb-table:begin/end --> section receives the table.
set -euo pipefail
DATA=${1:?usage: multi30k_table.sh DATA_DIR WORK_DIR MINUTES}
WORK=${2:?usage: multi30k_table.sh DATA_DIR WORK_DIR MINUTES}
MINUTES=${3:?usage: multi30k_table.sh DATA_DIR WORK_DIR MINUTES}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export TEACHER_MINUTES=${TEACHER_MINUTES:-$MINUTES}
UPSAMPLE=${UPSAMPLE:-3}; LENGTH_BEAM=${LENGTH_BEAM:-3}; THROUGHPUT_BATCHES=${THROUGHPUT_BATCHES-4}
T0=$(date +%s)

CHECKPOINTS=()
for VARIANT in raw distilled; do
  for LENGTH_MODE in ctc lc; do
    for INIT in pretrained random; do
      name=bnb-$LENGTH_MODE-$INIT-$VARIANT
      echo "######## $name"
      VARIANT=$VARIANT LENGTH_MODE=$LENGTH_MODE INIT=$INIT UPSAMPLE=$UPSAMPLE LENGTH_BEAM=$LENGTH_BEAM NAME=$name \
        bash "$HERE/multi30k.sh" "$DATA" "$WORK" "$MINUTES"
      # benchmark models: bnb (CTC) and bnb_lc (length classification, decoded with length beam 1 and 3)
      spec=bnb; [ "$LENGTH_MODE" = lc ] && spec=bnb_lc
      CHECKPOINTS+=(--checkpoint "$spec@$INIT-$VARIANT=$WORK/ckpt/$name/checkpoint_last.pt")
    done
  done
done

echo "######## benchmark (full mode): quality and speed of every system, AR teacher as the baseline"
"$PYTHON" "$ROOT/scripts/benchmark.py" --mode full --out-dir "$WORK/report" --data "$WORK/bin" \
  --reference "$DATA/test_2016_flickr.de" --threads "$OMP_NUM_THREADS" \
  --repeats "${BENCH_REPEATS:-2}" --latency-sentences "${LATENCY_SENTENCES:-32}" \
  ${THROUGHPUT_BATCHES:+--throughput-batches "$THROUGHPUT_BATCHES"} \
  --fairseq-args "--bpe pretrained_tokenizer --pretrained-tokenizer $WORK/pretrained" \
  --checkpoint "transformer=$WORK/ckpt/teacher/checkpoint_last.pt" "${CHECKPOINTS[@]}" \
  --model-args "bnb=--upsample-ratio $UPSAMPLE --ctc-blank-symbol [PAD]"
if [ -n "${README:-}" ]; then
  "$PYTHON" "$ROOT/scripts/update_readme_results.py" --readme "$README" --report "$WORK/report/report.md" \
    --section bnb-table --drop-sections "NAR / AR ratios" "Batch-1 profile" \
    --note "examples/bnb/multi30k_table.sh $DATA $WORK $MINUTES: $MINUTES minutes of training per system, $OMP_NUM_THREADS thread(s)"
fi
echo "######## done in $(( $(date +%s) - T0 )) s; table in $WORK/report/report.md"
