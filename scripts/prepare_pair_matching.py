#!/usr/bin/env python
"""A small labelled English sentence-pair set from SQuAD question generation (``squad-qg-du2017``): does this question
ask about this sentence?

Every distinct passage sentence of the ``dev`` and ``test`` files (PTB escapes undone, as in
``scripts/prepare_shared_english.py``) with its questions (the ``.tgt`` lines of its ``.src`` lines) is a *source
sentence*. The source sentences are shuffled (``--seed``) and dealt out to train, valid and test, so that no sentence
occurs in two splits. Each chosen sentence gives two examples:

* label ``1``: the sentence and one of its own questions (picked at random);
* label ``0``: the sentence and a question of another source sentence of the *same split*, picked at random (never
  one of its own questions' strings).

The labels are therefore exactly balanced (majority-class baseline 50 %), and a model cannot answer from the
sentence alone. The examples of a split are shuffled. Output, GLUE-style raw text (one example a line, line-aligned)::

    OUT/{train,valid,test}.input0   the passage sentence
    OUT/{train,valid,test}.input1   the question
    OUT/{train,valid,test}.label    1 or 0

which ``examples/bnb/glue_style.sh`` tokenizes with the checkpoint's tokenizer (``scripts/prepare_pretrained_text.py``)
and binarizes into the ``input0/ input1/ label/`` folders of fairseq's ``sentence_prediction`` task.

Example::

    python scripts/prepare_pair_matching.py --data ../shared/data --out work/glue-style/raw --seed 1 \\
        --train-size 4000 --valid-size 500 --test-size 1000
"""
import argparse
import os
import random
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prepare_shared_english import read_lines, unescape_ptb, write_lines  # noqa: E402

SPLITS = ("train", "valid", "test")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="the shared data folder (it holds squad-qg-du2017/{dev,test}.{src,tgt})")
    p.add_argument("--out", required=True, help="output folder for {train,valid,test}.{input0,input1,label}")
    p.add_argument("--seed", type=int, default=1, help="random seed of the split, the pairing and the order")
    p.add_argument("--train-size", type=int, default=4000, help="training examples (even: half of them positive)")
    p.add_argument("--valid-size", type=int, default=500, help="validation examples (even)")
    p.add_argument("--test-size", type=int, default=1000, help="test examples (even)")
    return p


def read_source_sentences(data_dir):
    """OrderedDict: source sentence -> its distinct questions (file order: dev, then test)."""
    root = os.path.join(data_dir, "squad-qg-du2017")
    questions = OrderedDict()
    for split in ("dev", "test"):
        src = read_lines(os.path.join(root, f"{split}.src"))
        tgt = read_lines(os.path.join(root, f"{split}.tgt"))
        if len(src) != len(tgt):
            sys.exit(f"ERROR: {root}/{split}.src has {len(src)} lines but {split}.tgt has {len(tgt)}")
        for s, q in zip(src, tgt):
            s, q = unescape_ptb(s), unescape_ptb(q)
            if not s or not q:
                continue
            qs = questions.setdefault(s, [])
            if q not in qs:
                qs.append(q)
    return questions


def make_split(sentences, questions, rng):
    """Two examples per sentence (its own question: 1; another sentence's question: 0), shuffled.
    Returns a list of (sentence, question, label)."""
    if len(sentences) < 2:
        sys.exit("ERROR: a split needs at least 2 source sentences (raise its size)")
    examples = []
    for i, s in enumerate(sentences):
        examples.append((s, rng.choice(questions[s]), "1"))
        own = set(questions[s])
        for _ in range(1000):
            j = rng.randrange(len(sentences) - 1)
            other = sentences[j if j < i else j + 1]
            q = rng.choice(questions[other])
            if q not in own:
                break
        else:  # pragma: no cover - only with a corpus of near-identical sentences
            sys.exit(f"ERROR: found no question of another sentence that differs from those of {s!r}")
        examples.append((s, q, "0"))
    rng.shuffle(examples)
    return examples


def main(argv=None):
    args = get_parser().parse_args(argv)
    sizes = dict(train=args.train_size, valid=args.valid_size, test=args.test_size)
    for name, size in sizes.items():
        if size < 4 or size % 2:
            sys.exit(f"ERROR: --{name}-size must be an even number >= 4 (half positive, half negative), got {size}")
    questions = read_source_sentences(args.data)
    sentences = list(questions)
    needed = sum(sizes.values()) // 2
    if needed > len(sentences):
        sys.exit(f"ERROR: {needed} source sentences needed (sizes / 2) but squad-qg-du2017 has {len(sentences)} "
                 "distinct ones: lower --train-size/--valid-size/--test-size")
    rng = random.Random(args.seed)
    rng.shuffle(sentences)
    start = 0
    for name in SPLITS:
        part = sentences[start: start + sizes[name] // 2]
        start += len(part)
        examples = make_split(part, questions, rng)
        for column, suffix in enumerate(("input0", "input1", "label")):
            write_lines(os.path.join(args.out, f"{name}.{suffix}"), [e[column] for e in examples])
        positives = sum(e[2] == "1" for e in examples)
        print(f"| {name}: {len(examples)} examples from {len(part)} source sentences ({positives} label 1, "
              f"{len(examples) - positives} label 0; majority-class accuracy "
              f"{100 * max(positives, len(examples) - positives) / len(examples):.1f} %)")
    print(f"| no source sentence in two splits; {len(sentences)} distinct sentences available, {needed} used; "
          f"written to {args.out}")


if __name__ == "__main__":
    main()
