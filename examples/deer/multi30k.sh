#!/usr/bin/env bash
# DEER on Multi30k en->de (raw references, or distilled with DISTILL=1 through scripts/distill.py).
# Usage: examples/deer/multi30k.sh [DATA_DIR] [WORK_DIR] [MINUTES]
# Arguments, settings, data layout: examples/common/multi30k.sh and examples/common/nar_recipe.sh (run
# with MODEL=deer).
MODEL=deer exec bash "$(dirname "${BASH_SOURCE[0]}")/../common/multi30k.sh" "$@"
