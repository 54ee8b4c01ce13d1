"""Bad input in parallel corpora is reported by file, line and count; policy for empty lines."""
import os

import pytest

from fairseq_nar_plugins.data.parallel_corpus import CorpusError, read_parallel_split


def write(path, lines):
    with open(path, "w") as f:
        f.writelines(line + "\n" for line in lines)


def test_missing_directory_names_the_path(tmp_path):
    with pytest.raises(CorpusError, match="data directory not found: .*nowhere"):
        read_parallel_split(str(tmp_path / "nowhere"), "train", "en", "de", training=True)


def test_missing_file_names_the_file_and_lists_the_directory(tmp_path):
    write(tmp_path / "train.en", ["a"])
    with pytest.raises(CorpusError, match=r"missing file .*train\.de.*train\.en"):
        read_parallel_split(str(tmp_path), "train", "en", "de", training=True)


def test_different_line_counts_name_both_files_and_counts(tmp_path):
    write(tmp_path / "valid.en", ["a", "b", "c"])
    write(tmp_path / "valid.de", ["x", "y"])
    with pytest.raises(CorpusError) as e:
        read_parallel_split(str(tmp_path), "valid", "en", "de", training=False)
    msg = str(e.value)
    assert "valid.en has 3 lines" in msg and "valid.de has 2" in msg


def test_empty_lines_dropped_in_training_kept_in_evaluation(tmp_path):
    write(tmp_path / "train.en", ["a", "", "c", "d"])
    write(tmp_path / "train.de", ["x", "y", " ", "w"])
    src, tgt, report = read_parallel_split(str(tmp_path), "train", "en", "de", training=True)
    assert src == ["a", "d"] and tgt == ["x", "w"]
    assert report.dropped == 2
    assert [(os.path.basename(f), n) for f, n in report.empty] == [("train.en", 2), ("train.de", 3)]
    assert "train.en:2" in report.describe() and "dropped 2" in report.describe()

    src, tgt, report = read_parallel_split(str(tmp_path), "train", "en", "de", training=False)
    assert len(src) == len(tgt) == 4 and report.dropped == 0 and "kept" in report.describe()
