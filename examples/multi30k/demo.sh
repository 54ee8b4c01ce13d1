#!/usr/bin/env bash
# The main job: Multi30k en->de with a small CTC non-autoregressive Transformer, on the CPU.
#   prepare (check + joint sentencepiece) -> fairseq-preprocess -> fairseq-train (bounded time)
#   -> fairseq-generate test_2016_flickr (one pass, greedy CTC) -> sacreBLEU with its signature.
# Usage: examples/multi30k/demo.sh DATA_DIR WORK_DIR TRAIN_MINUTES
#   DATA_DIR  holds {train,valid,test_2016_flickr}.{en,de}, raw text (default ../shared/data/multi30k-en-de).
#             Outside this environment, get it with:
#               for f in train val test_2016_flickr; do wget https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/$f.{en,de}.gz; done
#             (then gunzip, and rename val.* to valid.*).
# Re-running reuses the prepared data and resumes training from WORK_DIR/ckpt/checkpoint_last.pt.
# Hyper-parameters are chosen for a budget of minutes on 2 CPU cores: pre-LN layers tolerate a high peak learning
# rate after a short warm-up, and small batches give more updates; for real training use the recipe defaults of
# the papers (lr 5e-4, 10k warm-up, 300k updates, 64k-token batches).
set -euo pipefail
DATA=${1:-../shared/data/multi30k-en-de}
WORK=${2:-work/demo}
MINUTES=${3:-8}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
SRC=en; TGT=de
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
# passive waiting: with busy-waiting OpenMP threads a shared CPU slows training about tenfold
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

T0=$(date +%s)
echo "== 1-2/4 prepare (corpus checks, joint sentencepiece) and fairseq-preprocess ($WORK)"
bash "$HERE/prepare.sh" "$DATA" "$WORK"

echo "== 3/4 fairseq-train nat_ctc_transformer_small for at most $MINUTES minutes ($WORK/ckpt)"
STOP_HOURS=$(python -c "print($MINUTES / 60)")
T1=$(date +%s)
fairseq-train "$WORK/bin" --user-dir "$USER_DIR" \
  --task translation_lev_ctc --upsample-ratio 2 --noise no_noise \
  --arch nat_ctc_transformer_small --share-all-embeddings --dropout 0.1 \
  --encoder-normalize-before --decoder-normalize-before \
  --criterion ctc --label-smoothing 0.1 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 1.0 \
  --lr 0.002 --lr-scheduler inverse_sqrt --warmup-updates 100 --warmup-init-lr 1e-07 \
  --max-tokens 1536 --stop-time-hours "$STOP_HOURS" --max-update 100000 \
  --save-dir "$WORK/ckpt" --no-epoch-checkpoints --save-interval-updates 200 --keep-interval-updates 1 \
  --cpu --num-workers 0 --data-buffer-size 0 --seed 1 --log-format simple --log-interval 50 2>&1 | grep --line-buffered -v -i "warn"
T2=$(date +%s)

echo "== 4/4 fairseq-generate test_2016_flickr (greedy CTC, one pass) and sacreBLEU"
fairseq-generate "$WORK/bin" --user-dir "$USER_DIR" --task translation_lev_ctc --gen-subset test \
  --path "$WORK/ckpt/checkpoint_last.pt" --iter-decode-max-iter 0 \
  --batch-size 64 --required-batch-size-multiple 1 \
  --bpe sentencepiece --sentencepiece-model "$WORK/spm/spm.model" --cpu > "$WORK/generate-test.out" 2> "$WORK/generate-test.log"
grep "Translated" "$WORK/generate-test.log" | sed 's/.*INFO | fairseq_cli.generate | //' || true
python "$ROOT/scripts/score_generate.py" --generate-output "$WORK/generate-test.out" \
  --reference "$WORK/spm/raw/test_2016_flickr.$TGT" --hyp-out "$WORK/hyp.test_2016_flickr.$TGT" | tee "$WORK/bleu.txt"
T3=$(date +%s)
echo "== done: training $((T2 - T1)) s, whole demo $((T3 - T0)) s; hypotheses in $WORK/hyp.test_2016_flickr.$TGT"
