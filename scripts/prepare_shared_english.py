#!/usr/bin/env python
"""Build small English corpora from the shared data folder (../shared/data) for the continued-pretraining demo
(examples/pretraining/continue_pretraining_minilm.sh) and its test.

``pretrain-text``: raw text for masked_autoencoder_pretrain, written as ``OUT/train.txt`` and ``OUT/valid.txt``
(one segment a line):

* training: the XSum sample's documents (``xsum-sample/test.src``, one article a line) except the last
  ``--valid-docs``, then the distinct SQuAD sentences of the Du et al. (2017) *dev* split (``squad-qg-du2017/dev.src``,
  in file order, so consecutive lines come from the same paragraph);
* held out: the last ``--valid-docs`` XSum documents, then the first ``--valid-squad`` distinct sentences of the
  SQuAD *test* split.

XSum documents are split by article and the two SQuAD splits share no sentence, so the held-out text is disjoint
from the training text; the script checks that no held-out line occurs in the training lines and stops otherwise.

``squad-qg``: question generation pairs (sentence -> question) from ``squad-qg-du2017``: ``OUT/train.{src,tgt}``
from the dev split (this snapshot has no train split) and ``OUT/valid.{src,tgt}`` from the first ``--valid-pairs``
test pairs.

Both modes undo the PTB escapes of the SQuAD files (``-lrb-`` -> ``(``, `````` `` ``/ ``''`` -> ``"``, ...), so that
the checkpoint's own tokenizer sees ordinary text. ``--max-train-lines`` / ``--max-train-pairs`` cut the training
part (for tests).

Example::

    python scripts/prepare_shared_english.py pretrain-text --data ../shared/data --out work/corpus
    python scripts/prepare_shared_english.py squad-qg --data ../shared/data --out work/qg/raw
"""
import argparse
import os
import sys

PTB_ESCAPES = {"-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "-lcb-": "{", "-rcb-": "}",
               "``": '"', "''": '"'}


def unescape_ptb(line: str) -> str:
    """SQuAD-QG's PTB escapes back to brackets and quotes (tokens stay space-separated)."""
    return " ".join(PTB_ESCAPES.get(tok, tok) for tok in line.split())


def read_lines(path):
    if not os.path.isfile(path):
        sys.exit(f"ERROR: {path} not found (is --data the shared data folder?)")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def distinct(lines):
    """Non-empty lines, first occurrence only, in file order."""
    seen, out = set(), []
    for line in lines:
        if line and line not in seen:
            seen.add(line)
            out.append(line)
    return out


def write_lines(path, lines):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def pretrain_text(args):
    docs = [d.strip() for d in read_lines(os.path.join(args.data, "xsum-sample", "test.src")) if d.strip()]
    if args.valid_docs >= len(docs):
        sys.exit(f"ERROR: --valid-docs {args.valid_docs} leaves no training document of {len(docs)}")
    squad_dev = distinct(unescape_ptb(s) for s in read_lines(os.path.join(args.data, "squad-qg-du2017", "dev.src")))
    squad_test = distinct(unescape_ptb(s) for s in read_lines(os.path.join(args.data, "squad-qg-du2017", "test.src")))
    split = len(docs) - args.valid_docs
    train = docs[:split] + squad_dev
    valid = docs[split:] + squad_test[: args.valid_squad]
    if args.max_train_lines:
        train = train[: args.max_train_lines]
    overlap = set(train) & set(valid)
    if overlap:
        sys.exit(f"ERROR: {len(overlap)} held-out lines also occur in the training text, e.g. {sorted(overlap)[0]!r}")
    write_lines(os.path.join(args.out, "train.txt"), train)
    write_lines(os.path.join(args.out, "valid.txt"), valid)
    words = lambda ls: sum(len(x.split()) for x in ls)  # noqa: E731
    print(f"| train.txt: {len(train)} lines, {words(train)} words ({min(split, len(train))} XSum documents, "
          f"then SQuAD dev sentences); valid.txt: {len(valid)} lines, {words(valid)} words ({args.valid_docs} XSum "
          f"documents, {min(args.valid_squad, len(squad_test))} SQuAD test sentences); no line in both")


def squad_qg(args):
    root = os.path.join(args.data, "squad-qg-du2017")
    for name, split, limit in (("train", "dev", args.max_train_pairs), ("valid", "test", args.valid_pairs)):
        src = [unescape_ptb(s) for s in read_lines(os.path.join(root, f"{split}.src"))]
        tgt = [unescape_ptb(s) for s in read_lines(os.path.join(root, f"{split}.tgt"))]
        if len(src) != len(tgt):
            sys.exit(f"ERROR: {root}/{split}.src has {len(src)} lines but {split}.tgt has {len(tgt)}")
        if limit:
            src, tgt = src[:limit], tgt[:limit]
        write_lines(os.path.join(args.out, f"{name}.src"), src)
        write_lines(os.path.join(args.out, f"{name}.tgt"), tgt)
        print(f"| {name}.src/.tgt: {len(src)} pairs from SQuAD-QG {split}")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in (("pretrain-text", "train.txt / valid.txt of raw English text"),
                       ("squad-qg", "train/valid .src/.tgt question generation pairs")):
        s = sub.add_parser(name, help=what, description=what)
        s.add_argument("--data", required=True, help="the shared data folder (holding xsum-sample/ and "
                       "squad-qg-du2017/), e.g. ../shared/data from the repository root")
        s.add_argument("--out", required=True, help="output folder (created)")
    pt = sub.choices["pretrain-text"]
    pt.add_argument("--valid-docs", type=int, default=50, help="XSum documents held out (the last ones; default 50)")
    pt.add_argument("--valid-squad", type=int, default=250,
                    help="distinct SQuAD test sentences held out (the first ones; default 250)")
    pt.add_argument("--max-train-lines", type=int, default=0, help="keep only the first N training lines (0: all)")
    qg = sub.choices["squad-qg"]
    qg.add_argument("--valid-pairs", type=int, default=500, help="SQuAD-QG test pairs used as validation "
                    "(the first ones; default 500; 0: all 11,877)")
    qg.add_argument("--max-train-pairs", type=int, default=0, help="keep only the first N training pairs (0: all "
                    "10,570 dev pairs)")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    (pretrain_text if args.command == "pretrain-text" else squad_qg)(args)


if __name__ == "__main__":
    main()
