#!/usr/bin/env bash
# ELMER on SQuAD 1.1 question generation (Li et al. 2022, arXiv:2210.13304, Table 1): "answer [SEP] passage ->
# question" when DATA_DIR has .ans files (the paper's input, its Table 7), else sentence -> question (Du et al. 2017).
# Usage: examples/elmer/squad_qg.sh [DATA_DIR] [WORK_DIR] [MINUTES]
#   DATA_DIR default ../shared/data/squad-qg-du2017. Details: examples/common/squad_qg.sh, examples/common/nar_recipe.sh.
# Settings: EXIT_MODE soft (default) or hard (THRESHOLDS '0 0.5 1.0'); a fixed canvas of CANVAS_MAX=40 positions
# (questions are ~12 words); RESTORE=<examples/elmer/pretrain.sh checkpoint> fine-tunes an LPLM-pretrained model.
# Scores: BLEU-4 / ROUGE-L / METEOR (the paper's).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODEL=elmer CANVAS_RATIO=${CANVAS_RATIO:-0} CANVAS_MAX=${CANVAS_MAX:-40} LR=${LR:-1e-4} \
  exec bash "$HERE/../common/squad_qg.sh" "$@"
