#!/usr/bin/env bash
# DEER on XSum summarization (paper Table 2, RoBERTa backbone), scored with ROUGE.
# Usage: examples/deer/xsum.sh TRAIN_DIR [WORK_DIR] [MINUTES]
# Arguments, settings, data layout: examples/common/xsum.sh and examples/common/nar_recipe.sh (run
# with MODEL=deer).
MODEL=deer exec bash "$(dirname "${BASH_SOURCE[0]}")/../common/xsum.sh" "$@"
