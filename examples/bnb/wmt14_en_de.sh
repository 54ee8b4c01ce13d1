#!/usr/bin/env bash
# BERT-NAR-BERT on WMT'14 en->de.
# Usage: examples/bnb/wmt14_en_de.sh TRAIN_DIR [WORK_DIR] [MINUTES]
# Arguments, settings, data layout: examples/common/wmt14_en_de.sh and examples/common/nar_recipe.sh (run
# with MODEL=bnb).
MODEL=bnb exec bash "$(dirname "${BASH_SOURCE[0]}")/../common/wmt14_en_de.sh" "$@"
