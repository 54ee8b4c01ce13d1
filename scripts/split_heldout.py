#!/usr/bin/env python
"""Hold back the tail of a parallel file in article order as a validation slice that starts at an article boundary.

    python scripts/split_heldout.py --src dev.src --tgt dev.tgt --out-dir TEXT --valid-pairs 500

writes TEXT/train.{SRC_SUFFIX,TGT_SUFFIX} (the pairs before the cut) and TEXT/valid.* (the pairs from the cut on).

SQuAD question-generation files (Du et al. 2017) list their pairs article by article, but carry no article ids. A
slice cut at an arbitrary line would put sentences of one article into both training and validation (and the
questions of one sentence often sit on adjacent lines). The cut is therefore placed where the topic changes: for every
candidate line c between n - 2 x VALID_PAIRS and n - VALID_PAIRS / 2, the content words (length > 2, not in a short
stop list) of the WINDOW pairs before c and the WINDOW pairs after c are counted, and c scores the fraction of word
occurrences the two windows share. Topic boundaries are the deep local minima of that score; the cut is the one
nearest to n - VALID_PAIRS. On the Du dev split (10,570 pairs, 48 articles) with the defaults it falls before line
10,002, between an article on empires and the "United Methodist Church" article, so 569 pairs validate. The last
training and the first validation source are printed for a human to check.
"""
import argparse
import os
import sys
from collections import Counter

_STOP = set("""the of and a to in is was for on as by with that at from which it an are or be his its were this their
have has had also but not who what how when where why did does do ' s , . `` '' -lrb- -rrb- ; : -- ? one two""".split())


def _bag(pairs):
    """Counter of content words over PAIRS (each word counted once per pair)."""
    bag = Counter()
    for words in pairs:
        bag.update(w for w in set(words) if w not in _STOP and len(w) > 2)
    return bag


def overlap(before, after):
    """Fraction of word occurrences the two windows share: sum of min counts over the total of both windows."""
    a, b = _bag(before), _bag(after)
    total = sum(a.values()) + sum(b.values())
    return sum(min(a[w], b[w]) for w in a if w in b) / total if total else 1.0


def find_cut(pairs, valid_pairs, window, depth=0.3):
    """The line index (0-based: the first validation pair) of the topic boundary nearest to n - valid_pairs.
    pairs: one list of words per line (source and target words). Candidates c in [n - 2 * valid_pairs,
    n - valid_pairs // 2] are scored by overlap(pairs[c - window:c], pairs[c:c + window]); boundaries are the
    candidates that are the lowest within +-window and lie in the bottom DEPTH of the range between the lowest and the
    median score."""
    n = len(pairs)
    lo, hi = max(window, n - 2 * valid_pairs), min(n - window, n - valid_pairs // 2)
    if lo >= hi:
        raise ValueError(f"{n} pairs are too few for --valid-pairs {valid_pairs} with --window {window}")
    score = {c: overlap(pairs[c - window:c], pairs[c:c + window]) for c in range(lo, hi + 1)}
    ranked = sorted(score.values())
    threshold = ranked[0] + depth * (ranked[len(ranked) // 2] - ranked[0])
    boundaries = [c for c, s in score.items() if s <= threshold
                  and all(s <= score.get(d, 1.0) for d in range(c - window, c + window + 1))]
    return min(boundaries, key=lambda c: (abs(c - (n - valid_pairs)), c))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="source file, one segment a line, in article order")
    p.add_argument("--tgt", required=True, help="target file, line-aligned with --src")
    p.add_argument("--out-dir", required=True, help="folder for train.* and valid.* (suffixes of --src / --tgt)")
    p.add_argument("--valid-pairs", type=int, default=500,
                   help="about how many pairs to hold back: the cut is searched between 2x and 0.5x this from the end")
    p.add_argument("--window", type=int, default=30, help="pairs on each side of a candidate cut that are compared")
    args = p.parse_args(argv)
    src = open(args.src, encoding="utf-8").read().splitlines()
    tgt = open(args.tgt, encoding="utf-8").read().splitlines()
    if len(src) != len(tgt):
        sys.exit(f"ERROR: {args.src} has {len(src)} lines but {args.tgt} has {len(tgt)}: the files must be "
                 "line-aligned")
    if args.valid_pairs < 2 or args.window < 1:
        sys.exit("ERROR: --valid-pairs must be >= 2 and --window >= 1")
    try:
        cut = find_cut([s.split() + t.split() for s, t in zip(src, tgt)], args.valid_pairs, args.window)
    except ValueError as e:
        sys.exit(f"ERROR: {args.src}: {e}")
    os.makedirs(args.out_dir, exist_ok=True)
    for path, lines in ((args.src, src), (args.tgt, tgt)):
        suffix = os.path.basename(path).rsplit(".", 1)[-1]
        for split, part in (("train", lines[:cut]), ("valid", lines[cut:])):
            with open(os.path.join(args.out_dir, f"{split}.{suffix}"), "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in part))
    print(f"cut at line {cut + 1} of {len(src)}: {cut} pairs train, {len(src) - cut} validate")
    print(f"  last training source:  {src[cut - 1][:100]}")
    print(f"  first validation source: {src[cut][:100]}")


if __name__ == "__main__":
    main()
