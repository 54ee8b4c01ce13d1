#!/usr/bin/env bash
# MLAE on SQuAD 1.1 question generation (Du et al. 2017 split), scored with the QG papers' BLEU-4 / ROUGE-L / METEOR.
# Usage: examples/mlae/squad_qg.sh [DATA_DIR] [WORK_DIR] [MINUTES]
#   DATA_DIR  {dev,test}.{src,tgt} (default ../shared/data/squad-qg-du2017) and, for real training, train.{src,tgt}
#             (github.com/xinyadu/nqg). Without train.* the dev pairs train and the first 500 test pairs validate
#             (a CPU demonstration; the test pairs are then all scored, the first 500 having been seen by validation
#             only).
#   WORK_DIR  default work/mlae-squad-qg;  MINUTES  training budget (default 60)
# Pretraining first: examples/mlae/pretrain.sh (PRETRAIN=its WORK_DIR). MODE=ar (default), unilm or nar; INIT=random
# trains the same model from random weights (the baseline). Other settings: examples/mlae/finetune.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA=${1:-$ROOT/../shared/data/squad-qg-du2017}
WORK=${2:-$ROOT/work/mlae-squad-qg}
MINUTES=${3:-60}
TEXT=$WORK/text; mkdir -p "$TEXT"
for l in src tgt; do
  for s in dev test; do [ -s "$DATA/$s.$l" ] || { echo "ERROR: $DATA/$s.$l not found (DATA_DIR)" >&2; exit 1; }; done
  D=$(cd "$DATA" && pwd)
  if [ -s "$DATA/train.$l" ]; then
    ln -sf "$D/train.$l" "$TEXT/train.$l"; ln -sf "$D/dev.$l" "$TEXT/valid.$l"; ln -sf "$D/test.$l" "$TEXT/test.$l"
  else
    ln -sf "$D/dev.$l" "$TEXT/train.$l"; head -n 500 "$D/test.$l" > "$TEXT/valid.$l"; ln -sf "$D/test.$l" "$TEXT/test.$l"
  fi
done
METRICS=${METRICS:-qg,meteor} exec bash "$HERE/finetune.sh" squad-qg src tgt "$TEXT" "$WORK" "$MINUTES"
