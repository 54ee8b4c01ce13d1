#!/usr/bin/env bash
# make bench: every Multi30k en->de system under one fixed wall-clock training budget, then one benchmark run.
#   1. prepare the data (examples/multi30k/prepare.sh)
#   2. AR teacher: fairseq transformer, 3+3 layers, 256 dims (the size every system here has)
#   3. distilled training data from the teacher (scripts/distill.py; greedy unless DISTILL_BEAM is set)
#   4. on the distilled data: our nat_ctc_transformer and bnb (CTC, random init), fairseq's cmlm_transformer and
#      vanilla NAT (nonautoregressive_transformer) as peers, and DEER (one 6-layer stack = the 3+3 of the others,
#      trained with dynamic block pruning; decoded at 0/1/2/4 editor steps, at full size and at 50 %)
#   5. scripts/benchmark.py --mode full: test_2016_flickr sacreBLEU, batch-1 latency, batch-64 and 4096-token
#      throughput, FLOPs, profile; report.md, results.csv, plot.png
#   6. the results table and plot in README.md are replaced by this run's (between the bench markers)
# Usage: examples/multi30k/bench.sh DATA_DIR WORK_DIR MINUTES_PER_SYSTEM
# Resumable: each finished step leaves a .done marker; an interrupted training resumes from its checkpoint_last.pt
# and fairseq counts the training time of earlier runs against the budget.
set -euo pipefail
DATA=${1:-../shared/data/multi30k-en-de}
WORK=${2:-work/bench}
MINUTES=${3:-20}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
# passive waiting: with busy-waiting OpenMP threads a shared CPU slows training about tenfold
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
STOP_HOURS=$(python -c "print($MINUTES / 60)")
SIZE="--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 \
  --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4"
COMMON="--user-dir $USER_DIR --optimizer adam --adam-betas (0.9,0.98) --clip-norm 1.0 --lr-scheduler inverse_sqrt \
  --warmup-init-lr 1e-07 --max-tokens 2048 --stop-time-hours $STOP_HOURS --max-update 1000000 --cpu \
  --num-workers 0 --data-buffer-size 0 --seed 1 --no-epoch-checkpoints --log-format simple --log-interval 100"
# distillation decodes the 29k training sentences with the teacher: beam 1 (greedy) keeps it to minutes on a CPU
# (fairseq's documented procedure uses beam 4-5: DISTILL_BEAM=4); outputs are capped at 1.2 x source + 10 tokens, so
# that a budget-trained teacher's repetitions cannot run to fairseq's 200-token default
DISTILL_BEAM=${DISTILL_BEAM:-1}
T0=$(date +%s)

echo "== 1/6 data ($WORK)"
bash "$HERE/prepare.sh" "$DATA" "$WORK"

train() {  # NAME DATA_BIN ARGS...
  local name=$1 bin=$2; shift 2
  if [ -f "$WORK/ckpt/$name/.done" ]; then echo "reusing $WORK/ckpt/$name"; return; fi
  echo "-- training $name for $MINUTES minutes"
  # shellcheck disable=SC2086
  fairseq-train "$bin" $COMMON --save-dir "$WORK/ckpt/$name" "$@" 2>&1 \
    | grep --line-buffered -E "valid on|done training|Loaded checkpoint|ERROR|Error" || true
  [ -f "$WORK/ckpt/$name/checkpoint_last.pt" ] || { echo "ERROR: $name wrote no checkpoint" >&2; exit 1; }
  touch "$WORK/ckpt/$name/.done"
}

echo "== 2/6 AR teacher (transformer, $MINUTES min)"
# shellcheck disable=SC2086
train transformer "$WORK/bin" --task translation --arch transformer $SIZE --share-all-embeddings \
  --dropout 0.1 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --lr 0.001 --warmup-updates 300

