#!/usr/bin/env bash
# MLAE on XSum summarization (paper Tables 2-7), scored with ROUGE.
# Usage: examples/mlae/xsum.sh TRAIN_DIR [WORK_DIR] [MINUTES]
#   TRAIN_DIR  {train,valid}.{src,tgt}: XSum documents (one per line) and their one-sentence summaries, downloaded
#              outside this environment; test.{src,tgt} from TEST_DIR (default ../shared/data/xsum-sample, the first
#              1000 XSum test pairs) unless TRAIN_DIR has them. Documents are cut to 510 tokens (MAX_SOURCE).
#   WORK_DIR   default work/mlae-xsum;  MINUTES  training budget (default 600)
# Pretraining first: examples/mlae/pretrain.sh (PRETRAIN=its WORK_DIR; CROSS=1 for the NAR model, Table 6).
# Paper settings (Table 11): AR (MODE=ar, default) lr 7e-5 or 1e-4, warm-up 500, 30K updates (Table 11; section 4.3
# says 50K: set MAX_UPDATE), beam 6, length penalty 1.0, scheduled masking 0.6 -> 0; NAR (MODE=nar) warm-up 10K,
# 300K updates, 10 mask-predict iterations. Other settings: examples/mlae/finetune.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ $# -lt 1 ]; then sed -n '2,11p' "$0"; exit 2; fi
TRAIN=$1
WORK=${2:-$ROOT/work/mlae-xsum}
MINUTES=${3:-600}
TEST=${TEST_DIR:-$ROOT/../shared/data/xsum-sample}
TEXT=$WORK/text; mkdir -p "$TEXT"
for l in src tgt; do
  for s in train valid; do
    [ -s "$TRAIN/$s.$l" ] || { echo "ERROR: $TRAIN/$s.$l not found (TRAIN_DIR)" >&2; exit 1; }
    ln -sf "$(cd "$TRAIN" && pwd)/$s.$l" "$TEXT/$s.$l"
  done
  t=$TRAIN; [ -s "$TRAIN/test.$l" ] || t=$TEST
  [ -s "$t/test.$l" ] || { echo "ERROR: $t/test.$l not found (TEST_DIR)" >&2; exit 1; }
  ln -sf "$(cd "$t" && pwd)/test.$l" "$TEXT/test.$l"
done
METRICS=${METRICS:-rouge} exec bash "$HERE/finetune.sh" xsum src tgt "$TEXT" "$WORK" "$MINUTES"
