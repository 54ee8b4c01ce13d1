#!/usr/bin/env bash
# The editor roll-in A/B of the review (D5) on Multi30k: which editor training gives the higher BLEU after 2 editor
# steps, the paper's (randomly deleted references only, --no-editor-ctc-roll-in) or ours (also the model's own CTC
# output, the default)?
#   1. phase 1 (shared by both arms): make bench's DEER (one 6-layer stack x 256, warm-started from the AR teacher,
#      --init-from-checkpoint) trained on the teacher-distilled data with --editor-start-update START_UPDATE and
#      --max-update START_UPDATE: the one-step CTC generator alone, until it translates (validation sacreBLEU of
#      greedy CTC every EVAL_EVERY updates), THREADS threads
#   2. phase 2: the same run continued for ARM_UPDATES more updates in two arms from phase 1's last checkpoint, the
#      editor trained from START_UPDATE on: `rollin` (default flags) and `paper` (--no-editor-ctc-roll-in); same
#      batches, seed and updates; one thread each, both at once
#   3. test_2016_flickr decoded by each arm at 0, 1 and 2 editor steps (fairseq-generate, IterativeRefinementGenerator)
#      and by phase 1 at step 0; sacreBLEU with its signature -> OUT/scores.txt
# Usage: examples/deer/roll_in_ab.sh BENCH_WORK_DIR OUT_DIR [START_UPDATE] [ARM_UPDATES]
#   BENCH_WORK_DIR  make bench's work directory (examples/multi30k/teacher.sh builds what is needed: bin/,
#                   bin-distill/, spm/, ckpt/transformer/checkpoint_best.pt)
#   START_UPDATE    updates of phase 1 (default 800); ARM_UPDATES: updates of each arm (default 300)
# Settings: THREADS (phase 1, default: cores), EVAL_EVERY (200), PRUNE=1 adds make bench's --prune (both phases).
# Resumable: each finished step leaves a .done marker; an interrupted training resumes from its checkpoint_last.pt.
set -euo pipefail
BENCH=${1:?usage: roll_in_ab.sh BENCH_WORK_DIR OUT_DIR [START_UPDATE] [ARM_UPDATES]}
OUT=${2:?usage: roll_in_ab.sh BENCH_WORK_DIR OUT_DIR [START_UPDATE] [ARM_UPDATES]}
START=${3:-800}
ARM=${4:-300}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
THREADS=${THREADS:-$(nproc)}
EVAL_EVERY=${EVAL_EVERY:-200}
DEVICE_FLAGS=${DEVICE_FLAGS:-$(python -c "import torch; print('' if torch.cuda.is_available() else '--cpu')")}
for v in START ARM EVAL_EVERY; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "ERROR: $v='${!v}' must be a positive number of updates" >&2; exit 1; }
done
for d in bin bin-distill spm/spm.model spm/raw/test_2016_flickr.de ckpt/transformer/checkpoint_best.pt; do
  [ -e "$BENCH/$d" ] || { echo "ERROR: $BENCH/$d not found: build the teacher and its distilled data first" \
    "(examples/multi30k/teacher.sh DATA $BENCH)" >&2; exit 1; }
done
mkdir -p "$OUT"
PRUNE_FLAGS=""
[ "${PRUNE:-0}" = 1 ] && PRUNE_FLAGS="--prune --prune-sizes 1.0,0.75,0.5,0.25"

