"""scripts/split_heldout.py: the held-back validation slice starts at a topic (article) boundary."""
import random

import pytest

from scripts_loader import load_script

split = load_script("split_heldout")


def article(words, n, rng):
    """n pairs ('source question' word lists) drawn from one article's own vocabulary plus shared function words."""
    return [[rng.choice(words) for _ in range(8)] + ["the", "of", "?"] for _ in range(n)]


def topics(sizes, seed=0):
    rng = random.Random(seed)
    pairs = []
    for k, n in enumerate(sizes):
        pairs += article([f"topic{k}word{i}" for i in range(40)], n, rng)
    return pairs


def test_cut_falls_on_the_article_boundary():
    pairs = topics([300, 100])  # the last article is lines 300-399
    assert split.find_cut(pairs, valid_pairs=100, window=20) == 300
    assert split.find_cut(pairs, valid_pairs=80, window=20) == 300  # the boundary, not n - 80


def test_of_two_boundaries_the_one_nearest_to_the_requested_size_wins():
    pairs = topics([250, 80, 70])  # boundaries at 250 and 330; n - 100 = 300
    assert split.find_cut(pairs, valid_pairs=100, window=20) == 330
    assert split.find_cut(pairs, valid_pairs=140, window=20) == 250


def test_overlap_is_the_shared_fraction_of_content_word_occurrences():
    a = [["alpha", "beta", "the"], ["alpha", "gamma"]]
    b = [["alpha", "delta"]]
    # content words: a = {alpha: 2, beta: 1, gamma: 1}, b = {alpha: 1, delta: 1}; shared min counts: alpha 1
    assert split.overlap(a, b) == pytest.approx(1 / 6)


def test_writes_train_and_valid_and_refuses_misaligned_files(tmp_path):
    pairs = topics([120, 60])
    src, tgt = tmp_path / "dev.src", tmp_path / "dev.tgt"
    src.write_text("".join(" ".join(p[:6]) + "\n" for p in pairs))
    tgt.write_text("".join(" ".join(p[6:]) + "\n" for p in pairs))
    split.main(["--src", str(src), "--tgt", str(tgt), "--out-dir", str(tmp_path / "out"), "--valid-pairs", "60",
                "--window", "15"])
    assert len((tmp_path / "out" / "train.src").read_text().splitlines()) == 120
    assert (tmp_path / "out" / "valid.tgt").read_text().splitlines() == tgt.read_text().splitlines()[120:]
    tgt.write_text("one line\n")
    with pytest.raises(SystemExit, match="dev.tgt has 1"):
        split.main(["--src", str(src), "--tgt", str(tgt), "--out-dir", str(tmp_path / "out")])
