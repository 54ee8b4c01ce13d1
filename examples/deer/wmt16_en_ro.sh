#!/usr/bin/env bash
# DEER on WMT'16 en->ro (paper Table 1; raw, or distilled with DISTILL=1).
# Usage: examples/deer/wmt16_en_ro.sh TRAIN_DIR [WORK_DIR] [MINUTES]
# Arguments, settings, data layout: examples/common/wmt16_en_ro.sh and examples/common/nar_recipe.sh (run
# with MODEL=deer).
MODEL=deer exec bash "$(dirname "${BASH_SOURCE[0]}")/../common/wmt16_en_ro.sh" "$@"
