#!/usr/bin/env bash
# DEER's editor on the toy translation task of the tests (tests/toy_data.py): train deer_tiny for UPDATES updates,
# then decode the test split with 0, 1 and 2 editor iterations and print fairseq's BLEU for each. This is the
# experiment behind the README's editor figures; pass --no-editor-ctc-roll-in to train the editor as the paper does.
# Usage: examples/deer/toy_editor.sh WORK_DIR [UPDATES] [extra fairseq-train flags...]
set -euo pipefail
WORK=${1:?usage: toy_editor.sh WORK_DIR [UPDATES] [fairseq-train flags...]}
UPDATES=${2:-300}
shift $(( $# >= 2 ? 2 : 1 ))
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
WORK=$(mkdir -p "$WORK" && cd "$WORK" && pwd)
if [ ! -d "$WORK/bin" ]; then
  (cd "$ROOT/tests" && "$PYTHON" -c "
from toy_data import write_toy_corpus; from helpers_cli import preprocess_toy
preprocess_toy(write_toy_corpus('$WORK/raw'), '$WORK/bin')")
fi
rm -rf "$WORK/ckpt"
fairseq-train "$WORK/bin" --user-dir "$ROOT/fairseq_nar_plugins" --task translation_lev_ctc --noise random_delete \
  --arch deer_tiny --criterion ctc --label-smoothing 0.1 --glancing-ratio 0.5:0.2@300 --optimizer adam \
  --adam-betas '(0.9,0.98)' --lr 0.003 --lr-scheduler inverse_sqrt --warmup-updates 100 --warmup-init-lr 1e-07 \
  --max-tokens 2048 --max-update "$UPDATES" --dropout 0.0 --attention-dropout 0.0 --save-dir "$WORK/ckpt" \
  --no-epoch-checkpoints --cpu --num-workers 0 --data-buffer-size 0 --seed 1 --disable-validation \
  --log-format simple --log-interval 100 "$@" 2>&1 | grep -E "train_inner|Error" | tail -n 1
for it in 0 1 2; do
  fairseq-generate "$WORK/bin" --user-dir "$ROOT/fairseq_nar_plugins" --task translation_lev_ctc \
    --path "$WORK/ckpt/checkpoint_last.pt" --gen-subset test --batch-size 100 --required-batch-size-multiple 1 \
    --cpu --iter-decode-max-iter "$it" 2>/dev/null | grep "BLEU4" | sed "s/^/editor steps $it: /"
done
