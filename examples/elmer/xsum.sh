#!/usr/bin/env bash
# ELMER on XSum summarization (Li et al. 2022, arXiv:2210.13304, Table 1), scored with ROUGE.
# Usage: examples/elmer/xsum.sh TRAIN_DIR [WORK_DIR] [MINUTES]
#   TRAIN_DIR holds {train,valid}.{src,tgt} (documents, one a line, and their summaries); test.* default to
#   ../shared/data/xsum-sample (TEST_DIR). Details: examples/common/xsum.sh, examples/common/nar_recipe.sh.
# Settings: EXIT_MODE soft (default) or hard (THRESHOLDS '0 0.5 1.0'); a fixed canvas of CANVAS_MAX=64 positions
# (summaries are ~25 words; longer training targets are skipped and counted as canvas_overflow);
# RESTORE=<examples/elmer/pretrain.sh checkpoint> fine-tunes an LPLM-pretrained model (same CHECKPOINT).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -lt 1 ]; then sed -n '2,9p' "$0"; exit 2; fi
MODEL=elmer CANVAS_RATIO=${CANVAS_RATIO:-0} CANVAS_MAX=${CANVAS_MAX:-64} LR=${LR:-1e-4} \
  exec bash "$HERE/../common/xsum.sh" "$@"
