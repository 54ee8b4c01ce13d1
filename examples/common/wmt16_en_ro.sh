#!/usr/bin/env bash
# DEER (MODEL=deer, default) or BERT-NAR-BERT (MODEL=bnb) on WMT'16 en->ro (paper Table 1; raw, or distilled with DISTILL=1).
# Usage: examples/common/wmt16_en_ro.sh TRAIN_DIR [WORK_DIR] [MINUTES]
#   TRAIN_DIR  holds train.en and train.ro: the WMT'16 en-ro training text (Europarl v8 + SETimes2), detokenized,
#              one sentence a line, downloaded outside this environment (https://www.statmt.org/wmt16/).
#   valid = newsdev2016 is not in the shared data: the script validates on the first 1000 lines of newstest2016 and
#   tests on the rest, unless VALID_TEST_DIR holds {valid,test}.{en,ro} (e.g. newsdev2016 / newstest2016).
#   Default newstest source: ../shared/data/wmt-newstest/en-ro (NEWSTEST_DIR).
#   WORK_DIR   default work/MODEL-wmt16-en-ro;  MINUTES  training budget (default 1440)
# Backbone: CHECKPOINT=/path/to/xlmr.base/model.pt ARCH=deer_xlmr (bnb: bnb_base with bert-base-cased / mBERT) (the paper); the default MiniLM (English vocabulary)
# only smoke-tests the pipeline. Settings: see examples/common/nar_recipe.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ $# -lt 1 ]; then sed -n '2,12p' "$0"; exit 2; fi
TRAIN=$1
SUFFIX=$([ "${DISTILL:-0}" = 1 ] && echo -distill || true)
WORK=${2:-$ROOT/work/${MODEL:-deer}-wmt16-en-ro$SUFFIX}
MINUTES=${3:-1440}
NT=${NEWSTEST_DIR:-$ROOT/../shared/data/wmt-newstest/en-ro}
TEXT=$WORK/text; mkdir -p "$TEXT"
for l in en ro; do
  [ -s "$TRAIN/train.$l" ] || { echo "ERROR: $TRAIN/train.$l not found (TRAIN_DIR)" >&2; exit 1; }
  ln -sf "$(cd "$TRAIN" && pwd)/train.$l" "$TEXT/train.$l"
  if [ -n "${VALID_TEST_DIR:-}" ]; then
    for s in valid test; do ln -sf "$(cd "$VALID_TEST_DIR" && pwd)/$s.$l" "$TEXT/$s.$l"; done
  else
    [ -s "$NT/newstest2016.$l" ] || { echo "ERROR: $NT/newstest2016.$l not found (NEWSTEST_DIR)" >&2; exit 1; }
    head -n 1000 "$NT/newstest2016.$l" > "$TEXT/valid.$l"
    tail -n +1001 "$NT/newstest2016.$l" > "$TEXT/test.$l"
  fi
done
exec bash "$HERE/nar_recipe.sh" wmt16-en-ro en ro "$TEXT" "$WORK" "$MINUTES"
