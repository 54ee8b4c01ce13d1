#!/usr/bin/env bash
# MLAE for understanding tasks (§3.2): the pretrained encoder's [EOS] state and one linear layer (mlae_classifier)
# fine-tuned with fairseq's own sentence_prediction task and criterion (a GLUE-style recipe), on the pair-matching
# set of scripts/prepare_pair_matching.py (does this question ask about this sentence? balanced labels, sentences
# disjoint between splits). Prints the test accuracy beside the majority-class baseline.
#
# Usage: examples/mlae/glue_style.sh [PRETRAIN] [DATA] [WORK_DIR] [MINUTES]   ('' or '-' takes the default)
#   PRETRAIN  the WORK_DIR of examples/mlae/pretrain.sh (default work/mlae-pretrain): its sentencepiece model and
#             dict.txt encode the data, its ckpt/checkpoint_last.pt initialises the encoder (--init-from-mlae;
#             INIT=random for the same classifier from random weights)
#   DATA      the shared data folder holding squad-qg-du2017/{dev,test}.{src,tgt} (default <repo>/../shared/data)
#   WORK_DIR  default work/mlae-glue-style (steps are reused; delete WORK_DIR/ckpt-* for a fresh run)
#   MINUTES   fine-tuning budget (default 5); the checkpoint with the best valid accuracy is scored on test
# Settings: ARCH (mlae_classifier_small; the checkpoint's sizes win), SEED (1), TRAIN_SIZE (4000), VALID_SIZE (500),
#   TEST_SIZE (1000), BATCH_SIZE (32: Table 9), LR (2e-5..4e-5 in the paper for BERT-base sizes; default 1e-4 for
#   the CPU sizes), WARMUP (20 updates), MAX_EPOCH (10), VALIDATE_EVERY (100), PYTHON.
# Input rows: <s> sentence </s> question </s> (--init-token = the dictionary's <s>; the head reads the last </s>).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
PYTHON=${PYTHON:-python}
arg() { if [ -z "${1:-}" ] || [ "${1:-}" = "-" ]; then echo "$2"; else echo "$1"; fi; }
PRETRAIN=$(arg "${1:-}" "$ROOT/work/mlae-pretrain")
DATA=$(arg "${2:-}" "$ROOT/../shared/data")
WORK=$(arg "${3:-}" "$ROOT/work/mlae-glue-style")
MINUTES=$(arg "${4:-}" 5)
INIT=${INIT:-mlae}
ARCH=${ARCH:-mlae_classifier_small}
SEED=${SEED:-1}
TRAIN_SIZE=${TRAIN_SIZE:-4000}; VALID_SIZE=${VALID_SIZE:-500}; TEST_SIZE=${TEST_SIZE:-1000}
BATCH_SIZE=${BATCH_SIZE:-32}; LR=${LR:-1e-4}; WARMUP=${WARMUP:-20}; MAX_EPOCH=${MAX_EPOCH:-10}
VALIDATE_EVERY=${VALIDATE_EVERY:-100}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}

SPM=$PRETRAIN/text/spm.model; DICT=$PRETRAIN/bin/dict.txt; CKPT=$PRETRAIN/ckpt/checkpoint_last.pt
for f in "$SPM" "$DICT"; do
  [ -s "$f" ] || { echo "ERROR: $f not found: run examples/mlae/pretrain.sh first (PRETRAIN)" >&2; exit 1; }
done
case "$INIT" in
  mlae) [ -s "$CKPT" ] || { echo "ERROR: $CKPT not found (PRETRAIN; or INIT=random)" >&2; exit 1; }
        INIT_FLAGS=(--init-from-mlae "$CKPT") ;;
  random) INIT_FLAGS=() ;;
  *) echo "ERROR: INIT must be mlae or random, got '$INIT'" >&2; exit 1 ;;
esac
[ -d "$DATA/squad-qg-du2017" ] || { echo "ERROR: '$DATA/squad-qg-du2017' not found (DATA)" >&2; exit 1; }
mkdir -p "$WORK/logs"
RAW=$WORK/raw; TOK=$WORK/tok; BIN=$WORK/bin; CKPTS=$WORK/ckpt-$INIT

echo "== 1/5 labelled pairs ($RAW)"
if [ ! -f "$RAW/.done" ]; then
  "$PYTHON" "$ROOT/scripts/prepare_pair_matching.py" --data "$DATA" --out "$RAW" --seed "$SEED" \
    --train-size "$TRAIN_SIZE" --valid-size "$VALID_SIZE" --test-size "$TEST_SIZE"
  touch "$RAW/.done"
else echo "reusing $RAW"; fi

