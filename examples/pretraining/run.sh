#!/usr/bin/env bash
# Seq2seq NAR pretraining on a directory of raw text with the task masked_autoencoder_pretrain:
#   gather text -> sentencepiece -> fairseq-preprocess --only-source -> fairseq-train (bounded time).
#
# Usage: examples/pretraining/run.sh RAW_DIR [WORK_DIR] [TRAIN_MINUTES] [extra fairseq-train flags ...]
#   RAW_DIR   plain text, one segment (sentence, paragraph or article) per line; an empty line ends a document.
#             If it holds train.txt (and valid.txt), those are used; otherwise every file matching $PATTERN
#             (default '*', README*/LICENSE*/SOURCE.txt excluded) is concatenated in name order and the last
#             $VALID_LINES lines (default 200) are held out for validation.
#             Example here: examples/pretraining/run.sh ../shared/data/xsum-sample work/pretrain 5
#   WORK_DIR  default work/pretrain; re-running reuses the prepared data and resumes from checkpoint_last.pt.
#
# Settings (environment variables):
#   ARCH            the NAR encoder-decoder to pretrain, default bnb_small (BERT-NAR-BERT with MiniLM sizes, random
#                   init; the decoder length is the block length). Any architecture whose forward is
#                   (src_tokens, src_lengths, prev_output_tokens, tgt_tokens) and returns nat_loss terms works. To
#                   continue pretraining a real BERT, see continue_pretraining_minilm.sh.
#   CRITERION       default nat_loss (fairseq's NAT criterion: it reads sample["prev_target"], sample["target"]).
#   CORRUPTIONS     default 'span' (MLAE). BnB: 'mask' or 'permute' with LOSS_POSITIONS=all; ELMER: 'shuffle,infill'
#                   with LOSS_POSITIONS=all. Rates: --mask-prob, --span-mask-prob, --permute-prob, --infill-prob ...
#                   as extra flags (see `fairseq-train --task masked_autoencoder_pretrain --help`).
#   LOSS_POSITIONS  'corrupted' (default: loss on the corrupted positions only) or 'all'.
#   TOKENS_PER_SAMPLE  block length, default 512 (the papers' value).
#   SAMPLE_BREAK_MODE  how lines make blocks (fairseq's --sample-break-mode): 'none' (default) packs the text into
#                   full blocks across line ends (articles longer than a block keep all their text); 'eos' makes one
#                   block of each line, for corpora of independent short lines (captions, sentences), where a block
#                   of several unrelated lines only gives the model context it cannot use; 'complete' packs whole
#                   lines, 'complete_doc' keeps documents (separated by empty lines) apart. 'eos' and 'complete*'
#                   drop lines longer than a block.
#   PYTHON          the interpreter of the environment fairseq is installed in (default: python on PATH).
#   PREPARE_ONLY    1: stop after steps 1-3 (text, sentencepiece, binarized data), e.g. to binarize fine-tuning
#                   data with the pretraining's dictionary before (or while) the pretraining runs.
#   VOCAB_SIZE      sentencepiece vocabulary, default 8000. To pretrain an imported BERT-family checkpoint, binarize
#                   with that checkpoint's own vocabulary instead (and pass --mask-symbol '[MASK]' for BERT).
set -euo pipefail
RAW=${1:?usage: run.sh RAW_DIR [WORK_DIR] [TRAIN_MINUTES] [fairseq-train flags ...]}
WORK=${2:-work/pretrain}
MINUTES=${3:-10}
shift $(( $# < 3 ? $# : 3 ))
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
USER_DIR=$ROOT/fairseq_nar_plugins
ARCH=${ARCH:-bnb_small}
CRITERION=${CRITERION:-nat_loss}
CORRUPTIONS=${CORRUPTIONS:-span}
LOSS_POSITIONS=${LOSS_POSITIONS:-corrupted}
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-512}
SAMPLE_BREAK_MODE=${SAMPLE_BREAK_MODE:-none}
case "$SAMPLE_BREAK_MODE" in none|complete|complete_doc|eos) ;;
  *) echo "ERROR: SAMPLE_BREAK_MODE must be none, complete, complete_doc or eos (got '$SAMPLE_BREAK_MODE')" >&2
     exit 1 ;;
esac
VOCAB_SIZE=${VOCAB_SIZE:-8000}
PATTERN=${PATTERN:-*}
VALID_LINES=${VALID_LINES:-200}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

if [ ! -d "$RAW" ]; then
  echo "ERROR: raw text directory '$RAW' not found (first argument)" >&2
  exit 1
fi
mkdir -p "$WORK/text"

