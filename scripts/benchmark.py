#!/usr/bin/env python
"""Decoding-speed benchmark of NAR models against an AR fairseq transformer of the same size.

    # quick mode (no training, random weights, < 3 minutes on 2 cores):
    python scripts/benchmark.py --out-dir work/bench-quick \
        --source-text ../shared/data/multi30k-en-de/test_2016_flickr.en \
        --target-text ../shared/data/multi30k-en-de/test_2016_flickr.de
    # full mode (trained checkpoints, adds sacreBLEU):
    python scripts/benchmark.py --mode full --out-dir work/bench --data work/demo/bin \
        --checkpoint nat_ctc_transformer=work/demo/ckpt/checkpoint_last.pt --checkpoint transformer=ar.pt \
        --reference work/demo/spm/raw/test_2016_flickr.de \
        --fairseq-args "--bpe sentencepiece --sentencepiece-model work/demo/spm/spm.model"

Writes report.md (markdown table), results.csv, results.json and plot.png to --out-dir; prints the report, with the
NAR/AR ratios. See `--help` for every flag and fairseq_nar_plugins/evaluation/ for the protocol.
"""
import logging
import os
import sys

logging.basicConfig(level=logging.WARNING)  # before fairseq's imports configure the root logger at INFO
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_nar_plugins.evaluation.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
