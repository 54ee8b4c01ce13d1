#!/usr/bin/env bash
# BERT-NAR-BERT on SQuAD 1.1 question generation (Du et al. 2017 split; answer-aware with .ans files).
# Usage: examples/bnb/squad_qg.sh [DATA_DIR] [WORK_DIR] [MINUTES]
# Arguments, settings, data layout: examples/common/squad_qg.sh and examples/common/nar_recipe.sh (run
# with MODEL=bnb).
MODEL=bnb exec bash "$(dirname "${BASH_SOURCE[0]}")/../common/squad_qg.sh" "$@"