echo "== 2/5 sentencepiece of the pretraining ($TOK)"
if [ ! -f "$TOK/.done" ]; then
  mkdir -p "$TOK"
  "$PYTHON" - "$SPM" "$RAW" "$TOK" <<'EOF'
import os, sys
import sentencepiece as spm
model, raw, tok = sys.argv[1:]
sp = spm.SentencePieceProcessor(model_file=model)
for split in ("train", "valid", "test"):
    for col in ("input0", "input1"):
        with open(os.path.join(raw, f"{split}.{col}"), encoding="utf-8") as f, \
             open(os.path.join(tok, f"{split}.{col}"), "w", encoding="utf-8") as g:
            for line in f:
                g.write(" ".join(sp.encode(line.strip(), out_type=str)[:254]) + "\n")
EOF
  touch "$TOK/.done"
else echo "reusing $TOK"; fi

echo "== 3/5 binarize input0/ input1/ label/ ($BIN)"
if [ ! -f "$BIN/.done" ]; then
  for INPUT in input0 input1; do
    fairseq-preprocess --only-source --srcdict "$DICT" --trainpref "$TOK/train.$INPUT" --validpref "$TOK/valid.$INPUT" \
      --testpref "$TOK/test.$INPUT" --destdir "$BIN/$INPUT" --workers 1 > "$WORK/logs/preprocess_$INPUT.log" 2>&1
  done
  fairseq-preprocess --only-source --trainpref "$RAW/train.label" --validpref "$RAW/valid.label" \
    --testpref "$RAW/test.label" --destdir "$BIN/label" --workers 1 > "$WORK/logs/preprocess_label.log" 2>&1
  touch "$BIN/.done"
else echo "reusing $BIN"; fi

# <s> of a fairseq dictionary is index 0: rows <s> input0 </s> input1 </s>
TASK=(--task sentence_prediction --num-classes 2 --init-token 0 --max-positions 512 --shorten-method truncate)
echo "== 4/5 fairseq-train --arch $ARCH ${INIT_FLAGS[*]}, at most $MINUTES minutes ($CKPTS)"
fairseq-train "$BIN" --user-dir "$USER_DIR" "${TASK[@]}" --criterion sentence_prediction --arch "$ARCH" \
  "${INIT_FLAGS[@]}" --optimizer adam --adam-betas '(0.9, 0.98)' --adam-eps 1e-6 --weight-decay 0.01 \
  --lr "$LR" --lr-scheduler fixed --warmup-updates "$WARMUP" --batch-size "$BATCH_SIZE" \
  --required-batch-size-multiple 1 --max-epoch "$MAX_EPOCH" --stop-time-hours "$("$PYTHON" -c "print($MINUTES / 60)")" \
  --validate-interval-updates "$VALIDATE_EVERY" --save-interval-updates "$VALIDATE_EVERY" --keep-interval-updates 1 \
  --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric --no-epoch-checkpoints --save-dir "$CKPTS" \
  --cpu --num-workers 0 --seed "$SEED" --log-format simple --log-interval 20 > "$WORK/logs/train-$INIT.log" 2>&1 || {
    echo "ERROR: fairseq-train failed:" >&2; tail -n 30 "$WORK/logs/train-$INIT.log" >&2; exit 1; }
grep -E '\| valid \||initialised from' "$WORK/logs/train-$INIT.log" | tail -n 3 || true

echo "== 5/5 test accuracy of checkpoint_best.pt"
fairseq-validate "$BIN" --user-dir "$USER_DIR" --path "$CKPTS/checkpoint_best.pt" "${TASK[@]}" \
  --criterion sentence_prediction --valid-subset test --batch-size 64 --required-batch-size-multiple 1 --cpu \
  --num-workers 0 --log-format simple > "$WORK/logs/test-$INIT.log" 2>&1 || {
    tail -n 30 "$WORK/logs/test-$INIT.log" >&2; exit 1; }
TEST_ACC=$(grep "valid on 'test' subset" "$WORK/logs/test-$INIT.log" | tail -n 1 | grep -o '| accuracy [0-9.]*' \
           | awk '{print $3}' || true)
MAJORITY=$(sort "$RAW/train.label" | uniq -c | sort -k1,1nr -k2 | head -n 1 | awk '{print $2}')
BASELINE=$(awk -v m="$MAJORITY" '{n++; if ($1 == m) k++} END {printf "%.1f", 100 * k / n}' "$RAW/test.label")
echo "  test accuracy (checkpoint_best, init $INIT): ${TEST_ACC:-?} %   ($(wc -l < "$RAW/test.label") pairs)"
echo "  majority-class baseline (test):             $BASELINE %   (always '$MAJORITY')"
