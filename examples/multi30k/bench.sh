#!/usr/bin/env bash
# make bench: every Multi30k en->de system trained on the same distilled data under one CPU budget, one benchmark run.
#   1. the AR teacher and its distilled data (examples/multi30k/teacher.sh: trained until its validation BLEU stops
#      improving, beam-4 distillation; built once, reused by every later run)
#   2. each system in SYSTEMS trained on the distilled data for MINUTES (one thread each, LANES jobs at a time),
#      validation sacreBLEU every EVAL_EVERY updates (--eval-bleu), checkpoint_best.pt = best validation BLEU:
#        nat_ctc_transformer  ours: CTC NAT, 3+3 x 256
#        nat_ctc_warm         the same, post-LN like the teacher and warm-started from its weights (--init-from-checkpoint)
#        bnb / bnb_lc         ours: BERT-NAR-BERT (random init, the 8k joint vocabulary), CTC / length classification
#                             (bnb_lc: classes relative to the source length, pooled encoder states; bnb_lc_paper:
#                             the paper's absolute classes from the pooled latent z)
#        deer                 ours: one 6 x 256 stack (= the 3+3 of the others), CTC + Levenshtein editor, block pruning;
#                             the CTC generator alone for DEER_EDITOR_START updates (600), then the editor too
#        bnb_warm / deer_warm / elmer_warm   the same as bnb / deer / elmer, warm-started from the teacher (--init-from-checkpoint: its layers
#                             and embeddings; DEER's stack takes its encoder layers, then its decoder layers)
#        bnb_lc_warm[_offset|_encoder|_encoder_offset]   bnb_lc warm-started, length classes absolute or relative to the
#                             source, pooled over z (the paper) or the encoder states: the review's B3 comparison
#        bnb_warm_frames      bnb_warm with --ctc-normalization frames written out (the D3 A/B of 2026-12-02; frames is now
#                             the default, so bnb_warm trained since then is the same; bnb_warm_target_length: the other)
#        elmer                ours: early-exit NAR decoder over a [MASK] canvas (soft exit; LPLM loss), 3+3 x 256
#        cmlm_transformer, nonautoregressive_transformer   fairseq's peers (mask-predict; vanilla NAT)
#        cmlm_warm / nonautoregressive_warm   the same peers warm-started from the teacher like the *_warm systems
#                             (fairseq's models have no --init-from-checkpoint: scripts/save_initial_checkpoint.py
#                             --warm-start-from writes the starting checkpoint, fairseq-train --finetune-from-model)
#        NAME_bf16            system NAME trained with --autocast-bf16 (bfloat16 mixed precision, fp32 weights)
#   3. scripts/benchmark.py --mode full on test_2016_flickr (timed) and test_2017_flickr (scored): sacreBLEU with its
#      signature, chrF, output tokens, batch-1 latency and batch-64 throughput as ratios to AR greedy in the same run,
#      parameters, % of the matmul peak -> WORK/report (report.md, results.csv, plot.png = the Pareto plot)
#   4. scripts/learning_curve.py: validation BLEU against CPU-minutes, one line per system -> WORK/report/curve.png
#   5. README.md's results section and docs/bench.png, docs/curve.png are replaced by this run's
# Usage: examples/multi30k/bench.sh DATA_DIR WORK_DIR MINUTES_PER_SYSTEM
# BENCH_ARGS: more scripts/benchmark.py flags (e.g. "--throughput-batches 4 --no-profile").
# TRAIN_ONLY=1 stops after step 2 (e.g. to train some SYSTEMS now and benchmark all of them later).
# REPORT=DIR writes steps 3-4 there (default WORK/report); UPDATE_README=0 leaves README.md, docs/benchmark.md and
# docs/*.png as they are (a partial run beside the front-page one). BENCH_ARGS="--autocast-bf16" times every system,
# the AR baseline included, in bfloat16.
# MAX_UPDATE=N also stops each training after N updates (equal compute for an A/B when jobs share a core).
# Resumable: each finished step leaves a .done marker; an interrupted training resumes from its checkpoint_last.pt
# and fairseq counts the time of earlier runs against the budget. To train a system longer, delete its .done marker
# and rerun with a larger MINUTES.
set -euo pipefail
DATA=${1:-../shared/data/multi30k-en-de}
WORK=${2:-work/bench}
MINUTES=${3:-60}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
# shellcheck source=../common/lanes.sh
source "$ROOT/examples/common/lanes.sh"
SYSTEMS=${SYSTEMS:-"nat_ctc_transformer nat_ctc_warm deer deer_warm bnb bnb_warm bnb_lc elmer elmer_warm \
cmlm_transformer nonautoregressive_transformer"}
LANES=${LANES:-$(nproc)}
EVAL_EVERY=${EVAL_EVERY:-200}
# DEER trains its one-step CTC generator alone for this many updates, then the editor too (--editor-start-update; the
# CTC-first curriculum of docs/deer.md: about 5 CPU-s an update before, 10 after, on one core: give DEER MINUTES >= 120)
DEER_EDITOR_START=${DEER_EDITOR_START:-600}
REPORT=${REPORT:-$WORK/report}
TEACHER_MINUTES=${TEACHER_MINUTES:-150}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
DEVICE_FLAGS=${DEVICE_FLAGS:-$(python -c "import torch; print('' if torch.cuda.is_available() else '--cpu')")}
export DEVICE_FLAGS
T0=$(date +%s)

