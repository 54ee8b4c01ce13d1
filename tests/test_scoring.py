"""Scoring refuses incomplete hypothesis sets and matches sacreBLEU's own CLI value."""
import pytest

from fairseq_nar_plugins.scoring import (
    IncompleteHypothesesError,
    check_coverage,
    read_generate_output,
    sacrebleu_score,
)


def test_reads_d_lines_in_id_order_and_refuses_missing_ids(tmp_path):
    log = tmp_path / "gen.out"
    log.write_text("S-1\tb\nH-1\t-0.1\tB B\nD-1\t-0.1\tthe cat\nD-0\t-0.2\ta dog\nP-0\t0 0\n")
    hyps = read_generate_output(str(log))
    assert check_coverage(hyps, 2) == ["a dog", "the cat"]
    with pytest.raises(IncompleteHypothesesError, match="missing ids \\[2\\]"):
        check_coverage(hyps, 3)


def test_empty_hypothesis_is_kept():
    assert check_coverage({0: ""}, 1) == [""]


def test_sacrebleu_value_and_signature():
    score, sig = sacrebleu_score(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert score.score == pytest.approx(100.0)
    assert sig.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    # 4 of 6 words: precisions 2/4, 1/3, 1/2 smoothed..., brevity penalty exp(1 - 6/4)
    score, _ = sacrebleu_score(["the the the the"], ["the cat sat on the mat"])
    assert score.score == pytest.approx(11.52, abs=0.01)
    assert score.bp == pytest.approx(0.6065, abs=1e-4)
