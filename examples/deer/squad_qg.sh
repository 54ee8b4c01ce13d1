#!/usr/bin/env bash
# DEER on SQuAD 1.1 question generation (Du et al. 2017 split; paper Table 2, RoBERTa backbone).
# Usage: examples/deer/squad_qg.sh [DATA_DIR] [WORK_DIR] [MINUTES]
# Arguments, settings, data layout: examples/common/squad_qg.sh and examples/common/nar_recipe.sh (run
# with MODEL=deer).
MODEL=deer exec bash "$(dirname "${BASH_SOURCE[0]}")/../common/squad_qg.sh" "$@"