echo "== 3/6 distilled training data"
if [ ! -f "$WORK/bin-distill/.done" ]; then
  python "$ROOT/scripts/distill.py" --data-bin "$WORK/bin" --out-bin "$WORK/bin-distill" \
    --teacher "$WORK/ckpt/transformer/checkpoint_last.pt" --beam "$DISTILL_BEAM" --max-tokens 8000 --cpu --workers 2 \
    --generate-args "--max-len-a 1.2 --max-len-b 10"
  touch "$WORK/bin-distill/.done"
else echo "reusing $WORK/bin-distill"; fi
D="$WORK/bin-distill"

echo "== 4/6 NAR systems on distilled data ($MINUTES min each)"
# shellcheck disable=SC2086
train nat_ctc_transformer "$D" --task translation_lev_ctc --noise no_noise --arch nat_ctc_transformer_small \
  --share-all-embeddings --encoder-normalize-before --decoder-normalize-before --dropout 0.1 \
  --criterion ctc --label-smoothing 0.1 --lr 0.002 --warmup-updates 100
# shellcheck disable=SC2086
train bnb "$D" --task translation_lev_ctc --noise full_mask --arch bnb_tiny --length-mode ctc \
  --encoder-layers 3 --encoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --encoder-attention-heads 4 \
  --criterion ctc --label-smoothing 0.1 --lr 0.001 --warmup-updates 300
# shellcheck disable=SC2086
train cmlm_transformer "$D" --task translation_lev --noise random_mask --arch cmlm_transformer $SIZE \
  --share-all-embeddings --apply-bert-init --dropout 0.1 --criterion nat_loss --label-smoothing 0.1 \
  --length-loss-factor 0.1 --lr 0.001 --warmup-updates 300
# shellcheck disable=SC2086
train nonautoregressive_transformer "$D" --task translation_lev --noise full_mask \
  --arch nonautoregressive_transformer $SIZE --share-all-embeddings --apply-bert-init --src-embedding-copy \
  --pred-length-offset --length-loss-factor 0.1 --dropout 0.1 --criterion nat_loss --label-smoothing 0.1 \
  --lr 0.001 --warmup-updates 300

# shellcheck disable=SC2086
train deer "$D" --task translation_lev_ctc --noise random_delete --arch deer_tiny --encoder-layers 6 \
  --encoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --share-all-embeddings \
  --prune --prune-sizes "1.0 0.75 0.5 0.25" --criterion ctc --label-smoothing 0.1 --lr 0.001 --warmup-updates 300

echo "== 5/6 benchmark (full mode)"
python "$ROOT/scripts/benchmark.py" --mode full --out-dir "$WORK/report" --data "$WORK/bin" \
  --reference "$WORK/spm/raw/test_2016_flickr.de" --threads "$OMP_NUM_THREADS" --latency-sentences 64 \
  --fairseq-args "--bpe sentencepiece --sentencepiece-model $WORK/spm/spm.model" \
  --checkpoint "transformer=$WORK/ckpt/transformer/checkpoint_last.pt" \
  --checkpoint "nat_ctc_transformer=$WORK/ckpt/nat_ctc_transformer/checkpoint_last.pt" \
  --checkpoint "bnb=$WORK/ckpt/bnb/checkpoint_last.pt" \
  --checkpoint "cmlm_transformer=$WORK/ckpt/cmlm_transformer/checkpoint_last.pt" \
  --checkpoint "nonautoregressive_transformer=$WORK/ckpt/nonautoregressive_transformer/checkpoint_last.pt" \
  --checkpoint "deer=$WORK/ckpt/deer/checkpoint_last.pt" --checkpoint "deer@50%=$WORK/ckpt/deer/checkpoint_last.pt" \
  --model-args "deer@50%=--model-overrides {'prune_size':0.5}"

echo "== 6/6 README results"
python "$ROOT/scripts/update_readme_results.py" --readme "$ROOT/README.md" --report "$WORK/report/report.md" \
  --plot "$WORK/report/plot.png" --plot-dest "$ROOT/docs/bench.png" \
  --note "make bench, $MINUTES minutes of training per system on this machine ($(nproc) cores), total $(( ($(date +%s) - T0) / 60 )) minutes"
echo "== done in $(( $(date +%s) - T0 )) s; report in $WORK/report"
