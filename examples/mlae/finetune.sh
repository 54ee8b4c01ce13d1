#!/usr/bin/env bash
# Fine-tune an MLAE pretraining run (examples/mlae/pretrain.sh) for generation on one parallel dataset: the shared
# driver of examples/mlae/{xsum,squad_qg,multi30k}.sh.
#   sentencepiece of the pretraining -> fairseq-preprocess with its dict.txt -> fairseq-train (MODE) from its
#   checkpoint (--init-from-mlae) -> fairseq-generate the test split -> scripts/score.py
#
# Usage: examples/mlae/finetune.sh NAME SRC TGT TEXT_DIR WORK_DIR MINUTES
#   NAME      label for the logs;  SRC TGT  file suffixes (e.g. src tgt)
#   TEXT_DIR  raw text {train,valid,test}.{SRC,TGT}, one segment a line
#   WORK_DIR  everything is written there; re-running reuses finished steps (a finished training: ckpt-*/.done) and
#             resumes an interrupted training
#   MINUTES   training budget (fairseq --stop-time-hours); MAX_UPDATE bounds it too
# Settings (environment variables):
#   PRETRAIN    the WORK_DIR of examples/mlae/pretrain.sh (default work/mlae-pretrain): text/spm.model, bin/dict.txt,
#               ckpt/checkpoint_last.pt
#   INIT        mlae (default: --init-from-mlae PRETRAIN/ckpt/checkpoint_last.pt) or random (the same model and
#               vocabulary from random weights: the baseline at the same budget)
#   MODE        ar (default; Seq2seq style, mlae_seq2seq: cross-attention copied from self-attention, scheduled masking,
#               beam 6, length penalty 1.0 -- the paper's AR setting), unilm (UniLM style, mlae_unilm) or nar
#               (mlae_cmlm: translation_lev --noise random_mask, decoded by mask-predict with 1 and 10 iterations,
#               repeats merged; pretrain with CROSS=1 for it)
#   ARCH        default mlae_seq2seq_small / mlae_unilm_small / mlae_cmlm_small (the checkpoint's sizes win anyway)
#   MAX_UPDATE  number of updates (default 30000, the paper's XSum AR budget; the NAR one is 300000): the scheduled
#               masking decays from MASK_SCHEDULE's first ratio to 0 at this update, so set it to what MINUTES allows
#   MASK_SCHEDULE (default 0.6:0, the paper's; 0 switches it off), MASK_SCHEDULE_KIND (linear; constant)
#   LR (1e-4), WARMUP (500 for ar/unilm, 10000 for nar: Table 11), MAX_TOKENS (4096), LABEL_SMOOTHING (0.1),
#   ADAM_BETAS ('(0.9, 0.999)', BERT's), WEIGHT_DECAY (0.01, BERT's), DROPOUT (0.1),
#   BEAM (6), LENPEN (1.0), ITERS (nar: '0 9', i.e. 1 and 10 mask-predict passes), LENGTH_BEAM (nar, 1),
#   MAX_SOURCE (source tokens kept at generation, default 510: the paper truncates inputs to 512 with <s>, </s>),
#   METRICS (scripts/score.py metrics, default sacrebleu), DEVICE_FLAGS (default --cpu; '' on a GPU), PYTHON
# Run inside the project's environment (source .venv/bin/activate).
set -euo pipefail
if [ $# -ne 6 ]; then sed -n '2,31p' "$0"; exit 2; fi
NAME=$1; SRC=$2; TGT=$3; TEXT=$4; WORK=$5; MINUTES=$6
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
PYTHON=${PYTHON:-python}
PRETRAIN=${PRETRAIN:-$ROOT/work/mlae-pretrain}
INIT=${INIT:-mlae}
MODE=${MODE:-ar}
case "$MODE" in
  ar) ARCH=${ARCH:-mlae_seq2seq_small}; WARMUP=${WARMUP:-500} ;;
  unilm) ARCH=${ARCH:-mlae_unilm_small}; WARMUP=${WARMUP:-500} ;;
  nar) ARCH=${ARCH:-mlae_cmlm_small}; WARMUP=${WARMUP:-10000} ;;
  *) echo "ERROR: MODE must be ar, unilm or nar, got '$MODE'" >&2; exit 1 ;;
