#!/usr/bin/env bash
# MLAE on SQuAD 1.1 question generation (Du et al. 2017 split), scored with the QG papers' BLEU-4 / ROUGE-L / METEOR.
# Usage: examples/mlae/squad_qg.sh [DATA_DIR] [WORK_DIR] [MINUTES]
#   DATA_DIR  {dev,test}.{src,tgt} (default ../shared/data/squad-qg-du2017) and, for real training, train.{src,tgt}
#             (github.com/xinyadu/nqg). Without train.* (a CPU demonstration) the dev pairs train except the last
#             VALID_PAIRS (default 500), which validate; the test split is only scored. The file is in article order,
#             so at most the one article at the cut has sentences on both sides.
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
    head -n "-${VALID_PAIRS:-500}" "$D/dev.$l" > "$TEXT/train.$l"; tail -n "${VALID_PAIRS:-500}" "$D/dev.$l" > "$TEXT/valid.$l"
    ln -sf "$D/test.$l" "$TEXT/test.$l"
  fi
done
METRICS=${METRICS:-qg,meteor} exec bash "$HERE/finetune.sh" squad-qg src tgt "$TEXT" "$WORK" "$MINUTES"
