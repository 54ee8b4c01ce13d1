#!/usr/bin/env bash
# DEER (MODEL=deer, default) or BERT-NAR-BERT (MODEL=bnb) on XSum summarization (paper Table 2, RoBERTa backbone), scored with ROUGE.
# Usage: examples/common/xsum.sh TRAIN_DIR [WORK_DIR] [MINUTES]
#   TRAIN_DIR  holds {train,valid}.{src,tgt}: XSum documents (one per line) and their one-sentence summaries,
#              downloaded outside this environment (GLGE / the XSum release). test.{src,tgt} come from TEST_DIR
#              (default ../shared/data/xsum-sample: the first 1000 XSum test pairs) unless TRAIN_DIR has them.
#   Documents are cut to fit source + 2x slots into the backbone's 512 positions (about 170 tokens).
#   WORK_DIR   default work/MODEL-xsum;  MINUTES  training budget (default 600)
# Backbone: CHECKPOINT=/path/to/roberta.base/model.pt ARCH=deer_roberta (the paper); default the MiniLM (deer_small).
# Settings: see examples/common/nar_recipe.sh (METRICS defaults to rouge here).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ $# -lt 1 ]; then sed -n '2,11p' "$0"; exit 2; fi
TRAIN=$1
WORK=${2:-$ROOT/work/${MODEL:-deer}-xsum}
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
# summaries are shorter than documents: ratio 1 keeps source + slots within the positions of the backbone
RATIO=${RATIO:-1} METRICS=${METRICS:-rouge} \
  exec bash "$HERE/nar_recipe.sh" xsum src tgt "$TEXT" "$WORK" "$MINUTES"