echo "== 1/5 data, AR teacher and distilled data"
TEACHER_THREADS=${TEACHER_THREADS:-$(nproc)}
OMP_NUM_THREADS=$TEACHER_THREADS bash "$HERE/teacher.sh" "$DATA" "$WORK" "$TEACHER_MINUTES"
D=$WORK/bin-distill
for f in "$WORK"/bin/test1.*; do [ -e "$D/${f##*/}" ] || cp "$f" "$D/"; done

SIZE="--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 \
  --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4"
STACK="--encoder-layers 3 --encoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --encoder-attention-heads 4"
EVAL="--eval-bleu --eval-bleu-remove-bpe sentencepiece --eval-bleu-detok space --eval-bleu-interval-updates $EVAL_EVERY \
  --validate-interval-updates $EVAL_EVERY --best-checkpoint-metric bleu --maximize-best-checkpoint-metric"
ONE_PASS='{"iter_decode_max_iter": 0}'
# the *_warm systems: their random-init flags, then (the last flag wins) the teacher's weights and nat_ctc_warm's lr
WARM="--init-from-checkpoint $WORK/ckpt/transformer/checkpoint_best.pt --lr 0.0007 --warmup-updates 100"

flags() {  # the training flags of system $1 (its task, architecture, criterion and optimiser settings)
  case $1 in
    nat_ctc_transformer) echo "--task translation_lev_ctc --noise no_noise --arch nat_ctc_transformer_small \
      --share-all-embeddings --encoder-normalize-before --decoder-normalize-before --dropout 0.1 \
      --criterion ctc --label-smoothing 0.1 --lr 0.002 --warmup-updates 100" ;;
    nat_ctc_warm) echo "--task translation_lev_ctc --noise no_noise --arch nat_ctc_transformer_small \
      --share-all-embeddings --dropout 0.1 --init-from-checkpoint $WORK/ckpt/transformer/checkpoint_best.pt \
      --criterion ctc --label-smoothing 0.1 --lr 0.0007 --warmup-updates 100" ;;
    bnb) echo "--task translation_lev_ctc --noise full_mask --arch bnb_tiny --length-mode ctc $STACK \
      --share-all-embeddings --criterion ctc --label-smoothing 0.1 --lr 0.001 --warmup-updates 200" ;;
    bnb_warm) echo "$(flags bnb) $WARM" ;;
    bnb_warm_frames) echo "$(flags bnb_warm) --ctc-normalization frames" ;;  # the D3 A/B: the DEER authors' CTC form
    bnb_warm_target_length) echo "$(flags bnb_warm) --ctc-normalization target_length" ;;  # its other arm
    bnb_lc_paper) echo "--task translation_lev_bleu --noise full_mask --arch bnb_tiny --length-mode lc $STACK \
      --share-all-embeddings --criterion nat_loss --label-smoothing 0.1 --length-loss-factor 0.1 \
      --lr 0.001 --warmup-updates 200" ;;  # the paper's p(l|z): absolute length classes from the pooled latent
    # bnb_lc: the length classifier that predicted lengths best in the B3 comparison (docs/bnb.md, 2026-12-02)
    bnb_lc) echo "$(flags bnb_lc_paper) --length-pooling encoder --pred-length-offset" ;;
    bnb_lc_warm) echo "$(flags bnb_lc_paper) $WARM" ;;  # review B3 (scripts/length_accuracy.py); the paper's form
    bnb_lc_warm_offset) echo "$(flags bnb_lc_warm) --pred-length-offset" ;;  # classes = target - source length
    bnb_lc_warm_encoder) echo "$(flags bnb_lc_warm) --length-pooling encoder" ;;  # pooled encoder states, not z
    bnb_lc_warm_encoder_offset) echo "$(flags bnb_lc_warm_encoder) --pred-length-offset" ;;
    deer) echo "--task translation_lev_ctc --noise random_delete --arch deer_tiny --encoder-layers 6 \
      --encoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --share-all-embeddings \
      --prune --prune-sizes 1.0,0.75,0.5,0.25 --criterion ctc --label-smoothing 0.1 --lr 0.001 --warmup-updates 200 \
      --editor-start-update $DEER_EDITOR_START" ;;
    deer_warm) echo "$(flags deer) $WARM" ;;
    cmlm_transformer) echo "--task translation_lev_bleu --noise random_mask --arch cmlm_transformer $SIZE \
      --share-all-embeddings --apply-bert-init --dropout 0.1 --criterion nat_loss --label-smoothing 0.1 \
      --length-loss-factor 0.1 --lr 0.001 --warmup-updates 200" ;;
    nonautoregressive_transformer) echo "--task translation_lev_bleu --noise full_mask \
      --arch nonautoregressive_transformer $SIZE --share-all-embeddings --apply-bert-init --src-embedding-copy \
      --pred-length-offset --length-loss-factor 0.1 --dropout 0.1 --criterion nat_loss --label-smoothing 0.1 \
      --lr 0.001 --warmup-updates 200" ;;
    elmer) echo "--task translation_lev_bleu --noise full_mask --arch elmer_small --exit-mode soft \
      --share-all-embeddings --criterion layer_permutation --canvas-ratio 1.3 --canvas-offset 4 --canvas-max-length 128 \
      --dropout 0.1 --label-smoothing 0.1 --lr 0.001 --warmup-updates 200" ;;
    elmer_warm) echo "$(flags elmer) $WARM" ;;
    cmlm_warm) echo "$(flags cmlm_transformer) --lr 0.0007 --warmup-updates 100" ;;  # + start_flags: the teacher
    nonautoregressive_warm) echo "$(flags nonautoregressive_transformer) --lr 0.0007 --warmup-updates 100" ;;
    *_bf16) echo "$(flags "${1%_bf16}") --autocast-bf16" ;;  # the same system in bfloat16 mixed precision
    *) echo "ERROR: unknown system '$1' in SYSTEMS (known: nat_ctc_transformer nat_ctc_warm bnb bnb_warm bnb_warm_frames \
bnb_warm_target_length bnb_lc bnb_lc_paper bnb_lc_warm bnb_lc_warm_offset bnb_lc_warm_encoder \
bnb_lc_warm_encoder_offset deer deer_warm elmer elmer_warm cmlm_transformer nonautoregressive_transformer cmlm_warm \
nonautoregressive_warm; NAME_bf16: NAME with --autocast-bf16)" >&2; return 1 ;;
  esac
}
eval_args() {  # validation decoding: one pass, except the iterative systems' headline settings
  case $1 in
    deer|deer_warm) echo '{"iter_decode_max_iter": 2}' ;;
    cmlm_transformer|cmlm_warm) echo '{"iter_decode_max_iter": 9}' ;;
    *_bf16) eval_args "${1%_bf16}" ;;
    *) echo "$ONE_PASS" ;;
  esac
}
for s in $SYSTEMS; do flags "$s" >/dev/null; done  # unknown names fail before any training

