#!/usr/bin/env bash
# Train the DEER of the issue-5 table (examples/deer/multi30k_sizes.sh) for longer than make bench's budget: the
# settings of make bench's DEER (one 6-layer stack x 256 dims = the 3+3 of the other systems, --prune over
# 1.0/0.75/0.5/0.25, on the teacher-distilled data), warm-up 100 updates, MINUTES of training.
# Usage: examples/deer/train_multi30k.sh BENCH_WORK_DIR OUT_WORK_DIR MINUTES
#   BENCH_WORK_DIR  the work directory of `make bench` (its bin/, bin-distill/, spm/ and AR ckpt/transformer are
#                   linked into OUT_WORK_DIR, so that the table's AR baseline is make bench's)
#   OUT_WORK_DIR    receives ckpt/deer (resumable: fairseq counts earlier training time against MINUTES); then run
#                   examples/deer/multi30k_sizes.sh OUT_WORK_DIR
set -euo pipefail
BENCH=${1:?usage: train_multi30k.sh BENCH_WORK_DIR OUT_WORK_DIR MINUTES}
OUT=${2:?usage: train_multi30k.sh BENCH_WORK_DIR OUT_WORK_DIR MINUTES}
MINUTES=${3:?usage: train_multi30k.sh BENCH_WORK_DIR OUT_WORK_DIR MINUTES}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
for d in bin bin-distill spm ckpt/transformer; do
  [ -e "$BENCH/$d" ] || { echo "ERROR: $BENCH/$d not found: run make bench first (or pass its work directory)" >&2; exit 1; }
done
BENCH=$(cd "$BENCH" && pwd)
mkdir -p "$OUT/ckpt"
for d in bin bin-distill spm ckpt/transformer; do [ -e "$OUT/$d" ] || ln -s "$BENCH/$d" "$OUT/$d"; done
fairseq-train "$OUT/bin-distill" --user-dir "$ROOT/fairseq_nar_plugins" --task translation_lev_ctc \
  --noise random_delete --arch deer_tiny --encoder-layers 6 --encoder-embed-dim 256 --encoder-ffn-embed-dim 1024 \
  --encoder-attention-heads 4 --share-all-embeddings --prune --prune-sizes "1.0 0.75 0.5 0.25" --criterion ctc \
  --label-smoothing 0.1 --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 --lr 0.001 \
  --lr-scheduler inverse_sqrt --warmup-updates 100 --warmup-init-lr 1e-07 --max-tokens 2048 \
  --stop-time-hours "$(python -c "print($MINUTES / 60)")" --max-update 1000000 --cpu --num-workers 0 \
  --data-buffer-size 0 --seed 1 --save-dir "$OUT/ckpt/deer" --no-epoch-checkpoints --save-interval-updates 100 \
  --keep-interval-updates 1 --log-format simple --log-interval 10
echo "== trained: $OUT/ckpt/deer/checkpoint_last.pt; next: examples/deer/multi30k_sizes.sh $OUT"