esac
case "$INIT" in mlae|random) ;; *) echo "ERROR: INIT must be mlae or random, got '$INIT'" >&2; exit 1 ;; esac
MAX_UPDATE=${MAX_UPDATE:-30000}
MASK_SCHEDULE=${MASK_SCHEDULE:-0.6:0}
MASK_SCHEDULE_KIND=${MASK_SCHEDULE_KIND:-linear}
LR=${LR:-1e-4}
MAX_TOKENS=${MAX_TOKENS:-4096}
LABEL_SMOOTHING=${LABEL_SMOOTHING:-0.1}
ADAM_BETAS=${ADAM_BETAS:-(0.9, 0.999)}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.01}
DROPOUT=${DROPOUT:-0.1}
BEAM=${BEAM:-6}
LENPEN=${LENPEN:-1.0}
ITERS=${ITERS:-0 9}
LENGTH_BEAM=${LENGTH_BEAM:-1}
MAX_SOURCE=${MAX_SOURCE:-510}
METRICS=${METRICS:-sacrebleu}
DEVICE_FLAGS=${DEVICE_FLAGS---cpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # busy-waiting OpenMP threads slow a shared CPU ~10x
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}

SPM=$PRETRAIN/text/spm.model; DICT=$PRETRAIN/bin/dict.txt; CKPT=$PRETRAIN/ckpt/checkpoint_last.pt
for f in "$SPM" "$DICT"; do
  [ -s "$f" ] || { echo "ERROR: $f not found: run examples/mlae/pretrain.sh first (PRETRAIN=$PRETRAIN)" >&2; exit 1; }
done
if [ "$INIT" = mlae ] && [ ! -s "$CKPT" ]; then echo "ERROR: $CKPT not found (PRETRAIN; or INIT=random)" >&2; exit 1; fi
for split in train valid test; do
  for l in "$SRC" "$TGT"; do
    [ -s "$TEXT/$split.$l" ] || { echo "ERROR: $TEXT/$split.$l is missing or empty (TEXT_DIR)" >&2; exit 1; }
  done
done
mkdir -p "$WORK/logs"
TOK=$WORK/tok; BIN=$WORK/bin; CKPTS=$WORK/ckpt-$MODE-$INIT
echo "== MLAE $MODE on $NAME ($SRC -> $TGT), init $INIT, arch $ARCH, work dir $WORK"

echo "== 1/4 sentencepiece of the pretraining ($TOK)"
if [ ! -f "$TOK/.done" ]; then
  mkdir -p "$TOK"
  "$PYTHON" - "$SPM" "$TEXT" "$TOK" "$SRC" "$TGT" <<'EOF'
import os, sys
import sentencepiece as spm
model, text, tok, src, tgt = sys.argv[1:]
sp = spm.SentencePieceProcessor(model_file=model)
for split in ("train", "valid", "test"):
    for lang in (src, tgt):
        with open(os.path.join(text, f"{split}.{lang}"), encoding="utf-8") as f, \
             open(os.path.join(tok, f"{split}.{lang}"), "w", encoding="utf-8") as g:
            for line in f:
                g.write(" ".join(sp.encode(line.strip(), out_type=str)) + "\n")
EOF
  touch "$TOK/.done"
else echo "reusing $TOK"; fi

echo "== 2/4 fairseq-preprocess with the pretraining dictionary ($BIN)"
if [ ! -f "$BIN/.done" ]; then
  fairseq-preprocess --source-lang "$SRC" --target-lang "$TGT" --joined-dictionary --srcdict "$DICT" \
    --trainpref "$TOK/train" --validpref "$TOK/valid" --testpref "$TOK/test" --destdir "$BIN" \
    --workers "$OMP_NUM_THREADS" > "$WORK/logs/preprocess.log" 2>&1 || {
      echo "ERROR: fairseq-preprocess failed:" >&2; tail -n 20 "$WORK/logs/preprocess.log" >&2; exit 1; }
  touch "$BIN/.done"
else echo "reusing $BIN"; fi

echo "== 3/4 fairseq-train $ARCH ($MINUTES minutes, at most $MAX_UPDATE updates; $CKPTS)"
INIT_FLAGS=()
[ "$INIT" = mlae ] && INIT_FLAGS=(--init-from-mlae "$CKPT")
if [ "$MODE" = nar ]; then
  TASK=(--task translation_lev --noise random_mask)
  MODEL_FLAGS=(--criterion nat_loss --length-loss-factor 0.1)