train() {  # DIR MAX_UPDATE EVAL_ITERS THREADS FLAGS...: make bench's DEER flags, warm-started from the teacher
  local dir=$1 max=$2 iters=$3 threads=$4; shift 4
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=$threads fairseq-train "$BENCH/bin-distill" --user-dir "$USER_DIR" --task translation_lev_ctc \
    --noise random_delete --arch deer_tiny --encoder-layers 6 --encoder-embed-dim 256 --encoder-ffn-embed-dim 1024 \
    --encoder-attention-heads 4 --share-all-embeddings $PRUNE_FLAGS --criterion ctc --label-smoothing 0.1 \
    --init-from-checkpoint "$BENCH/ckpt/transformer/checkpoint_best.pt" \
    --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 --lr 0.0007 --lr-scheduler inverse_sqrt \
    --warmup-updates 100 --warmup-init-lr 1e-07 --max-tokens 2048 --max-update "$max" \
    --editor-start-update "$START" \
    --eval-bleu --eval-bleu-args "{\"iter_decode_max_iter\": $iters}" --eval-bleu-remove-bpe sentencepiece \
    --eval-bleu-detok space --validate-interval-updates "$EVAL_EVERY" --save-interval-updates "$EVAL_EVERY" \
    --keep-interval-updates 1 --best-checkpoint-metric bleu --maximize-best-checkpoint-metric \
    --no-epoch-checkpoints --save-dir "$dir" $DEVICE_FLAGS --num-workers 0 --data-buffer-size 0 --seed 1 \
    --log-format simple --log-interval 50 "$@" >> "$dir/train.log" 2>&1 \
    || { echo "ERROR: training in $dir failed; the end of $dir/train.log:" >&2; tail -n 20 "$dir/train.log" >&2; return 1; }
  [ -f "$dir/checkpoint_last.pt" ] || { echo "ERROR: $dir has no checkpoint_last.pt" >&2; return 1; }
  grep "valid on" "$dir/train.log" | tail -n 1
  touch "$dir/.done"
}

P1=$OUT/phase1
echo "== 1/3 phase 1: the CTC generator alone, $START updates ($THREADS threads; log $P1/train.log)"
[ -f "$P1/.done" ] && echo "reusing $P1" || train "$P1" "$START" 0 "$THREADS"

arm() {  # NAME FLAGS...: phase 1 continued with the editor for ARM updates, one thread
  local name=$1 dir=$OUT/$1; shift
  if [ -f "$dir/.done" ]; then echo "reusing $dir"; return 0; fi
  mkdir -p "$dir"
  # the arm starts from phase 1's last checkpoint (fairseq resumes from checkpoint_last.pt in its save dir)
  [ -f "$dir/checkpoint_last.pt" ] || cp "$P1/checkpoint_last.pt" "$dir/checkpoint_last.pt"
  train "$dir" "$((START + ARM))" 2 1 "$@"
}
echo "== 2/3 phase 2: the editor trained for $ARM more updates, with (rollin) and without (paper) the CTC roll-in"
arm rollin & a=$!
arm paper --no-editor-ctc-roll-in & b=$!
fail=0; wait $a || fail=1; wait $b || fail=1
[ $fail = 0 ] || { echo "ERROR: an arm failed (see above)" >&2; exit 1; }

echo "== 3/3 test_2016_flickr at 0/1/2 editor steps -> $OUT/scores.txt"
: > "$OUT/scores.txt"
decode() {  # LABEL CHECKPOINT STEPS
  local out=$OUT/gen.$1.$3
  OMP_NUM_THREADS=$THREADS fairseq-generate "$BENCH/bin" --user-dir "$USER_DIR" --task translation_lev_ctc \
    --gen-subset test --path "$2" --iter-decode-max-iter "$3" --batch-size 64 --bpe sentencepiece \
    --sentencepiece-model "$BENCH/spm/spm.model" $DEVICE_FLAGS > "$out" 2> "$out.log" \
    || { tail -n 20 "$out.log" >&2; return 1; }
  echo "-- $1, $3 editor step(s): $(python "$ROOT/scripts/score_generate.py" --generate-output "$out" \
    --reference "$BENCH/spm/raw/test_2016_flickr.de" | tr '\n' ' ')" | tee -a "$OUT/scores.txt"
}
decode phase1 "$P1/checkpoint_last.pt" 0
for name in rollin paper; do for it in 0 1 2; do decode "$name" "$OUT/$name/checkpoint_last.pt" "$it"; done; done
echo "== done: $OUT/scores.txt"
