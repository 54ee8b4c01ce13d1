#!/usr/bin/env bash
# DEER (MODEL=deer, default) or BERT-NAR-BERT (MODEL=bnb) on WMT'14 en->de (paper Table 1; raw, or distilled with DISTILL=1 through scripts/distill.py).
# Usage: examples/common/wmt14_en_de.sh TRAIN_DIR [WORK_DIR] [MINUTES]
#   TRAIN_DIR  holds train.en and train.de: the WMT'14 en-de training text (Europarl v7 + Common Crawl + News
#              Commentary v9), detokenized, one sentence a line, downloaded outside this environment
#              (https://www.statmt.org/wmt14/; fairseq's examples/translation/prepare-wmt14en2de.sh lists the files).
#   valid = newstest2013, test = newstest2014 from NEWSTEST_DIR (default ../shared/data/wmt-newstest/en-de).
#   WORK_DIR   default work/MODEL-wmt14-en-de[-distill];  MINUTES  training budget (default 2880)
# Backbone: CHECKPOINT=/path/to/xlmr.base/model.pt ARCH=deer_xlmr (bnb: bnb_base with bert-base-cased / mBERT) (the paper); the default MiniLM (English vocabulary)
# only smoke-tests the pipeline. Settings: see examples/common/nar_recipe.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ $# -lt 1 ]; then sed -n '2,11p' "$0"; exit 2; fi
TRAIN=$1
SUFFIX=$([ "${DISTILL:-0}" = 1 ] && echo -distill || true)
WORK=${2:-$ROOT/work/${MODEL:-deer}-wmt14-en-de$SUFFIX}
MINUTES=${3:-2880}
NT=${NEWSTEST_DIR:-$ROOT/../shared/data/wmt-newstest/en-de}
TEXT=$WORK/text; mkdir -p "$TEXT"
for l in en de; do
  [ -s "$TRAIN/train.$l" ] || { echo "ERROR: $TRAIN/train.$l not found (TRAIN_DIR)" >&2; exit 1; }
  ln -sf "$(cd "$TRAIN" && pwd)/train.$l" "$TEXT/train.$l"
  for pair in newstest2013:valid newstest2014:test; do
    [ -s "$NT/${pair%%:*}.$l" ] || { echo "ERROR: $NT/${pair%%:*}.$l not found (NEWSTEST_DIR)" >&2; exit 1; }
    ln -sf "$(cd "$NT" && pwd)/${pair%%:*}.$l" "$TEXT/${pair##*:}.$l"
  done
done
exec bash "$HERE/nar_recipe.sh" wmt14-en-de en de "$TEXT" "$WORK" "$MINUTES"
