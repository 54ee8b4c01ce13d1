#!/usr/bin/env bash
# Prepare Multi30k en->de for fairseq: corpus checks, joint sentencepiece (8k), fairseq-preprocess (joined dict).
# Usage: [VOCAB_SIZE=N] examples/multi30k/prepare.sh DATA_DIR WORK_DIR   (writes WORK_DIR/spm and WORK_DIR/bin;
#        reuses them if done; VOCAB_SIZE: sentencepiece vocabulary size, default 8000, lower it for a small corpus)
# Splits: train, valid, test = test_2016_flickr, and test1 = test_2017_flickr when DATA_DIR has it (also added to a
# WORK_DIR prepared before, with the same sentencepiece model and dictionaries).
set -euo pipefail
DATA=${1:?usage: prepare.sh DATA_DIR WORK_DIR}
WORK=${2:?usage: prepare.sh DATA_DIR WORK_DIR}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export ROOT_DIR=$ROOT
if [ ! -d "$DATA" ]; then
  echo "ERROR: data directory '$DATA' not found. Pass the Multi30k directory (e.g. make demo DATA=/path/to/multi30k-en-de)" >&2
  exit 1
fi
mkdir -p "$WORK"
if [ ! -f "$WORK/spm/.done" ]; then
  python "$ROOT/scripts/prepare_parallel.py" --data-dir "$DATA" --src en --tgt de \
    --train train --valid valid --test test_2016_flickr --out-dir "$WORK/spm" --vocab-size "${VOCAB_SIZE:-8000}"
  touch "$WORK/spm/.done"
else echo "reusing $WORK/spm"; fi
if [ ! -f "$WORK/bin/.done" ]; then
  fairseq-preprocess --source-lang en --target-lang de --joined-dictionary \
    --trainpref "$WORK/spm/train" --validpref "$WORK/spm/valid" --testpref "$WORK/spm/test_2016_flickr" \
    --destdir "$WORK/bin" --workers 2 --log-format simple 2>&1 | grep --line-buffered -v -i "warn" | tail -n 4
  touch "$WORK/bin/.done"
else echo "reusing $WORK/bin"; fi
if [ -f "$DATA/test_2017_flickr.en" ] && [ ! -f "$WORK/bin/.test1.done" ]; then
  python - "$DATA" "$WORK" <<'PY'
import os, sys
sys.path.insert(0, os.environ.get("ROOT_DIR", "."))
import sentencepiece as spm
from fairseq_nar_plugins.data.parallel_corpus import CorpusError, read_parallel_split
data, work = sys.argv[1:3]
try:
    src, tgt, report = read_parallel_split(data, "test_2017_flickr", "en", "de", training=False)
except CorpusError as e:
    sys.exit(f"ERROR: {e}")
print(f"| {report.describe()}")
sp = spm.SentencePieceProcessor(model_file=os.path.join(work, "spm", "spm.model"))
for lang, lines in (("en", src), ("de", tgt)):
    with open(os.path.join(work, "spm", "raw", f"test_2017_flickr.{lang}"), "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    with open(os.path.join(work, "spm", f"test_2017_flickr.{lang}"), "w", encoding="utf-8") as f:
        f.writelines(" ".join(sp.encode(line, out_type=str)) + "\n" for line in lines)
PY
  rm -rf "$WORK/bin-test1"
  fairseq-preprocess --source-lang en --target-lang de --srcdict "$WORK/bin/dict.en.txt" --tgtdict "$WORK/bin/dict.de.txt" \
    --testpref "$WORK/spm/test_2017_flickr" --destdir "$WORK/bin-test1" --workers 1 --log-format simple 2>&1 \
    | grep --line-buffered -v -i "warn" | tail -n 1
  for f in "$WORK"/bin-test1/test.en-de.*; do mv "$f" "$WORK/bin/test1${f##*/test}"; done
  rm -rf "$WORK/bin-test1"
  touch "$WORK/bin/.test1.done"
fi
