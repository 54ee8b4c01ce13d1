#!/usr/bin/env python
"""Check a line-aligned parallel corpus, learn a joint sentencepiece vocabulary on its training split, and write
the subword-tokenized splits ready for ``fairseq-preprocess --joined-dictionary``.

Output layout (under ``--out-dir``)::

    spm.model, spm.vocab          the joint sentencepiece model
    {split}.{src|tgt}             subword-tokenized text, one segment per line, for fairseq-preprocess
    raw/{split}.{src|tgt}         the untokenized text of every split (references for sacreBLEU)

Example::

    python scripts/prepare_parallel.py --data-dir ../shared/data/multi30k-en-de --src en --tgt de \\
        --train train --valid valid --test test_2016_flickr test_2017_flickr --out-dir work/m30k --vocab-size 8000
"""
import argparse
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fairseq_nar_plugins.data.parallel_corpus import CorpusError, read_parallel_split  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="directory holding {split}.{src} and {split}.{tgt} files")
    p.add_argument("--src", required=True, help="source language suffix, e.g. en")
    p.add_argument("--tgt", required=True, help="target language suffix, e.g. de")
    p.add_argument("--train", default="train", help="prefix of the training split (empty pairs are dropped)")
    p.add_argument("--valid", default="valid", help="prefix of the validation split (kept as is)")
    p.add_argument("--test", nargs="*", default=[], help="prefixes of test splits (kept as is)")
    p.add_argument("--out-dir", required=True, help="where to write the sentencepiece model and tokenized text")
    p.add_argument("--vocab-size", type=int, default=8000, help="joint sentencepiece vocabulary size")
    p.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"], help="sentencepiece model type")
    p.add_argument("--character-coverage", type=float, default=1.0, help="sentencepiece character coverage")
    p.add_argument("--max-train-lines", type=int, default=0, help="use at most this many training pairs (0 = all)")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    import sentencepiece as spm

    if args.vocab_size < 1:
        sys.exit(f"ERROR: --vocab-size must be positive, got {args.vocab_size}")
    splits = [(args.train, True), (args.valid, False)] + [(t, False) for t in args.test]
    data = {}
    try:
        for prefix, training in splits:
            src, tgt, report = read_parallel_split(args.data_dir, prefix, args.src, args.tgt, training=training)
            if training and args.max_train_lines:
                src, tgt = src[: args.max_train_lines], tgt[: args.max_train_lines]
                report.n_lines = len(src)
            print(f"| {report.describe()}", flush=True)
            if not src:
                what = ("every pair has an empty side, and such pairs are dropped from a training split"
                        if report.dropped else "its files are empty")
                use = "train a vocabulary and a model on" if training else "validate or score on"
                sys.exit(f"ERROR: split {prefix!r} has no sentence pairs ({what}: "
                         f"{os.path.join(args.data_dir, f'{prefix}.{args.src}')}, "
                         f"{os.path.join(args.data_dir, f'{prefix}.{args.tgt}')}): nothing to {use}. "
                         "Pass the prefix of a non-empty split, or fix the files")
            data[prefix] = (src, tgt)
    except CorpusError as e:
        sys.exit(f"ERROR: {e}")

    created = not os.path.exists(args.out_dir)  # removed again if sentencepiece fails, leaving nothing half-made
    os.makedirs(os.path.join(args.out_dir, "raw"), exist_ok=True)

    for prefix, (src, tgt) in data.items():
        for lang, lines in ((args.src, src), (args.tgt, tgt)):
            with open(os.path.join(args.out_dir, "raw", f"{prefix}.{lang}"), "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)

    model_prefix = os.path.join(args.out_dir, "spm")
    train_src, train_tgt = data[args.train]
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(train_src + train_tgt),
            model_prefix=model_prefix,
            vocab_size=args.vocab_size,
            model_type=args.model_type,
            character_coverage=args.character_coverage,
            # fairseq's Dictionary adds <s> <pad> </s> <unk> itself: keep them out of the pieces
            bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        if created:
            shutil.rmtree(args.out_dir, ignore_errors=True)
        too_high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", str(e))
        if too_high:
            sys.exit(f"ERROR: --vocab-size {too_high.group(1)} is larger than the training split "
                     f"{os.path.join(args.data_dir, args.train)}.{{{args.src},{args.tgt}}} allows "
                     f"({len(train_src):,} pairs): pass --vocab-size {too_high.group(2)} or less (with "
                     "examples/multi30k/prepare.sh: VOCAB_SIZE=N), or use a larger corpus")
        sys.exit(f"ERROR: sentencepiece could not learn a vocabulary from the training split "
                 f"{os.path.join(args.data_dir, args.train)}.{{{args.src},{args.tgt}}}: {e}")
    sp = spm.SentencePieceProcessor(model_file=model_prefix + ".model")
    for prefix, (src, tgt) in data.items():
        for lang, lines in ((args.src, src), (args.tgt, tgt)):
            with open(os.path.join(args.out_dir, f"{prefix}.{lang}"), "w", encoding="utf-8") as f:
                for pieces in sp.encode(lines, out_type=str):
                    f.write(" ".join(pieces) + "\n")
    print(f"| sentencepiece model: {model_prefix}.model ({sp.get_piece_size()} pieces)")


if __name__ == "__main__":
    main()
