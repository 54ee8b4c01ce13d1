#!/usr/bin/env bash
# A small real-data demonstration of MLAE on this machine: pretrain a small MLAE on the English text of the shared
# corpora, then fine-tune it for SQuAD question generation (AR, Seq2seq style) beside the same model trained from
# random weights at the same budget, and print both models' scores and a few questions they write.
#
# Usage: examples/mlae/demo.sh [WORK_DIR] [PRETRAIN_MINUTES] [FINETUNE_MINUTES]
#   WORK_DIR          default work/mlae-demo
#   PRETRAIN_MINUTES  default 60;  FINETUNE_MINUTES  default 30 per model (two models)
# Settings: ARCH (pretraining architecture, default mlae_small), MAX_UPDATE (fine-tuning updates: the scheduled
#   masking reaches 0 there; default 2000), DATA (shared data folder, default <repo>/../shared/data), and those of
#   examples/mlae/finetune.sh (LR, BEAM, ...).
# Steps: scripts/prepare_shared_english.py pretrain-text (XSum sample documents + SQuAD dev sentences; held-out:
#   other documents and SQuAD test sentences) -> examples/mlae/pretrain.sh -> examples/mlae/squad_qg.sh with INIT=mlae
#   and INIT=random (dev pairs train but the last 500, which validate; the test split is scored).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${1:-$ROOT/work/mlae-demo}
PRETRAIN_MINUTES=${2:-60}
FINETUNE_MINUTES=${3:-30}
DATA=${DATA:-$ROOT/../shared/data}
PYTHON=${PYTHON:-python}
export MAX_UPDATE=${MAX_UPDATE:-2000}
mkdir -p "$WORK"

echo "== 1/3 English text of the shared corpora ($WORK/corpus)"
if [ ! -s "$WORK/corpus/train.txt" ]; then
  "$PYTHON" "$ROOT/scripts/prepare_shared_english.py" pretrain-text --data "$DATA" --out "$WORK/corpus"
fi
wc -l "$WORK/corpus/train.txt" "$WORK/corpus/valid.txt"

echo "== 2/3 pretraining ${ARCH:-mlae_small} for $PRETRAIN_MINUTES minutes ($WORK/pretrain)"
ARCH=${ARCH:-mlae_small} bash "$HERE/pretrain.sh" "$WORK/corpus" "$WORK/pretrain" "$PRETRAIN_MINUTES" \
  | grep --line-buffered -E '^==|\| valid \||done training' || true
[ -s "$WORK/pretrain/ckpt/checkpoint_last.pt" ] || { echo "ERROR: pretraining wrote no checkpoint" >&2; exit 1; }

echo "== 3/3 SQuAD-QG fine-tuning, $FINETUNE_MINUTES minutes / $MAX_UPDATE updates each, from MLAE and from random"
for init in mlae random; do
  PRETRAIN=$WORK/pretrain INIT=$init ARCH=mlae_seq2seq_small \
    bash "$HERE/squad_qg.sh" "$DATA/squad-qg-du2017" "$WORK/qg" "$FINETUNE_MINUTES"
done
echo "== scores"
for init in mlae random; do echo "-- init $init"; cat "$WORK/qg/scores-ar-$init.txt"; done
echo "== the first questions (beam 6): source / reference / MLAE / random"
paste -d '\n' <(head -n 5 "$WORK/qg/text/test.src") <(head -n 5 "$WORK/qg/text/test.tgt") \
  <(grep '^D-[0-4]\s' "$WORK/qg/generate-ar-mlae_beam_6_lenpen_1.0.out" | sort -t- -k2 -n | cut -f3) \
  <(grep '^D-[0-4]\s' "$WORK/qg/generate-ar-random_beam_6_lenpen_1.0.out" | sort -t- -k2 -n | cut -f3) || true
