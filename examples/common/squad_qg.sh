#!/usr/bin/env bash
# DEER (MODEL=deer, default) or BERT-NAR-BERT (MODEL=bnb) on SQuAD 1.1 question generation (Du et al. 2017 split; paper Table 2, RoBERTa backbone).
# Usage: examples/common/squad_qg.sh [DATA_DIR] [WORK_DIR] [MINUTES]
#   DATA_DIR  {dev,test}.{src,tgt} of the Du et al. split (default ../shared/data/squad-qg-du2017) and, for real
#             training, train.{src,tgt} (downloaded outside this environment: github.com/xinyadu/nqg). Without
#             train.* the dev pairs train and the first 500 test pairs validate (a CPU demonstration).
#             Answer-aware QG (BnB's setting: "answer [SEP] passage -> question"): put the answer spans beside the
#             sentences as {train,dev,test}.ans (one a line, from SQuAD's raw json); the source then becomes
#             "ANSWER [SEP] SENTENCE" (SEP, default '[SEP]', is the checkpoint's separator: '</s>' for RoBERTa).
#             Without .ans files the source is the sentence alone, as in Du et al. 2017 (the shared split has none).
#   WORK_DIR  default work/MODEL-squad-qg;  MINUTES  training budget (default 60)
# Backbone: CHECKPOINT=/path/to/roberta.base/model.pt ARCH=deer_roberta (the paper); default the MiniLM (deer_small).
# Scores: the QG papers' BLEU-4 / ROUGE-L / METEOR (scripts/score.py --metrics qg,meteor).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA=${1:-$ROOT/../shared/data/squad-qg-du2017}
WORK=${2:-$ROOT/work/${MODEL:-deer}-squad-qg}
MINUTES=${3:-60}
TEXT=$WORK/text; mkdir -p "$TEXT"
for l in src tgt; do
  for s in dev test; do [ -s "$DATA/$s.$l" ] || { echo "ERROR: $DATA/$s.$l not found (DATA_DIR)" >&2; exit 1; }; done
  D=$(cd "$DATA" && pwd)
  if [ -s "$DATA/train.$l" ]; then
    ln -sf "$D/train.$l" "$TEXT/train.$l"; ln -sf "$D/dev.$l" "$TEXT/valid.$l"; ln -sf "$D/test.$l" "$TEXT/test.$l"
  else
    ln -sf "$D/dev.$l" "$TEXT/train.$l"; head -n 500 "$D/test.$l" > "$TEXT/valid.$l"; ln -sf "$D/test.$l" "$TEXT/test.$l"
  fi
done
if [ -s "$DATA/test.ans" ]; then  # answer-aware: ANSWER [SEP] SENTENCE, the answers split like the sentences
  SEP=${SEP:-[SEP]}
  if [ -s "$DATA/train.src" ]; then MAP="train:train valid:dev test:test"; else MAP="train:dev valid:test test:test"; fi
  for pair in $MAP; do
    split=${pair%%:*}; from=${pair##*:}
    [ -s "$DATA/$from.ans" ] || { echo "ERROR: $DATA/$from.ans not found: give .ans files for every split or none" >&2; exit 1; }
    n=$(wc -l < "$TEXT/$split.tgt")
    paste -d '\t' <(head -n "$n" "$DATA/$from.ans") <(head -n "$n" "$DATA/$from.src") \
      | awk -F '\t' -v sep="$SEP" '{print $1 " " sep " " $2}' > "$TEXT/$split.src.tmp"
    [ "$(wc -l < "$TEXT/$split.src.tmp")" = "$n" ] || { echo "ERROR: $DATA/$from.ans and $from.src differ in length" >&2; exit 1; }
    rm -f "$TEXT/$split.src"; mv "$TEXT/$split.src.tmp" "$TEXT/$split.src"
  done
fi
METRICS=${METRICS:-qg,meteor} \
  exec bash "$HERE/nar_recipe.sh" squad-qg src tgt "$TEXT" "$WORK" "$MINUTES"
