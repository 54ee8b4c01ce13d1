#!/usr/bin/env bash
# BERT-NAR-BERT on Multi30k en->de (raw or distilled data), on the CPU by default: one system per call.
#   1 prepare: the data in the checkpoint's vocabulary (examples/bnb/prepare_multi30k.sh)
#   2 distilled data only: scripts/distill.py trains an AR fairseq transformer teacher of the student's depth and
#     width for TEACHER_MINUTES on the same data (once per WORK_DIR), decodes the training set with beam
#     DISTILL_BEAM (default 1, greedy: minutes on a CPU, as in make bench; fairseq's documented procedure uses 4-5;
#     outputs capped at 2.5 x source + 10 tokens: German takes ~1.75x the WordPieces of English; the cap stops a
#     budget-trained teacher's repetitions) and re-binarizes it
#   3 fairseq-train bnb for MINUTES (resumes from WORK_DIR/ckpt/NAME/checkpoint_last.pt)
#   4 fairseq-generate test_2016_flickr in one pass (CTC: greedy collapse; LC: length beam LENGTH_BEAM), detokenized
#     with the checkpoint's tokenizer (--bpe pretrained_tokenizer) -> sacreBLEU with its signature
# Usage: examples/bnb/multi30k.sh DATA_DIR WORK_DIR MINUTES
# Settings (environment variables):
#   LENGTH_MODE  ctc (default: translation_lev_ctc + criterion ctc, upsample ratio UPSAMPLE) or lc (length
#                classification from the latent z: translation_lev --noise full_mask + criterion nat_loss)
#   INIT         pretrained (default: encoder and decoder from CHECKPOINT, --pretrained-encoder) or random (the same
#                architecture and vocabulary, random weights)
#   VARIANT      raw (default) or distilled
#   CHECKPOINT   BERT-family checkpoint (default: the offline MiniLM; see prepare_multi30k.sh)
#   ARCH (bnb_small: MiniLM sizes; bnb_base for BERT-base), LR (5e-4), WARMUP (100), MAX_TOKENS (2048), UPSAMPLE (3: a WordPiece vocabulary for English
#   splits German into ~1.75x as many tokens as the English source),
#   LENGTH_BEAM (3), TEACHER_MINUTES (= MINUTES), DISTILL_BEAM (1), NAME (bnb-LENGTH_MODE-INIT-VARIANT), SEED (1)
# Paper-scale training (GPU): raise MINUTES, MAX_TOKENS (e.g. 8192 x --update-freq) and use bert-base-cased / mBERT.
set -euo pipefail
DATA=${1:?usage: multi30k.sh DATA_DIR WORK_DIR MINUTES}
WORK=${2:?usage: multi30k.sh DATA_DIR WORK_DIR MINUTES}
MINUTES=${3:?usage: multi30k.sh DATA_DIR WORK_DIR MINUTES}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
PYTHON=${PYTHON:-python}
LENGTH_MODE=${LENGTH_MODE:-ctc}; INIT=${INIT:-pretrained}; VARIANT=${VARIANT:-raw}
ARCH=${ARCH:-bnb_small}; LR=${LR:-5e-4}; WARMUP=${WARMUP:-100}; MAX_TOKENS=${MAX_TOKENS:-2048}
UPSAMPLE=${UPSAMPLE:-3}; LENGTH_BEAM=${LENGTH_BEAM:-3}; SEED=${SEED:-1}
TEACHER_MINUTES=${TEACHER_MINUTES:-$MINUTES}; DISTILL_BEAM=${DISTILL_BEAM:-1}
NAME=${NAME:-bnb-$LENGTH_MODE-$INIT-$VARIANT}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
# passive waiting: with busy-waiting OpenMP threads a shared CPU slows training about tenfold
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
case "$LENGTH_MODE" in ctc|lc) ;; *) echo "ERROR: LENGTH_MODE must be ctc or lc, got '$LENGTH_MODE'" >&2; exit 1;; esac
case "$INIT" in pretrained|random) ;; *) echo "ERROR: INIT must be pretrained or random, got '$INIT'" >&2; exit 1;; esac
case "$VARIANT" in raw|distilled) ;; *) echo "ERROR: VARIANT must be raw or distilled, got '$VARIANT'" >&2; exit 1;; esac
hours() { "$PYTHON" -c "print($1 / 60)"; }
T0=$(date +%s)

echo "== 1/4 data in the checkpoint's vocabulary ($WORK)"
bash "$HERE/prepare_multi30k.sh" "$DATA" "$WORK" "${CHECKPOINT:-}"
PT="$WORK/pretrained"
# the student's depth and width (ARCH's sizes; with a pretrained checkpoint pick the ARCH of its size) for the teacher
read -r LAYERS DIM HEADS FFN < <("$PYTHON" -c "
import argparse, sys
sys.path.insert(0, '$ROOT')
import fairseq_nar_plugins
from fairseq.models import ARCH_CONFIG_REGISTRY
a = argparse.Namespace(); ARCH_CONFIG_REGISTRY['$ARCH'](a)
print(a.encoder_layers, a.encoder_embed_dim, a.encoder_attention_heads, a.encoder_ffn_embed_dim)" 2>/dev/null) || {
  echo "ERROR: ARCH '$ARCH' is not a registered bnb architecture" >&2; exit 1; }

