#!/usr/bin/env python
"""Tokenize raw text with a pretrained checkpoint's own tokenizer, for fairseq-preprocess with its dictionary
(and turn such token lines back into text).

``encode`` writes one line per input line: the checkpoint's tokens, separated by spaces, spelled as the symbols of
the checkpoint's vocabulary bridge (dict.txt of scripts/convert_pretrained.py; ``--save-dict`` writes it too).
Binarized with that dictionary, every id equals the tokenizer's id, and fairseq's appended ``</s>`` is the
checkpoint's ``[SEP]`` / ``</s>``::

    python scripts/prepare_pretrained_text.py encode --checkpoint work/pretrained/bert-base-cased \\
        --inputs raw/train.en raw/train.de --outputs tok/train.en tok/train.de
    fairseq-preprocess --user-dir fairseq_nar_plugins --source-lang en --target-lang de --joined-dictionary \\
        --srcdict work/pretrained/bert-base-cased/dict.txt --trainpref tok/train --destdir bin

(``--user-dir`` is required: it makes fairseq read the dictionary with the checkpoint's special indices; plain
fairseq refuses the file rather than shifting every id.)

``decode`` reads token lines (e.g. the hypotheses of fairseq-generate, one per line) and writes detokenized text with
the checkpoint's tokenizer, special tokens removed, ready for sacreBLEU.

Tokenizers: WordPiece / byte-level BPE / Unigram through the ``tokenizers`` library (tokenizer.json, vocab.txt,
vocab.json + merges.txt, fairseq's encoder.json + vocab.bpe) and ``sentencepiece`` for XLM-R's
sentencepiece.bpe.model; see fairseq_nar_plugins/modules/pretrained/pretrained_tokenizer.py.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fairseq_nar_plugins.modules.pretrained.pretrained_import import (  # noqa: E402
    PretrainedCheckpointError,
    read_checkpoint_dictionary,
)
from fairseq_nar_plugins.modules.pretrained.pretrained_tokenizer import PretrainedTokenizer  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in (("encode", "raw text -> token lines for fairseq-preprocess"),
                       ("decode", "token lines (e.g. fairseq-generate hypotheses) -> detokenized text")):
        s = sub.add_parser(name, help=what, description=what)
        s.add_argument("--checkpoint", required=True,
                       help="folder written by scripts/convert_pretrained.py, or the original checkpoint: a Hugging "
                       "Face folder (config.json + tokenizer files) or a fairseq release (model.pt, dict.txt and "
                       "sentencepiece.bpe.model or encoder.json + vocab.bpe beside it)")
        s.add_argument("--dict", default=None, help="fairseq releases only: their dict.txt if it is not in the "
                       "checkpoint folder")
        s.add_argument("--backend", default="auto", choices=["auto", "tokenizers", "sentencepiece"],
                       help="tokenizer library to use when the folder has files for both (default: tokenizers "
                       "files first, then sentencepiece.bpe.model)")
        s.add_argument("--inputs", nargs="+", required=True, help="input files, one segment per line")
        s.add_argument("--outputs", nargs="+", required=True,
                       help="output files, one per input, line-aligned with it (folders are created)")
    enc = sub.choices["encode"]
    enc.add_argument("--save-dict", default=None,
                     help="also write the checkpoint's vocabulary bridge (the dict.txt to give fairseq-preprocess "
                     "as --srcdict/--tgtdict) to this path")
    enc.add_argument("--max-tokens", type=int, default=0,
                     help="report how many lines have more than this many tokens (2 fewer than the checkpoint's "
                     "positions leaves room for [CLS]/[SEP]; such lines are truncated or skipped at training "
                     "time by --max-source-positions / --max-target-positions); 0: no report")
    return p


def checkpoint_folder(path: str) -> str:
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def main(argv=None):
    args = get_parser().parse_args(argv)
    if len(args.inputs) != len(args.outputs):
        sys.exit(f"ERROR: {len(args.inputs)} --inputs but {len(args.outputs)} --outputs")
    for path in args.inputs:
        if not os.path.isfile(path):
            sys.exit(f"ERROR: input file {path!r} does not exist")
    try:
        dictionary = read_checkpoint_dictionary(args.checkpoint, args.dict)
        tokenizer = PretrainedTokenizer.from_checkpoint(checkpoint_folder(args.checkpoint), dictionary, args.backend)
    except (FileNotFoundError, PretrainedCheckpointError, ValueError) as e:
        sys.exit(f"ERROR: {e}")
    print(f"| tokenizer: {tokenizer.description}; vocabulary of {len(dictionary)} rows", flush=True)
    if args.command == "encode" and args.save_dict:
        dictionary.save(args.save_dict)
        print(f"| wrote {args.save_dict}")
    for src, dst in zip(args.inputs, args.outputs):
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        n_lines = n_tokens = n_unk = n_long = 0
        with open(src, encoding="utf-8", newline="\n") as fin, open(dst, "w", encoding="utf-8", newline="\n") as fout:
            for line in fin:
                line = line.rstrip("\n")
                if args.command == "encode":
                    ids = tokenizer.encode(line)
                    bad = [i for i in ids if not 0 <= i < len(dictionary)]
                    if bad:
                        sys.exit(f"ERROR: {src}:{n_lines + 1}: the tokenizer produced ids {bad[:5]} outside the "
                                 f"vocabulary of {len(dictionary)} rows")
                    n_tokens += len(ids)
                    n_unk += sum(1 for i in ids if i == dictionary.unk())
                    n_long += int(args.max_tokens > 0 and len(ids) > args.max_tokens)
                    fout.write(" ".join(dictionary[i] for i in ids) + "\n")
                else:
                    fout.write(tokenizer.decode([dictionary.index(s) for s in line.split()]) + "\n")
                n_lines += 1
        if args.command == "encode":
            long_note = f", {n_long} longer than {args.max_tokens} tokens" if args.max_tokens > 0 else ""
            print(f"| {src} -> {dst}: {n_lines} lines, {n_tokens} tokens, {n_unk} unknown{long_note}")
        else:
            print(f"| {src} -> {dst}: {n_lines} lines")


if __name__ == "__main__":
    main()
