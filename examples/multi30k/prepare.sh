#!/usr/bin/env bash
# Prepare Multi30k en->de for fairseq: corpus checks, joint sentencepiece (8k), fairseq-preprocess (joined dict).
# Usage: examples/multi30k/prepare.sh DATA_DIR WORK_DIR   (writes WORK_DIR/spm and WORK_DIR/bin; reuses them if done)
set -euo pipefail
DATA=${1:?usage: prepare.sh DATA_DIR WORK_DIR}
WORK=${2:?usage: prepare.sh DATA_DIR WORK_DIR}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ ! -d "$DATA" ]; then
  echo "ERROR: data directory '$DATA' not found. Pass the Multi30k directory (e.g. make demo DATA=/path/to/multi30k-en-de)" >&2
  exit 1
fi
mkdir -p "$WORK"
if [ ! -f "$WORK/spm/.done" ]; then
  python "$ROOT/scripts/prepare_parallel.py" --data-dir "$DATA" --src en --tgt de \
    --train train --valid valid --test test_2016_flickr --out-dir "$WORK/spm" --vocab-size 8000
  touch "$WORK/spm/.done"
else echo "reusing $WORK/spm"; fi
if [ ! -f "$WORK/bin/.done" ]; then
  fairseq-preprocess --source-lang en --target-lang de --joined-dictionary \
    --trainpref "$WORK/spm/train" --validpref "$WORK/spm/valid" --testpref "$WORK/spm/test_2016_flickr" \
    --destdir "$WORK/bin" --workers 2 --log-format simple 2>&1 | grep --line-buffered -v -i "warn" | tail -n 4
  touch "$WORK/bin/.done"
else echo "reusing $WORK/bin"; fi
