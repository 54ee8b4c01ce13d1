#!/usr/bin/env bash
# ELMER on the toy translation task of the tests (tests/toy_data.py: a deterministic lexicon, some words become two):
# soft exit and hard exit trained from random weights with fairseq-train, decoded with fairseq-generate, and the hard
# model's exits and speed per threshold (examples/elmer/exit_report.py). A CPU run of a few minutes.
# Usage: examples/elmer/toy.sh [WORK_DIR] [UPDATES]   (default work/elmer-toy, 400 updates per model)
# Settings: THRESHOLDS (default '0.25 0.5 1.0 2.5'), REPEATS (timed rounds, default 3), PYTHON (python).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${1:-$ROOT/work/elmer-toy}
UPDATES=${2:-400}
PYTHON=${PYTHON:-python}
THRESHOLDS=${THRESHOLDS:-0.25 0.5 1.0 2.5}
REPEATS=${REPEATS:-3}
USER_DIR=$ROOT/fairseq_nar_plugins
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
mkdir -p "$WORK/logs"
if [ ! -f "$WORK/bin/.done" ]; then
  "$PYTHON" -c "import sys; sys.path.insert(0, '$ROOT/tests'); from toy_data import write_toy_corpus; \
write_toy_corpus('$WORK/raw')"
  fairseq-preprocess --source-lang src --target-lang tgt --joined-dictionary --workers 1 --trainpref "$WORK/raw/train" \
    --validpref "$WORK/raw/valid" --testpref "$WORK/raw/test" --destdir "$WORK/bin" > "$WORK/logs/preprocess.log" 2>&1
  touch "$WORK/bin/.done"
fi
# the flags of tests/test_elmer.py's end-to-end tests
COMMON=(--user-dir "$USER_DIR" --task translation_lev --noise full_mask --arch elmer_tiny --canvas-ratio 1.5
        --canvas-offset 2 --criterion layer_permutation --optimizer adam --adam-betas '(0.9, 0.98)' --lr 0.003
        --lr-scheduler inverse_sqrt --warmup-updates 100 --warmup-init-lr 1e-07 --max-tokens 2048
        --max-update "$UPDATES" --dropout 0.0 --no-epoch-checkpoints --cpu --num-workers 0 --seed 1
        --log-format simple --log-interval 100)
for mode in soft hard; do
  flags=(--exit-mode "$mode"); [ "$mode" = hard ] && flags+=(--hard-exit-loss exit)
  echo "== ELMER $mode: fairseq-train, $UPDATES updates ($WORK/$mode)"
  fairseq-train "$WORK/bin" "${COMMON[@]}" "${flags[@]}" --save-dir "$WORK/$mode" > "$WORK/logs/train.$mode.log" 2>&1 \
    || { tail -n 30 "$WORK/logs/train.$mode.log" >&2; exit 1; }
  grep '| valid |' "$WORK/logs/train.$mode.log" | tail -n 1 | sed 's/.*| valid |/valid |/'
  fairseq-generate "$WORK/bin" --user-dir "$USER_DIR" --task translation_lev --path "$WORK/$mode/checkpoint_last.pt" \
    --gen-subset test --iter-decode-max-iter 0 --batch-size 64 --required-batch-size-multiple 1 --cpu \
    > "$WORK/generate.$mode.out" 2> "$WORK/logs/generate.$mode.log" || { tail -n 30 "$WORK/logs/generate.$mode.log"; exit 1; }
  echo "fairseq-generate: $(tail -n 1 "$WORK/generate.$mode.out")"
done
echo "== ELMER hard: exits and speed per threshold"
"$PYTHON" "$HERE/exit_report.py" --data "$WORK/bin" --path "$WORK/hard/checkpoint_last.pt" --thresholds $THRESHOLDS \
  --reference "$WORK/raw/test.tgt" --repeats "$REPEATS" --json "$WORK/exit_report.json"