common_args() {  # NAME: sets the array ARGS to every training flag of system NAME but the budget and the save directory
  # shellcheck disable=SC2206
  ARGS=($(flags "$1") $EVAL --eval-bleu-args "$(eval_args "$1")" --optimizer adam --adam-betas '(0.9,0.98)' \
    --clip-norm 1.0 --lr-scheduler inverse_sqrt --warmup-init-lr 1e-07 --max-tokens 2048 $DEVICE_FLAGS --num-workers 0 \
    --data-buffer-size 0 --seed 1)
}
start_flags() {  # NAME DIR: fairseq's peers warm-started from the teacher: write DIR/warm_start.pt once (the model as
  # built, then every teacher tensor of the same name and shape), then fairseq-train --finetune-from-model, which
  # uses it at the first launch only (a resumed run continues from its checkpoint_last.pt)
  local name=$1 dir=$2
  case ${name%_bf16} in cmlm_warm|nonautoregressive_warm) ;; *) return 0 ;; esac
  if [ ! -f "$dir/warm_start.pt" ]; then
    common_args "$name"
    OMP_NUM_THREADS=1 python "$ROOT/scripts/save_initial_checkpoint.py" "$D" --user-dir "$USER_DIR" "${ARGS[@]}" \
      --save-dir "$dir" --warm-start-from "$WORK/ckpt/transformer/checkpoint_best.pt" --output "$dir/warm_start.pt.tmp" \
      >> "$dir/train.log" 2>&1 || { echo "ERROR: $name: warm start failed; see $dir/train.log" >&2; return 1; }
    mv "$dir/warm_start.pt.tmp" "$dir/warm_start.pt"
  fi
  echo "--finetune-from-model $dir/warm_start.pt"
}