BIN="$WORK/bin"
if [ "$VARIANT" = distilled ]; then
  echo "== 2/4 distilled data (teacher: transformer $LAYERS+$LAYERS layers, $DIM dims, $TEACHER_MINUTES min)"
  if [ ! -f "$WORK/bin-distill/.done" ]; then
    "$PYTHON" "$ROOT/scripts/distill.py" --data-bin "$BIN" --out-bin "$WORK/bin-distill" --cpu --workers 2 \
      --train-teacher --teacher-save-dir "$WORK/ckpt/teacher" --teacher-stop-time-hours "$(hours "$TEACHER_MINUTES")" \
      --teacher-max-update 1000000 --beam "$DISTILL_BEAM" --max-tokens 8000 \
      --generate-args "--max-len-a 2.5 --max-len-b 10" --teacher-args "--share-all-embeddings \
      --encoder-layers $LAYERS --decoder-layers $LAYERS --encoder-embed-dim $DIM --decoder-embed-dim $DIM \
      --encoder-ffn-embed-dim $FFN --decoder-ffn-embed-dim $FFN --encoder-attention-heads $HEADS \
      --decoder-attention-heads $HEADS --max-source-positions 512 --max-target-positions 512 --dropout 0.1 \
      --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --optimizer adam --adam-betas (0.9,0.98) \
      --clip-norm 1.0 --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 300 --warmup-init-lr 1e-07 \
      --max-tokens $MAX_TOKENS --num-workers 0 --data-buffer-size 0 --seed $SEED --log-format simple"
    touch "$WORK/bin-distill/.done"
  else echo "reusing $WORK/bin-distill"; fi
  BIN="$WORK/bin-distill"
else
  echo "== 2/4 raw data: no distillation"
fi

echo "== 3/4 fairseq-train $NAME ($ARCH, $LENGTH_MODE, $INIT init, $VARIANT data) for $MINUTES minutes"
if [ "$LENGTH_MODE" = ctc ]; then
  MODE=(--task translation_lev_ctc --upsample-ratio "$UPSAMPLE" --ctc-blank-symbol '[PAD]' --noise full_mask
        --length-mode ctc --criterion ctc)
  DECODE=(--iter-decode-max-iter 0)
else
  MODE=(--task translation_lev --noise full_mask --length-mode lc --criterion nat_loss --length-loss-factor 0.1)
  DECODE=(--iter-decode-max-iter 0 --iter-decode-with-beam "$LENGTH_BEAM")
fi
[ "$INIT" = pretrained ] && MODE+=(--pretrained-encoder "$PT")
SAVE="$WORK/ckpt/$NAME"
if [ ! -f "$SAVE/.done" ]; then
  fairseq-train "$BIN" --user-dir "$USER_DIR" "${MODE[@]}" --arch "$ARCH" --share-all-embeddings \
    --label-smoothing 0.1 --dropout 0.1 --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 \
    --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP" --warmup-init-lr 1e-07 \
    --max-tokens "$MAX_TOKENS" --stop-time-hours "$(hours "$MINUTES")" --max-update 1000000 \
    --save-dir "$SAVE" --no-epoch-checkpoints --save-interval-updates 200 --keep-interval-updates 1 \
    --cpu --num-workers 0 --data-buffer-size 0 --seed "$SEED" --log-format simple --log-interval 50 2>&1 \
    | grep --line-buffered -E "train_inner|valid on|done training|Loaded checkpoint|initialised|Error|error" || true
  [ -f "$SAVE/checkpoint_last.pt" ] || { echo "ERROR: training wrote no $SAVE/checkpoint_last.pt" >&2; exit 1; }
  touch "$SAVE/.done"
else echo "reusing $SAVE (delete $SAVE/.done to train further)"; fi

echo "== 4/4 fairseq-generate test_2016_flickr and sacreBLEU"
if [ -s "$SAVE/bleu.txt" ] && [ "$SAVE/bleu.txt" -nt "$SAVE/checkpoint_last.pt" ]; then
  cat "$SAVE/bleu.txt"; echo "reusing $SAVE/bleu.txt (newer than the checkpoint)"; exit 0
fi
# task flags are read from the command line at generation too (fairseq's convention): repeat the training ones
GEN_TASK=(--task translation_lev)
[ "$LENGTH_MODE" = ctc ] && GEN_TASK=(--task translation_lev_ctc --upsample-ratio "$UPSAMPLE" --ctc-blank-symbol '[PAD]')
fairseq-generate "$WORK/bin" --user-dir "$USER_DIR" "${GEN_TASK[@]}" --gen-subset test --path "$SAVE/checkpoint_last.pt" \
  "${DECODE[@]}" --batch-size 64 --required-batch-size-multiple 1 --cpu \
  --bpe pretrained_tokenizer --pretrained-tokenizer "$PT" > "$SAVE/generate-test.out" 2> "$SAVE/generate-test.log" || {
    tail -n 20 "$SAVE/generate-test.log" >&2; exit 1; }
"$PYTHON" "$ROOT/scripts/score_generate.py" --generate-output "$SAVE/generate-test.out" \
  --reference "$DATA/test_2016_flickr.de" --hyp-out "$SAVE/hyp.test_2016_flickr.de" | tee "$SAVE/bleu.txt"
echo "== done in $(( $(date +%s) - T0 )) s: $SAVE"
