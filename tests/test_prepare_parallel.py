"""scripts/prepare_parallel.py on real Multi30k data: checks, joint sentencepiece, aligned tokenized output."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "prepare_parallel.py")


def run(args):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True)


def test_prepares_multi30k_subset(shared_data_dir, tmp_path):
    data = os.path.join(shared_data_dir, "multi30k-en-de")
    out = tmp_path / "prep"
    proc = run(["--data-dir", data, "--src", "en", "--tgt", "de", "--train", "train", "--valid", "valid",
                "--test", "test_2016_flickr", "--out-dir", str(out), "--vocab-size", "1000",
                "--max-train-lines", "3000"])
    assert proc.returncode == 0, proc.stderr
    assert "train: 3000 pairs" in proc.stdout and "test_2016_flickr: 1000 pairs" in proc.stdout
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    for split, n in (("train", 3000), ("valid", 1014), ("test_2016_flickr", 1000)):
        for lang in ("en", "de"):
            tok = (out / f"{split}.{lang}").read_text().splitlines()
            raw = (out / "raw" / f"{split}.{lang}").read_text().splitlines()
            assert len(tok) == len(raw) == n
    # the tokenization round-trips to the raw text
    raw = (out / "raw" / "test_2016_flickr.de").read_text().splitlines()[:50]
    tok = (out / "test_2016_flickr.de").read_text().splitlines()[:50]
    assert [sp.decode(t.split()) for t in tok] == raw


def test_bad_corpus_is_refused_with_file_names(tmp_path):
    (tmp_path / "train.en").write_text("a\nb\n")
    (tmp_path / "train.de").write_text("x\n")
    proc = run(["--data-dir", str(tmp_path), "--src", "en", "--tgt", "de", "--valid", "train",
                "--out-dir", str(tmp_path / "out")])
    assert proc.returncode != 0
    assert "train.en has 2 lines" in proc.stderr and "train.de has 1" in proc.stderr


def test_missing_data_dir_is_refused(tmp_path):
    proc = run(["--data-dir", str(tmp_path / "missing"), "--src", "en", "--tgt", "de", "--out-dir", str(tmp_path)])
    assert proc.returncode != 0 and "data directory not found" in proc.stderr