train() {  # NAME: train one system (one thread), resumable; log in WORK/ckpt/NAME/train.log
  local name=$1 dir=$WORK/ckpt/$1 start
  begin_training "$name" "$dir" "$MINUTES" || return 0
  start=$(start_flags "$name" "$dir") || return 1
  common_args "$name"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 fairseq-train "$D" --user-dir "$USER_DIR" "${ARGS[@]}" $start \
    --stop-time-hours "$(python -c "print($MINUTES / 60)")" --max-update "${MAX_UPDATE:-1000000}" \
    --save-dir "$dir" --no-epoch-checkpoints --save-interval-updates "$EVAL_EVERY" --keep-interval-updates 1 \
    --log-format simple --log-interval 100 \
    >> "$dir/train.log" 2>&1 || { echo "ERROR: $name failed; the end of $dir/train.log:" >&2; tail -n 20 "$dir/train.log" >&2; return 1; }
  finish_training "$name" "$dir"
}

echo "== 2/5 NAR systems on the distilled data: $SYSTEMS ($MINUTES min each, $LANES at a time)"
run_lanes train "$SYSTEMS" "$LANES" || exit 1
if [ "${TRAIN_ONLY:-0}" = 1 ]; then echo "== TRAIN_ONLY=1: stopping after training"; exit 0; fi

