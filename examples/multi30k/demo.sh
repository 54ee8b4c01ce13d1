#!/usr/bin/env bash
# The main job: a non-autoregressive model that translates Multi30k en->de, trained here, on the CPU (or a GPU when
# torch sees one), in one command.
#   1. data: joint sentencepiece (8k) and fairseq-preprocess (examples/multi30k/prepare.sh)
#   2. AR teacher: fairseq transformer 3+3 x 256, TEACHER_UPDATES updates (examples/multi30k/teacher.sh; a teacher
#      already in WORK_DIR, e.g. make bench's converged one when WORK_DIR is its work directory, is reused as it is)
#   3. sequence-level distillation of the training set with the teacher (greedy, fairseq's procedure with beam 1)
#   4. NAR student: nat_ctc_transformer (3+3 x 256, CTC over 2x source frames, one decoder pass), warm-started from
#      the teacher's weights (--init-from-checkpoint) and trained STUDENT_UPDATES updates on the distilled data
#   5. fairseq-generate test_2016_flickr with the student (one pass) and the teacher (greedy): sacreBLEU with its
#      signature, decoding time, and five source / reference / NAR / AR examples
# Usage: examples/multi30k/demo.sh DATA_DIR WORK_DIR [STUDENT_UPDATES] [TEACHER_UPDATES]
#   Budgets are in updates, so that every machine trains the same models (2,048-token batches); the wall time
#   depends on the machine (see README). MAX_MINUTES (default 60) caps each of the two trainings all the same.
#   DATA_DIR  holds {train,valid,test_2016_flickr}.{en,de}, raw text (default ../shared/data/multi30k-en-de).
#             Outside this environment, get it with:
#               for f in train val test_2016_flickr; do wget https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/$f.{en,de}.gz; done
#             (then gunzip, and rename val.* to valid.*).
# Re-running reuses every finished step and resumes an interrupted training from its checkpoint_last.pt.
set -euo pipefail
DATA=${1:-../shared/data/multi30k-en-de}
WORK=${2:-work/demo}
STUDENT_UPDATES=${3:-500}
TEACHER_UPDATES=${4:-800}
MAX_MINUTES=${MAX_MINUTES:-60}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
# passive waiting: with busy-waiting OpenMP threads a shared CPU slows training about tenfold
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
DEVICE_FLAGS=${DEVICE_FLAGS:-$(python -c "import torch; print('' if torch.cuda.is_available() else '--cpu')")}
export DEVICE_FLAGS
T0=$(date +%s)

echo "== 1-3/5 data, AR teacher ($TEACHER_UPDATES updates) and greedy distillation ($WORK)"
# the teacher validates once per epoch only (VALIDATE_EVERY), and distils greedily: minutes, not hours
MAX_UPDATE=$TEACHER_UPDATES VALIDATE_EVERY=${VALIDATE_EVERY:-100000} DISTILL_BEAM=${DISTILL_BEAM:-1} \
  bash "$HERE/teacher.sh" "$DATA" "$WORK" "$MAX_MINUTES"
T1=$(date +%s)
TEACHER=$WORK/ckpt/transformer/checkpoint_best.pt

S=$WORK/ckpt/nat_ctc_warm
echo "== 4/5 NAR student: nat_ctc_transformer warm-started from the teacher, $STUDENT_UPDATES updates on the distilled data ($S)"
if [ -f "$S/.done" ]; then echo "reusing $S"; else
  mkdir -p "$S"
  # --ctc-normalization target_length: the form the README's demo figure was measured with (the criterion's default
  # became 'frames' after a BnB A/B; the demo's student has not been re-measured with it)
  # shellcheck disable=SC2086
  fairseq-train "$WORK/bin-distill" --user-dir "$USER_DIR" \
    --task translation_lev_ctc --upsample-ratio 2 --noise no_noise \
    --arch nat_ctc_transformer_small --share-all-embeddings --dropout 0.1 --init-from-checkpoint "$TEACHER" \
    --criterion ctc --label-smoothing 0.1 --ctc-normalization target_length \
    --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 1.0 \
    --lr 0.0007 --lr-scheduler inverse_sqrt --warmup-updates 100 --warmup-init-lr 1e-07 \
    --max-tokens 2048 --stop-time-hours "$(python -c "print($MAX_MINUTES / 60)")" --max-update "$STUDENT_UPDATES" \
    --save-dir "$S" --no-epoch-checkpoints --save-interval-updates 200 --keep-interval-updates 1 \
    $DEVICE_FLAGS --num-workers 0 --data-buffer-size 0 --seed 1 --log-format simple --log-interval 50 2>&1 \
    | tee -a "$S/train.log" | grep --line-buffered -E "train_inner|valid on|done training|warm_start|ERROR|Error" || true
  [ -f "$S/checkpoint_last.pt" ] || { echo "ERROR: the student wrote no checkpoint (see $S/train.log)" >&2; exit 1; }
  touch "$S/.done"
fi
T2=$(date +%s)

echo "== 5/5 fairseq-generate test_2016_flickr: NAR student (one pass) and AR teacher (greedy); sacreBLEU"
gen() {  # NAME CHECKPOINT FLAGS...: decode the test set, print fairseq's timing line and the sacreBLEU line
  local name=$1 ckpt=$2; shift 2
  # shellcheck disable=SC2086
  fairseq-generate "$WORK/bin" --user-dir "$USER_DIR" --gen-subset test --path "$ckpt" "$@" \
    --batch-size 64 --required-batch-size-multiple 1 --bpe sentencepiece --sentencepiece-model "$WORK/spm/spm.model" \
    $DEVICE_FLAGS > "$WORK/generate-$name.out" 2> "$WORK/generate-$name.log" \
    || { echo "ERROR: fairseq-generate failed for $name:" >&2; tail -n 20 "$WORK/generate-$name.log" >&2; exit 1; }
  echo "$name: $(grep "Translated" "$WORK/generate-$name.log" | sed 's/.*INFO | fairseq_cli.generate | //')"
  python "$ROOT/scripts/score_generate.py" --generate-output "$WORK/generate-$name.out" \
    --reference "$WORK/spm/raw/test_2016_flickr.de" --hyp-out "$WORK/hyp-$name.de" | tee "$WORK/bleu-$name.txt"
}
gen nar "$S/checkpoint_last.pt" --task translation_lev_ctc --upsample-ratio 2 --iter-decode-max-iter 0
gen ar "$TEACHER" --task translation --beam 1 --max-len-a 1.2 --max-len-b 10
echo
echo "== five examples (source / reference / NAR student / AR teacher)"
python - "$WORK" <<'PY'
import sys
work = sys.argv[1]
read = lambda p: open(p, encoding="utf-8").read().splitlines()
src, ref = read(f"{work}/spm/raw/test_2016_flickr.en"), read(f"{work}/spm/raw/test_2016_flickr.de")
nar, ar = read(f"{work}/hyp-nar.de"), read(f"{work}/hyp-ar.de")
for i in (0, 100, 250, 500, 750):
    print(f"[{i}] SRC {src[i]}\n    REF {ref[i]}\n    NAR {nar[i]}\n    AR  {ar[i]}")
PY
T3=$(date +%s)
echo "== done: data + teacher + distillation $((T1 - T0)) s, student $((T2 - T1)) s, decoding $((T3 - T2)) s, whole demo $((T3 - T0)) s"
