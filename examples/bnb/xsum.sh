#!/usr/bin/env bash
# BERT-NAR-BERT on XSum summarization, scored with ROUGE.
# Usage: examples/bnb/xsum.sh TRAIN_DIR [WORK_DIR] [MINUTES]
# Arguments, settings, data layout: examples/common/xsum.sh and examples/common/nar_recipe.sh (run
# with MODEL=bnb).
MODEL=bnb exec bash "$(dirname "${BASH_SOURCE[0]}")/../common/xsum.sh" "$@"
