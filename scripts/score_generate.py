#!/usr/bin/env python
"""Score a fairseq-generate log against a plain-text reference file with sacreBLEU (prints score and signature).

    python scripts/score_generate.py --generate-output gen.out --reference raw/test.de [--hyp-out hyp.txt]

Refuses (exit 2) a log whose sentence ids do not cover every reference line.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fairseq_nar_plugins.scoring import (  # noqa: E402
    IncompleteHypothesesError,
    check_coverage,
    read_generate_output,
    sacrebleu_score,
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generate-output", required=True, help="stdout of fairseq-generate")
    p.add_argument("--reference", required=True, help="detokenized reference text, one segment a line")
    p.add_argument("--kind", default="D", choices=["D", "H"], help="score D- (detokenized, default) or H- lines")
    p.add_argument("--tokenize", default="13a", help="sacreBLEU tokenizer (13a for most languages, zh, ja-mecab...)")
    p.add_argument("--hyp-out", help="also write the hypotheses in reference order to this file")
    args = p.parse_args(argv)
    for path in (args.generate_output, args.reference):
        if not os.path.isfile(path):
            sys.exit(f"ERROR: file not found: {path}")
    with open(args.reference, encoding="utf-8") as f:
        refs = [line.rstrip("\n") for line in f]
    try:
        hyps = check_coverage(read_generate_output(args.generate_output, args.kind), len(refs), args.generate_output)
    except IncompleteHypothesesError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(2)
    if args.hyp_out:
        with open(args.hyp_out, "w", encoding="utf-8") as f:
            f.writelines(h + "\n" for h in hyps)
    score, signature = sacrebleu_score(hyps, refs, args.tokenize)
    print(f"sacreBLEU {score.score:.2f} ({score}) signature: {signature}")


if __name__ == "__main__":
    main()
