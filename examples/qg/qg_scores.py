#!/usr/bin/env python
"""The question-generation table of a ``scripts/benchmark.py --mode full`` run: QG metrics and speed per system.

    python examples/qg/qg_scores.py --report-dir WORK/report --source test.src --reference test.tgt --out qg_scores.md

For every system of REPORT_DIR/results.csv it scores the hypotheses the benchmark wrote (the whole test split) with the
metrics of the QG papers, as ``scripts/score.py --metrics qg,meteor --qg-source SOURCE --word-tokenize 13a`` does:
BLEU-4 and ROUGE-L of the nqg scripts and METEOR 1.5, with the references grouped by source sentence (the
Du et al. 2017 protocol), lower-cased and 13a-tokenized on both sides (the references are tokenized text, the
hypotheses detokenized WordPiece). Speed comes from the same results.csv: batch-1 latency and its ratio to the
benchmark's baseline (AR greedy), and batch-64 throughput as a ratio to it. Then five example questions per system:
the first sentence of every EXAMPLE_STRIDE-th group of the test split, with its reference question.
"""
import argparse
import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from fairseq_nar_plugins.evaluation.metrics import check_line_counts, evaluate, read_lines  # noqa: E402


def _score(result):
    return "n/a" if result.score is None else f"{result.score:.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report-dir", required=True, help="out-dir of scripts/benchmark.py --mode full (results.csv)")
    p.add_argument("--source", required=True, help="test sources (tokenized sentences), one a line")
    p.add_argument("--reference", required=True, help="test questions, line-aligned with --source")
    p.add_argument("--out", required=True, help="markdown file for the table and the examples")
    p.add_argument("--examples", type=int, default=5, help="example questions per system (default 5)")
    p.add_argument("--example-stride", type=int, default=2000, help="line distance between examples (default 2000)")
    args = p.parse_args(argv)
    csv_path = os.path.join(args.report_dir, "results.csv")
    if not os.path.isfile(csv_path):
        sys.exit(f"ERROR: {csv_path} not found: --report-dir must be the --out-dir of a benchmark.py --mode full run")
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    sources, refs = read_lines(args.source), read_lines(args.reference)
    check_line_counts([(f"source {args.source}", sources), (f"reference {args.reference}", refs)])
    table = ["| system | params (M) | BLEU-4 | METEOR | ROUGE-L | words/question | batch-1 ms | speed-up vs AR greedy "
             "(batch 1) | x AR greedy (batch 64) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    outputs = {}
    for row in rows:
        hyps = read_lines(row["hypotheses"])
        check_line_counts([(f"hypotheses {row['hypotheses']}", hyps), (f"reference {args.reference}", refs)])
        outputs[row["system"]] = hyps
        res = {r.name: r for r in evaluate(hyps, [refs], ["qg", "meteor"], word_tokenizer="13a", qg_sources=sources)}
        words = sum(len(h.split()) for h in hyps) / max(1, len(hyps))
        table.append(f"| {row['system']} | {float(row['params_m']):.1f} | {_score(res['QG BLEU-4'])} | "
                     f"{_score(res['METEOR'])} | {_score(res['QG ROUGE-L'])} | {words:.1f} | "
                     f"{float(row['b1_ms']):.1f} | {float(row['b1_speedup']):.2f}x | {float(row['bs_ratio']):.2f} |")
        print(table[-1], flush=True)
    lines = ["# Question generation: SQuAD 1.1 (Du et al. 2017 split), test", "",
             f"{len(refs)} test questions; BLEU-4 / ROUGE-L: nqg scripts, METEOR 1.5, references grouped by source "
             "sentence, lower-cased, 13a tokens. Speed from the same benchmark run (one thread).", "", *table, "",
             "## Examples", ""]
    for k in range(args.examples):
        i = min(k * args.example_stride, len(refs) - 1)
        lines += [f"**{i}.** source: {sources[i]}", "", f"- reference: {refs[i]}"]
        lines += [f"- {name}: {hyps[i]}" for name, hyps in outputs.items()]
        lines.append("")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
