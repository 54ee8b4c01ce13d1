#!/usr/bin/env bash
# DEER on IWSLT'14 de->en (paper Table 1; raw references, or distilled with DISTILL=1).
# Usage: examples/deer/iwslt14_de_en.sh TRAIN_DIR [WORK_DIR] [MINUTES]
# Arguments, settings, data layout: examples/common/iwslt14_de_en.sh and examples/common/nar_recipe.sh (run
# with MODEL=deer).
MODEL=deer exec bash "$(dirname "${BASH_SOURCE[0]}")/../common/iwslt14_de_en.sh" "$@"
