#!/usr/bin/env bash
# ELMER on Multi30k en->de (raw references, or distilled with DISTILL=1 through scripts/distill.py).
# Usage: examples/elmer/multi30k.sh [DATA_DIR] [WORK_DIR] [MINUTES]
#   DATA_DIR default ../shared/data/multi30k-en-de. Details: examples/common/multi30k.sh, examples/common/nar_recipe.sh.
# Settings: EXIT_MODE soft (default) or hard (THRESHOLDS '0 0.5 1.0'); the canvas grows with the source,
# T = min(CANVAS_MAX=128, 2 x source + 4) (German takes ~1.3-1.8x the English WordPieces; rows that do not fit are
# skipped and counted as canvas_overflow); RESTORE=<examples/elmer/pretrain.sh checkpoint> fine-tunes an
# LPLM-pretrained model.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODEL=elmer CANVAS_RATIO=${CANVAS_RATIO:-2} CANVAS_OFFSET=${CANVAS_OFFSET:-4} CANVAS_MAX=${CANVAS_MAX:-128} \
  LR=${LR:-1e-4} exec bash "$HERE/../common/multi30k.sh" "$@"