else
  TASK=(--task translation)
  MODEL_FLAGS=(--criterion label_smoothed_cross_entropy --mask-schedule "$MASK_SCHEDULE"
               --mask-schedule-kind "$MASK_SCHEDULE_KIND")
fi
# sources cut to MAX_SOURCE tokens + </s> (the encoder adds <s>: 512 positions with the default)
SOURCE_FLAGS=(--truncate-source --max-source-positions "$((MAX_SOURCE + 1))")
# a finished training (MAX_UPDATE or MINUTES reached) leaves $CKPTS/.done and is reused as it is: fairseq-train resumed
# from a final checkpoint would make one more update (and overwrite checkpoint_last.pt); delete .done to train on
if [ -f "$CKPTS/.done" ]; then echo "reusing $CKPTS (finished; delete $CKPTS/.done to train on)"
else
  fairseq-train "$BIN" --user-dir "$USER_DIR" --source-lang "$SRC" --target-lang "$TGT" "${TASK[@]}" \
    "${SOURCE_FLAGS[@]}" --arch "$ARCH" "${INIT_FLAGS[@]}" "${MODEL_FLAGS[@]}" --label-smoothing "$LABEL_SMOOTHING" \
    --dropout "$DROPOUT" --attention-dropout 0.1 --weight-decay "$WEIGHT_DECAY" \
    --optimizer adam --adam-betas "$ADAM_BETAS" --clip-norm 1.0 \
    --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP" --warmup-init-lr 1e-07 \
    --max-tokens "$MAX_TOKENS" --max-update "$MAX_UPDATE" --stop-time-hours "$("$PYTHON" -c "print($MINUTES / 60)")" \
    --save-dir "$CKPTS" --no-epoch-checkpoints --save-interval-updates 1000 --keep-interval-updates 1 \
    --skip-invalid-size-inputs-valid-test $DEVICE_FLAGS --num-workers 0 --seed 1 --log-format simple \
    --log-interval 100 > "$WORK/logs/train-$MODE-$INIT.log" 2>&1 || {
      echo "ERROR: fairseq-train failed:" >&2; tail -n 30 "$WORK/logs/train-$MODE-$INIT.log" >&2; exit 1; }
  touch "$CKPTS/.done"
fi
grep -E '\| (train|valid) \||done training' "$WORK/logs/train-$MODE-$INIT.log" | tail -n 3 || true

echo "== 4/4 fairseq-generate test; scores in $WORK/scores-$MODE-$INIT.txt"
: > "$WORK/scores-$MODE-$INIT.txt"
if [ "$MODE" = nar ]; then
  DECODINGS=(); for it in $ITERS; do DECODINGS+=("--iter-decode-max-iter $it --iter-decode-force-max-iter \
--iter-decode-with-beam $LENGTH_BEAM"); done
else
  DECODINGS=("--beam 1" "--beam $BEAM --lenpen $LENPEN")
fi
for decoding in "${DECODINGS[@]}"; do
  label=$(echo "$decoding" | tr -s ' -' '_' | tr -d "'")
  out=$WORK/generate-$MODE-$INIT$label.out
  # shellcheck disable=SC2086
  fairseq-generate "$BIN" --user-dir "$USER_DIR" --source-lang "$SRC" --target-lang "$TGT" "${TASK[@]}" \
    --gen-subset test --path "$CKPTS/checkpoint_last.pt" $decoding "${SOURCE_FLAGS[@]}" \
    --bpe sentencepiece --sentencepiece-model "$SPM" --batch-size 64 --required-batch-size-multiple 1 \
    $DEVICE_FLAGS > "$out" 2> "$out.log" || { tail -n 30 "$out.log" >&2; exit 1; }
  echo "-- $decoding" | tee -a "$WORK/scores-$MODE-$INIT.txt"
  "$PYTHON" "$ROOT/scripts/score.py" --generate-output "$out" --ref "$TEXT/test.$TGT" --metrics "$METRICS" \
    | tee -a "$WORK/scores-$MODE-$INIT.txt"
done