echo "== 3/5 benchmark (full mode, test_2016_flickr timed, test_2017_flickr scored)"
CKPTS=(--checkpoint "transformer=$WORK/ckpt/transformer/checkpoint_best.pt")
MARGS=(--model-args "transformer=--max-len-a 1.2 --max-len-b 10")
for s in $SYSTEMS; do
  base=${s%_bf16}  # NAME_bf16: NAME trained with --autocast-bf16; its labels get "-bf16"
  case $base in  # the benchmark's model names (evaluation/registry.py); a label tells two checkpoints of one model apart
    nat_ctc_warm) keys=("nat_ctc_transformer@warm-start") ;;
    bnb_warm) keys=("bnb@warm-start") ;;
    bnb_warm_frames) keys=("bnb@warm-start-frames") ;;
    bnb_warm_target_length) keys=("bnb@warm-start-target-length") ;;
    bnb_lc_paper) keys=("bnb_lc@paper") ;;
    bnb_lc_warm*) keys=("bnb_lc@${base#bnb_lc_}") ;;
    deer) keys=("deer" "deer@50%") ;;
    deer_warm) keys=("deer@warm-start" "deer@warm-start-50%") ;;
    elmer) keys=("elmer" "elmer_hard") ;;
    elmer_warm) keys=("elmer@warm-start") ;;
    cmlm_warm) keys=("cmlm_transformer@warm-start") ;;
    nonautoregressive_warm) keys=("nonautoregressive_transformer@warm-start") ;;
    *) keys=("$base") ;;
  esac
  for key in "${keys[@]}"; do
    if [ "$s" != "$base" ]; then
      case $key in *@*) key=$key-bf16 ;; *) key=$key@bf16 ;; esac
    fi
    CKPTS+=(--checkpoint "$key=$WORK/ckpt/$s/checkpoint_best.pt")
    case $key in *50%*) MARGS+=(--model-args "$key=--model-overrides {'prune_size':0.5}") ;; esac
  done
done
OMP_NUM_THREADS=${BENCH_THREADS:-1} python "$ROOT/scripts/benchmark.py" --mode full --out-dir "$REPORT" \
  --data "$WORK/bin" --reference "$WORK/spm/raw/test_2016_flickr.de" \
  --extra-test "test1=$WORK/spm/raw/test_2017_flickr.de" --threads "${BENCH_THREADS:-1}" \
  --latency-sentences "${LATENCY_SENTENCES:-64}" --repeats "${BENCH_REPEATS:-3}" ${BENCH_ARGS:-} \
  --fairseq-args "--bpe sentencepiece --sentencepiece-model $WORK/spm/spm.model" "${CKPTS[@]}" "${MARGS[@]}"

echo "== 4/5 learning curves"
CURVES=("AR teacher=$WORK/ckpt/transformer/train.log")
for s in $SYSTEMS; do CURVES+=("$s=$WORK/ckpt/$s/train.log"); done
python "$ROOT/scripts/learning_curve.py" "${CURVES[@]}" --threads 1 --threads "AR teacher=$TEACHER_THREADS" --csv "$REPORT/curve.csv" \
  --png "$REPORT/curve.png"

if [ "${UPDATE_README:-1}" = 0 ]; then echo "== UPDATE_README=0: report in $REPORT, README untouched"; exit 0; fi
echo "== 5/5 README results (front-page table) and docs/benchmark.md (full report)"
NOTE="make bench: every NAR system trained $MINUTES CPU-minutes (one thread) on the teacher-distilled data, $(nproc) cores, total $(( ($(date +%s) - T0) / 60 )) minutes"
python "$ROOT/scripts/update_readme_results.py" --readme "$ROOT/docs/benchmark.md" --report "$REPORT/report.md" \
  --plot "$REPORT/plot.png" --plot-dest "$ROOT/docs/bench.png" --note "$NOTE"
python "$ROOT/scripts/update_readme_results.py" --readme "$ROOT/README.md" --report "$REPORT/report.md" \
  --table-only --columns system "params (M)" "batch-1 ms/sent (median [min-max])" "speed-up vs AR" "x AR @batch 64" \
  sacreBLEU chrF "sacreBLEU test1" --plot "$REPORT/plot.png" --plot-dest "$ROOT/docs/bench.png" --note "$NOTE" \
  --footer "Learning curves: [docs/curve.png](docs/curve.png); full report: [docs/benchmark.md](docs/benchmark.md)"
cp "$REPORT/curve.png" "$ROOT/docs/curve.png"
echo "== done in $(( $(date +%s) - T0 )) s; report in $REPORT"
