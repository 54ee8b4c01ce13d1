#!/usr/bin/env bash
# MLAE on Multi30k en->de translation, scored with sacreBLEU.
# Usage: examples/mlae/multi30k.sh [DATA_DIR] [WORK_DIR] [MINUTES]
#   DATA_DIR  {train,valid,test_2016_flickr}.{en,de} raw text (default ../shared/data/multi30k-en-de)
#   WORK_DIR  default work/mlae-multi30k;  MINUTES  training budget (default 30)
# The pretraining vocabulary must cover both languages: pretrain on English and German text, e.g.
#   mkdir -p work/m30k-mono && cat ../shared/data/multi30k-en-de/train.{en,de} > work/m30k-mono/train.txt
#   examples/mlae/pretrain.sh work/m30k-mono work/mlae-pretrain-m30k 60
#   PRETRAIN=work/mlae-pretrain-m30k examples/mlae/multi30k.sh
# MODE=ar (default), unilm or nar; INIT=random for the baseline. Other settings: examples/mlae/finetune.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA=${1:-$ROOT/../shared/data/multi30k-en-de}
WORK=${2:-$ROOT/work/mlae-multi30k}
MINUTES=${3:-30}
TEXT=$WORK/text; mkdir -p "$TEXT"
for l in en de; do
  for pair in train:train valid:valid test_2016_flickr:test; do
    from=${pair%%:*}; to=${pair##*:}
    [ -s "$DATA/$from.$l" ] || { echo "ERROR: $DATA/$from.$l not found (DATA_DIR)" >&2; exit 1; }
    ln -sf "$(cd "$DATA" && pwd)/$from.$l" "$TEXT/$to.$l"
  done
done
MAX_UPDATE=${MAX_UPDATE:-3000} exec bash "$HERE/finetune.sh" multi30k-en-de en de "$TEXT" "$WORK" "$MINUTES"
