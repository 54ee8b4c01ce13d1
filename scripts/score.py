#!/usr/bin/env python
"""Score hypotheses against references: sacreBLEU (with signature), ROUGE-1/2/L F1, the question-generation papers'
BLEU-4 and ROUGE-L (nqg / coco-caption), Distinct-1/2, and METEOR 1.5 where it can run.

    python scripts/score.py --hyp hyp.txt --ref ref.txt
    python scripts/score.py --generate-output gen.out --ref raw/test.de --metrics sacrebleu
    python scripts/score.py --hyp pred.txt --ref tgt-test.txt --qg-source src-test.txt --metrics qg,meteor

Hypotheses come either from a plain-text file (one segment a line) or from a fairseq-generate log (its D- lines, or
H- lines, in sentence-id order; a log whose ids do not cover every reference line is refused). Files whose line counts
differ are refused with a message naming them (exit 2). A metric that cannot run here (e.g. METEOR without Java or
without the pycocoevalcap package that ships its data) is printed as "NAME: not computed (reason)".
See fairseq_nar_plugins/evaluation/metrics.py for exactly how each number is computed.
"""
import argparse
import json
import logging
import os
import sys

logging.basicConfig(level=logging.WARNING)  # before fairseq's imports configure the root logger at INFO

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_nar_plugins.evaluation.metrics import (  # noqa: E402
    ALL_METRICS,
    QG_TOKENIZERS,
    LineCountMismatchError,
    check_line_counts,
    evaluate,
    read_lines,
)
from fairseq_nar_plugins.scoring import (  # noqa: E402
    IncompleteHypothesesError,
    check_coverage,
    read_generate_output,
)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hyp", metavar="FILE",
                     help="hypotheses, plain text, one segment a line (detokenized for sacreBLEU)")
    src.add_argument("--generate-output", metavar="LOG",
                     help="stdout of fairseq-generate: its D- (or, with --kind H, H-) lines are read in sentence-id "
                          "order and must cover every reference line")
    p.add_argument("--kind", default="D", choices=["D", "H"],
                   help="with --generate-output: score the detokenized D- lines (default) or the H- lines")
    p.add_argument("--ref", metavar="FILE", action="append", required=True,
                   help="references, plain text, one segment a line, line-aligned with the hypotheses; repeat the "
                        "flag for several references per segment")
    p.add_argument("--metrics", default=",".join(ALL_METRICS),
                   help=f"comma-separated subset of {','.join(ALL_METRICS)} (default: all). sacrebleu: corpus "
                        "sacreBLEU; rouge: ROUGE-1/2/L F1 (rouge-score, stemming); qg: BLEU-4 and ROUGE-L as the "
                        "question-generation papers (nqg scripts); distinct: Distinct-1/2; meteor: METEOR 1.5")
    p.add_argument("--tokenize", default="13a",
                   help="sacreBLEU tokenizer: 13a (default, most languages), intl, zh, ja-mecab, none, ...")
    p.add_argument("--word-tokenize", default="space", choices=QG_TOKENIZERS,
                   help="tokenizer for the QG metrics and Distinct-n, applied after lowercasing: 'space' (default) "
                        "splits on whitespace, as nqg does on its already tokenized files; '13a' first runs "
                        "sacreBLEU's 13a tokenizer, for detokenized output")
    p.add_argument("--qg-source", metavar="FILE",
                   help="source sentences, line-aligned with the references: group segments by identical source as "
                        "nqg does (all questions about one sentence become its references; the hypothesis of the "
                        "last such line is kept). Applies to the QG metrics and METEOR. Needed to reproduce "
                        "published numbers on Du et al.'s split")
    p.add_argument("--language", default="en",
                   help="language of the hypotheses (default en). METEOR is computed for en only (its other "
                        "languages' data does not ship with pycocoevalcap); for other languages ROUGE is flagged "
                        "because rouge-score's tokenizer keeps only a-z0-9")
    p.add_argument("--no-rouge-stemmer", action="store_true",
                   help="turn off rouge-score's Porter stemming (on by default, as summarization papers report)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    return p


def load_hypotheses(args, n_refs: int):
    if args.hyp:
        return read_lines(args.hyp), f"hypotheses {args.hyp}"
    hyps = read_generate_output(args.generate_output, args.kind)
    return check_coverage(hyps, n_refs, args.generate_output), f"fairseq-generate log {args.generate_output}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        sys.exit(f"ERROR: unknown metric(s) {unknown}; choose from {','.join(ALL_METRICS)}")
    for path in [args.hyp, args.generate_output, args.qg_source, *args.ref]:
        if path and not os.path.isfile(path):
            sys.exit(f"ERROR: file not found: {path}")
    refs = [read_lines(path) for path in args.ref]
    try:
        check_line_counts([(f"reference {path}", r) for path, r in zip(args.ref, refs)])
        hyps, hyp_name = load_hypotheses(args, len(refs[0]))
        named = [(hyp_name, hyps)] + [(f"reference {path}", r) for path, r in zip(args.ref, refs)]
        sources = None
        if args.qg_source:
            sources = read_lines(args.qg_source)
            named.append((f"source {args.qg_source}", sources))
        check_line_counts(named)
    except (LineCountMismatchError, IncompleteHypothesesError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(2)
    results = evaluate(hyps, refs, metrics, sacrebleu_tokenize=args.tokenize, word_tokenizer=args.word_tokenize,
                       qg_sources=sources, rouge_stemmer=not args.no_rouge_stemmer, language=args.language)
    print(f"{hyp_name}: {len(hyps)} segments; references: {', '.join(args.ref)}")
    for r in results:
        print(r.line())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([{"name": r.name, "score": r.score, "detail": r.detail, "reason": r.reason, **r.extra}
                       for r in results], f, indent=2)
    return results


if __name__ == "__main__":
    main()