echo "== 1/4 gather the text ($WORK/text)"
if [ ! -f "$WORK/text/.done" ]; then
  if [ -f "$RAW/train.txt" ]; then
    cp "$RAW/train.txt" "$WORK/text/train.raw"
    if [ -f "$RAW/valid.txt" ]; then cp "$RAW/valid.txt" "$WORK/text/valid.raw"
    else tail -n "$VALID_LINES" "$RAW/train.txt" > "$WORK/text/valid.raw"
         head -n "-$VALID_LINES" "$RAW/train.txt" > "$WORK/text/train.raw"; fi
  else
    mapfile -t FILES < <(find "$RAW" -maxdepth 1 -type f -name "$PATTERN" ! -name 'README*' ! -name 'LICENSE*' \
                           ! -name 'SOURCE.txt' ! -name '.*' | sort)
    if [ ${#FILES[@]} -eq 0 ]; then echo "ERROR: no file matching '$PATTERN' in $RAW" >&2; exit 1; fi
    echo "files: ${FILES[*]}"
    cat "${FILES[@]}" > "$WORK/text/all.raw"
    N=$(wc -l < "$WORK/text/all.raw")
    if [ "$N" -le $((2 * VALID_LINES)) ]; then
      echo "ERROR: $N lines in $RAW: too few to hold out $VALID_LINES for validation (set VALID_LINES)" >&2; exit 1
    fi
    head -n $((N - VALID_LINES)) "$WORK/text/all.raw" > "$WORK/text/train.raw"
    tail -n "$VALID_LINES" "$WORK/text/all.raw" > "$WORK/text/valid.raw"
    rm "$WORK/text/all.raw"
  fi
  touch "$WORK/text/.done"
else echo "reusing $WORK/text"; fi
wc -l "$WORK/text/train.raw" "$WORK/text/valid.raw"

echo "== 2/4 sentencepiece ($VOCAB_SIZE pieces) learned on the training text"
if [ ! -f "$WORK/text/.spm.done" ]; then
  "$PYTHON" - "$WORK/text" "$VOCAB_SIZE" <<'EOF'
import os, sys
import sentencepiece as spm
out, vocab = sys.argv[1], int(sys.argv[2])
spm.SentencePieceTrainer.train(
    input=os.path.join(out, "train.raw"), model_prefix=os.path.join(out, "spm"), vocab_size=vocab,
    model_type="unigram", character_coverage=1.0, input_sentence_size=2_000_000, shuffle_input_sentence=True,
    hard_vocab_limit=False, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2)
sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "spm.model"))
for split in ("train", "valid"):
    with open(os.path.join(out, f"{split}.raw"), encoding="utf-8") as f, \
         open(os.path.join(out, f"{split}.spm"), "w", encoding="utf-8") as g:
        for line in f:  # empty lines stay empty: they are document breaks for --sample-break-mode complete_doc
            g.write(" ".join(sp.encode(line.strip(), out_type=str)) + "\n")
EOF
  touch "$WORK/text/.spm.done"
else echo "reusing $WORK/text/spm.model"; fi

echo "== 3/4 fairseq-preprocess --only-source ($WORK/bin)"
if [ ! -f "$WORK/bin/.done" ]; then
  fairseq-preprocess --only-source --trainpref "$WORK/text/train.spm" --validpref "$WORK/text/valid.spm" \
    --destdir "$WORK/bin" --workers 2 --log-format simple 2>&1 | grep --line-buffered -v -i "warn" | tail -n 3
  touch "$WORK/bin/.done"
else echo "reusing $WORK/bin"; fi

if [ "${PREPARE_ONLY:-0}" = 1 ]; then echo "== PREPARE_ONLY=1: text, sentencepiece and $WORK/bin ready"; exit 0; fi
echo "== 4/4 fairseq-train $ARCH for at most $MINUTES minutes ($WORK/ckpt)"
STOP_HOURS=$("$PYTHON" -c "print($MINUTES / 60)")
DEVICE=$("$PYTHON" -c "import torch; print('' if torch.cuda.is_available() else '--cpu')")
# --sample-break-mode none (the default): lines here may be whole articles, longer than a block; 'none' packs them
# into full blocks without dropping text ('complete_doc' keeps documents apart but drops lines longer than a block).
# '.' and '▁.' end sentences for 'shuffle' (sentencepiece writes a full stop either way).
fairseq-train "$WORK/bin" --user-dir "$USER_DIR" \
  --task masked_autoencoder_pretrain --tokens-per-sample "$TOKENS_PER_SAMPLE" --sample-break-mode "$SAMPLE_BREAK_MODE" \
  --corruptions "$CORRUPTIONS" --loss-positions "$LOSS_POSITIONS" --full-stop-symbols '.,▁.' \
  --arch "$ARCH" --criterion "$CRITERION" \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 2.0 \
  --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 500 --warmup-init-lr 1e-07 \
  --max-tokens 4096 --stop-time-hours "$STOP_HOURS" --max-update 125000 \
  --save-dir "$WORK/ckpt" --no-epoch-checkpoints --save-interval-updates 500 --keep-interval-updates 1 \
  $DEVICE --num-workers 0 --seed 1 --log-format simple --log-interval 50 "$@" 2>&1 | grep --line-buffered -v -i "warn"
echo "== done: checkpoints in $WORK/ckpt (checkpoint_last.pt), sentencepiece model $WORK/text/spm.model"
