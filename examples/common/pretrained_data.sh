# Shared by examples/common/nar_recipe.sh and examples/qg/bench.sh: source it, do not run it.

# prepare_pretrained_data CHECKPOINT TEXT_DIR SRC TGT WORK_DIR: the data steps of a pretrained NAR model.
#   1. scripts/convert_pretrained.py CHECKPOINT -> WORK_DIR/pretrained (backbone.pt, dict.txt, tokenizer files)
#   2. TEXT_DIR/{train,valid,test}.{SRC,TGT} tokenized with the checkpoint's own tokenizer -> WORK_DIR/tok
#   3. fairseq-preprocess with the checkpoint's dictionary (--joined-dictionary) -> WORK_DIR/bin
# Each step leaves a .done marker and is reused on a rerun; logs in WORK_DIR/logs; a failing step shows its log's
# tail and returns 1. PYTHON (default python) runs the scripts.
prepare_pretrained_data() {
  local ckpt=$1 text=$2 src=$3 tgt=$4 work=$5
  local root python=${PYTHON:-python} pt=$5/pretrained tok=$5/tok bin=$5/bin split l ins=() outs=()
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  mkdir -p "$work/logs"
  _logged() {  # LOG CMD ...: run CMD into LOG; on failure show its tail
    local log=$1; shift
    "$@" > "$log" 2>&1 || { echo "ERROR: $1 failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; return 1; }
  }
  echo "-- convert the checkpoint ($pt)"
  if [ ! -f "$pt/.done" ]; then
    _logged "$work/logs/convert.log" "$python" "$root/scripts/convert_pretrained.py" "$ckpt" --out-dir "$pt" || return 1
    touch "$pt/.done"
  else echo "reusing $pt"; fi
  echo "-- tokenize with the checkpoint's tokenizer ($tok)"
  if [ ! -f "$tok/.done" ]; then
    mkdir -p "$tok"
    for split in train valid test; do for l in "$src" "$tgt"; do
      ins+=("$text/$split.$l"); outs+=("$tok/$split.$l")
    done; done
    _logged "$work/logs/tokenize.log" "$python" "$root/scripts/prepare_pretrained_text.py" encode \
      --checkpoint "$pt" --inputs "${ins[@]}" --outputs "${outs[@]}" || return 1
    touch "$tok/.done"
  else echo "reusing $tok"; fi
  echo "-- fairseq-preprocess with the checkpoint's dictionary ($bin)"
  if [ ! -f "$bin/.done" ]; then
    _logged "$work/logs/preprocess.log" fairseq-preprocess --user-dir "$root/fairseq_nar_plugins" --source-lang "$src" \
      --target-lang "$tgt" --joined-dictionary --srcdict "$pt/dict.txt" --trainpref "$tok/train" \
      --validpref "$tok/valid" --testpref "$tok/test" --destdir "$bin" --workers "$(nproc)" || return 1
    touch "$bin/.done"
  else echo "reusing $bin"; fi
}
