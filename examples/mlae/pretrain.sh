#!/usr/bin/env bash
# MLAE pretraining on raw text (masked language autoencoder: 15 % span masking, mean span 3; the encoder reads the
# visible tokens only; a light decoder rebuilds the masked ones): examples/pretraining/run.sh with the MLAE settings.
#   raw text -> sentencepiece (VOCAB_SIZE) -> fairseq-preprocess --only-source -> fairseq-train --arch $ARCH
#
# Usage: examples/mlae/pretrain.sh RAW_DIR [WORK_DIR] [MINUTES] [extra fairseq-train flags ...]
#   RAW_DIR   plain text, one segment a line (train.txt [+ valid.txt], or every file of the folder; see run.sh)
#   WORK_DIR  default work/mlae-pretrain; it then holds text/spm.model (the tokenizer), bin/dict.txt (the vocabulary
#             every fine-tuning set is binarized with) and ckpt/checkpoint_last.pt (for --init-from-mlae)
#   MINUTES   training budget (default 60)
# Settings (environment variables):
#   ARCH        mlae_small (default; 6+2 layers, 256 dims, the CPU size), mlae_mini (3+2, the demo's), mlae_12_4 (the
#               paper's), mlae_8_8, mlae_9_4
#   CROSS       1: pretrain with cross-attention in the decoder (--mlae-cross-attention; the paper's variant for
#               NAR fine-tuning, Table 6); default 0
#   TOKENS_PER_SAMPLE (block length, default 512, the paper's), VOCAB_SIZE (default 8000; the paper: 64K)
#   SAMPLE_BREAK_MODE  none (default: full blocks across line ends) or eos (one block a line, for corpora of short
#               independent lines such as captions); see examples/pretraining/run.sh
#   The paper's optimisation (Table 8): lr 5e-4 after 10k warm-up updates from 1e-7, Adam (0.9, 0.98), clip 2.0,
#   dropout 0.1, batch 2048 x 512 tokens, 125K updates; run.sh uses lr 5e-4 with 500 warm-up updates (pass
#   --warmup-updates 10000 ... as extra flags to change them).
# Example: examples/mlae/pretrain.sh ../shared/data/xsum-sample work/mlae-pretrain 30
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ $# -lt 1 ]; then sed -n '2,22p' "$0"; exit 2; fi
RAW=$1
WORK=${2:-$ROOT/work/mlae-pretrain}
MINUTES=${3:-60}
shift $(( $# < 3 ? $# : 3 ))
EXTRA=()
[ "${CROSS:-0}" = 1 ] && EXTRA+=(--mlae-cross-attention)
ARCH=${ARCH:-mlae_small} CORRUPTIONS=span LOSS_POSITIONS=corrupted CRITERION=nat_loss \
  exec bash "$ROOT/examples/pretraining/run.sh" "$RAW" "$WORK" "$MINUTES" "${EXTRA[@]}" "$@"
