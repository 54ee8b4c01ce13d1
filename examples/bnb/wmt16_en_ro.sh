#!/usr/bin/env bash
# BERT-NAR-BERT on WMT'16 en->ro (raw, or distilled with DISTILL=1).
# Usage: examples/bnb/wmt16_en_ro.sh TRAIN_DIR [WORK_DIR] [MINUTES]
# Arguments, settings, data layout: examples/common/wmt16_en_ro.sh and examples/common/nar_recipe.sh (run
# with MODEL=bnb).
MODEL=bnb exec bash "$(dirname "${BASH_SOURCE[0]}")/../common/wmt16_en_ro.sh" "$@"
