"""A toy translation task that a small NAR model must learn in a minute on the CPU.

Source sentences are random sequences over a small vocabulary; the target "translates" each word through a fixed
lexicon, in which some words become two target words (so targets are often longer than sources, as CTC must handle)
and no word is dropped. The mapping is deterministic and monotonic: a model that learns it reaches BLEU near 100.
"""
import os
import random

SRC_WORDS = [f"s{i}" for i in range(24)]


def lexicon():
    lex = {}
    for i, w in enumerate(SRC_WORDS):
        lex[w] = [f"t{i}"] if i % 4 else [f"t{i}", f"u{i}"]
    return lex


def translate(words):
    lex = lexicon()
    return [t for w in words for t in lex[w]]


def write_toy_corpus(out_dir, n_train=4000, n_valid=200, n_test=200, min_len=3, max_len=10, seed=1):
    """Write train/valid/test .src/.tgt files (one sentence a line) into ``out_dir``; returns ``out_dir``."""
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        with open(os.path.join(out_dir, f"{split}.src"), "w") as fs, open(os.path.join(out_dir, f"{split}.tgt"), "w") as ft:
            for _ in range(n):
                words = [rng.choice(SRC_WORDS) for _ in range(rng.randint(min_len, max_len))]
                fs.write(" ".join(words) + "\n")
                ft.write(" ".join(translate(words)) + "\n")
    return out_dir
