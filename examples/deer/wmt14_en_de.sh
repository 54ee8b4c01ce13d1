#!/usr/bin/env bash
# DEER on WMT'14 en->de (paper Table 1; raw, or distilled with DISTILL=1 through scripts/distill.py).
# Usage: examples/deer/wmt14_en_de.sh TRAIN_DIR [WORK_DIR] [MINUTES]
# Arguments, settings, data layout: examples/common/wmt14_en_de.sh and examples/common/nar_recipe.sh (run
# with MODEL=deer).
MODEL=deer exec bash "$(dirname "${BASH_SOURCE[0]}")/../common/wmt14_en_de.sh" "$@"
