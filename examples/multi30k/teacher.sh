#!/usr/bin/env bash
# The Multi30k en->de AR teacher and its distilled training data, built once and reused by every script that needs
# them (make bench, the tables, the demo).
#   1. data: examples/multi30k/prepare.sh (joint sentencepiece 8k, fairseq-preprocess) -> WORK/spm, WORK/bin
#   2. teacher: fairseq `transformer`, 3+3 layers x 256 (the size of every system in make bench), trained until its
#      validation BLEU stops improving: fairseq's --eval-bleu (greedy, outputs capped at 1.2 x source + 10) every
#      VALIDATE_EVERY updates, --patience PATIENCE validations, best checkpoint by BLEU; MAX_MINUTES caps the wall time
#      (fairseq counts the time of earlier runs of the same checkpoint, so an interrupted run resumes where it was).
#   3. distillation: scripts/distill.py decodes the training set with the best checkpoint, beam DISTILL_BEAM
#      (fairseq's procedure: beam 4), and re-binarizes it with the same dictionaries -> WORK/bin-distill
# Usage: examples/multi30k/teacher.sh DATA_DIR WORK_DIR [MAX_MINUTES]
# Each finished step leaves a .done marker and is reused; the teacher's checkpoint is WORK/ckpt/transformer/checkpoint_best.pt.
set -euo pipefail
DATA=${1:-../shared/data/multi30k-en-de}
WORK=${2:-work/bench}
MAX_MINUTES=${3:-150}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
PATIENCE=${PATIENCE:-6}
MAX_UPDATE=${MAX_UPDATE:-1000000}  # an update budget, beside the MAX_MINUTES cap (the demo uses one)
VALIDATE_EVERY=${VALIDATE_EVERY:-300}
DISTILL_BEAM=${DISTILL_BEAM:-4}
DEVICE_FLAGS=${DEVICE_FLAGS:-$(python -c "import torch; print('' if torch.cuda.is_available() else '--cpu')")}

echo "== teacher 1/3 data ($WORK)"
bash "$HERE/prepare.sh" "$DATA" "$WORK"

T=$WORK/ckpt/transformer
echo "== teacher 2/3 AR transformer until valid BLEU stops improving (patience $PATIENCE x $VALIDATE_EVERY updates, at most $MAX_MINUTES min)"
if [ -f "$T/.done" ]; then echo "reusing $T"; else
  mkdir -p "$T"
  # shellcheck disable=SC2086
  fairseq-train "$WORK/bin" --user-dir "$ROOT/fairseq_nar_plugins" --task translation --arch transformer \
    --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 \
    --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4 \
    --share-all-embeddings --dropout 0.2 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
    --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 --lr 0.001 --lr-scheduler inverse_sqrt \
    --warmup-updates 300 --warmup-init-lr 1e-07 --max-tokens 2048 --max-update "$MAX_UPDATE" \
    --stop-time-hours "$(python -c "print($MAX_MINUTES / 60)")" \
    --eval-bleu --eval-bleu-args '{"beam": 1, "max_len_a": 1.2, "max_len_b": 10}' \
    --eval-bleu-remove-bpe sentencepiece --eval-bleu-detok space \
    --best-checkpoint-metric bleu --maximize-best-checkpoint-metric --patience "$PATIENCE" \
    --validate-interval-updates "$VALIDATE_EVERY" --save-interval-updates "$VALIDATE_EVERY" --keep-interval-updates 1 \
    --no-epoch-checkpoints --save-dir "$T" $DEVICE_FLAGS --num-workers 0 --data-buffer-size 0 --seed 1 \
    --log-format simple --log-interval 100 2>&1 | tee -a "$T/train.log" \
    | grep --line-buffered -E "valid on|done training|early stop|Loaded checkpoint|ERROR|Error" || true
  [ -f "$T/checkpoint_best.pt" ] || { echo "ERROR: the teacher wrote no checkpoint_best.pt (see $T/train.log)" >&2; exit 1; }
  touch "$T/.done"
fi

echo "== teacher 3/3 distilled training data (beam $DISTILL_BEAM)"
if [ -f "$WORK/bin-distill/.done" ]; then echo "reusing $WORK/bin-distill"; else
  # shellcheck disable=SC2086
  python "$ROOT/scripts/distill.py" --data-bin "$WORK/bin" --out-bin "$WORK/bin-distill" \
    --teacher "$T/checkpoint_best.pt" --beam "$DISTILL_BEAM" --max-tokens 8000 $DEVICE_FLAGS --workers 2 \
    --generate-args "--max-len-a 1.2 --max-len-b 10"
  touch "$WORK/bin-distill/.done"
fi
echo "== teacher ready: $T/checkpoint_best.pt, distilled data $WORK/bin-distill"
