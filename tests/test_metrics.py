"""Metric values on hand-made cases (derived by hand in the comments) and on the libraries' published examples."""
import importlib.util
import os
import subprocess
import sys

import pytest

from fairseq_nar_plugins.evaluation import metrics as M

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORE = os.path.join(ROOT, "scripts", "score.py")


def _meteor_reason():
    try:
        M.meteor_jar()
        return None
    except M.MetricUnavailable as e:
        return str(e)


needs_meteor = pytest.mark.skipif(_meteor_reason() is not None, reason=f"METEOR unavailable: {_meteor_reason()}")


# --- sacreBLEU ------------------------------------------------------------------------------------------------------

def test_sacrebleu_readme_example_two_references():
    # the example of sacreBLEU's README: "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ...)"
    refs = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    r = M.sacrebleu_corpus(hyps, refs)
    assert r.score == pytest.approx(48.53, abs=0.005)
    assert "signature: nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:" in r.detail


# --- ROUGE (rouge-score) --------------------------------------------------------------------------------------------

def test_rouge_published_unit_values():
    # rouge-score's own tests: target "testing one two", prediction "testing one": R1 F 4/5, R2 F 2/3, RL F 4/5
    r = M.rouge_f1(["testing one"], [["testing one two"]], use_stemmer=False)
    assert r["rouge1"] == pytest.approx(80.0)
    assert r["rouge2"] == pytest.approx(200 / 3)
    assert r["rougeL"] == pytest.approx(80.0)
    # score_multi(["first text", "first something"], "text first"): R1 1, R2 0, RL 0.5 (best reference each)
    r = M.rouge_f1(["text first"], [["first text"], ["first something"]], use_stemmer=False)
    assert (r["rouge1"], r["rouge2"], r["rougeL"]) == pytest.approx((100.0, 0.0, 50.0))


def test_rouge_stemming_and_segment_average():
    # Porter: cats->cat, running->run, runs->run. hyp [the cat are run] vs ref [the cat run]:
    #   overlap 3, P 3/4, R 1, F1 = 2*.75/1.75 = 6/7. Without stemming only "the" matches: P 1/4, R 1/3, F1 2/7.
    hyps, refs = ["the cats are running"], [["the cat runs"]]
    assert M.rouge_f1(hyps, refs)["rouge1"] == pytest.approx(600 / 7)
    assert M.rouge_f1(hyps, refs)["rougeL"] == pytest.approx(600 / 7)
    assert M.rouge_f1(hyps, refs, use_stemmer=False)["rouge1"] == pytest.approx(200 / 7)
    # mean over segments: (6/7 + 1) / 2
    r = M.rouge_f1(hyps + ["a b"], [refs[0] + ["a b"]])
    assert r["rouge1"] == pytest.approx(100 * (6 / 7 + 1) / 2)


# --- QG: nqg / coco-caption BLEU and ROUGE-L -----------------------------------------------------------------------

def tok(s):
    return M.qg_tokenize(s, "space")


def test_qg_bleu_hand_values():
    # hyp "the cat sat on a mat" vs "the cat sat on the mat": clipped matches 1..4-grams 5/6, 3/5, 2/4, 1/3; BP 1
    b = M.qg_bleu([tok("the cat sat on a mat")], [[tok("the cat sat on the mat")]])
    assert b[0] == pytest.approx(100 * 5 / 6)
    assert b[1] == pytest.approx(100 * (5 / 6 * 3 / 5) ** 0.5)
    assert b[3] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)  # 53.73
    assert b[3] == pytest.approx(53.73, abs=0.005)
    # "the the the the": unigram 2/4 (clipped by the two "the"), no bigram; c=4 < r=6 -> BP exp(1 - 6/4)
    b = M.qg_bleu([tok("the the the the")], [[tok("the cat sat on the mat")]])
    assert b[0] == pytest.approx(100 * 0.5 * 0.6065306597, rel=1e-6)
    assert b[3] == pytest.approx(0.0, abs=1e-3)  # the 1e-15 guard, no smoothing


def test_qg_bleu_closest_reference_length_and_corpus_sums():
    # hypothesis of 4 words, references of 3 and 6 words: closest is 3 (>=, so no brevity penalty)
    b = M.qg_bleu([tok("a b c d")], [[tok("a b c"), tok("a b c d e f")]])
    assert b[0] == pytest.approx(100.0)
    # tie |4-3| == |4-5|: the shorter (3) is taken, no penalty; with only the 5-word one: BP exp(1 - 5/4)
    assert M.qg_bleu([tok("a b c d")], [[tok("a b c"), tok("a b c d e")]])[0] == pytest.approx(100.0)
    assert M.qg_bleu([tok("a b c d")], [[tok("a b c d e")]])[0] == pytest.approx(100 * 0.7788007831, rel=1e-6)
    # corpus level: counts are summed before the ratio. Segment 1: 1-grams 2/2, segment 2: 0/2 -> 2/4
    b = M.qg_bleu([tok("x y"), tok("p q")], [[tok("x y")], [tok("r s")]])
    assert b[0] == pytest.approx(50.0)


def test_qg_rouge_l_hand_values():
    # LCS(the cat sat on a mat, the cat sat on the mat) = 5: P = R = 5/6 -> F = 5/6
    assert M.qg_rouge_l([tok("the cat sat on a mat")], [[tok("the cat sat on the mat")]]) == pytest.approx(250 / 3)
    # "the cat": P 1, R 2/6 -> F = 2.44 * 1/3 / (1/3 + 1.44) = 45.86
    value = M.qg_rouge_l([tok("the cat")], [[tok("the cat sat on the mat")]])
    assert value == pytest.approx(100 * 2.44 / 3 / (1 / 3 + 1.44))
    # max precision and max recall are taken over references separately; empty hypothesis scores 0
    value = M.qg_rouge_l([tok("a b"), tok("")], [[tok("a x"), tok("a b c d")], [tok("a")]])
    p, r = 1.0, 0.5  # P: best is "a b c d" (2/2); R: max(1/2, 2/4)
    assert value == pytest.approx(100 * ((1 + 1.44) * p * r / (r + 1.44 * p)) / 2)


def test_qg_lowercases_and_tokenizes():
    assert M.qg_tokenize("What is THE Answer?", "space") == ["what", "is", "the", "answer?"]
    assert M.qg_tokenize("What is THE Answer?", "13a") == ["what", "is", "the", "answer", "?"]


def test_group_by_source_as_nqg():
    hyps, refs = M.group_by_source(["s1", "s1", "s2"], ["h1", "h2", "h3"], [["r1", "r2", "r3"]])
    assert hyps == ["h2", "h3"] and refs == [["r1", "r2"], ["r3"]]


@pytest.mark.skipif(importlib.util.find_spec("pycocoevalcap") is None, reason="pycocoevalcap not installed")
def test_qg_metrics_equal_coco_caption_code_on_real_data(shared_data_dir):
    """Our BLEU and ROUGE-L against coco-caption's own code (what nqg runs) on 400 lines of Du et al.'s test split,
    with the source sentence as the hypothesis and nqg's grouping."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    d = os.path.join(shared_data_dir, "squad-qg-du2017")
    src = M.read_lines(os.path.join(d, "test.src"))[:400]
    tgt = M.read_lines(os.path.join(d, "test.tgt"))[:400]
    hyps, refs = M.group_by_source(src, src, [tgt])
    ours_bleu = M.qg_bleu([tok(h) for h in hyps], [[tok(r) for r in rs] for rs in refs])
    ours_rouge = M.qg_rouge_l([tok(h) for h in hyps], [[tok(r) for r in rs] for rs in refs])
    res = {i: [" ".join(tok(h))] for i, h in enumerate(hyps)}
    gts = {i: [" ".join(tok(r)) for r in rs] for i, rs in enumerate(refs)}
    coco_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    coco_rouge, _ = Rouge().compute_score(gts, res)
    assert ours_bleu == pytest.approx([100 * b for b in coco_bleu], rel=1e-9)
    assert ours_rouge == pytest.approx(100 * coco_rouge, rel=1e-9)


# --- Distinct-n ----------------------------------------------------------------------------------------------------

def test_distinct_hand_values():
    hyps = [tok("a b a b"), tok("A c")]
    # unigrams a b a b a c: 3 distinct of 6; bigrams (a b)(b a)(a b)(a c): 3 of 4
    assert M.distinct_n(hyps, 1) == pytest.approx(50.0)
    assert M.distinct_n(hyps, 2) == pytest.approx(75.0)
    assert M.distinct_n([tok("a"), tok("")], 2) is None


# --- METEOR --------------------------------------------------------------------------------------------------------

@needs_meteor
def test_meteor_hand_value():
    # METEOR 1.5, en: alpha .85, beta .2, gamma .6, delta .75; function words the/is/on/a.
    # hyp "the cat is on a mat", ref "the cat sat on the mat": exact matches the, cat, on, mat (content cat, mat).
    # P = (.75*2 + .25*2) / (.75*2 + .25*4) = 0.8;  R = (.75*2 + .25*2) / (.75*3 + .25*3) = 2/3
    # Fmean = P R / (.85 P + .15 R) = 0.68376; chunks 3 over 4 matches: Pen = .6 * (3/4)^.2 = 0.56645
    # score = Fmean (1 - Pen) = 0.29644.   An identical sentence (one chunk, all matched) has no penalty: 1.0.
    corpus, segs = M.meteor(["the cat is on a mat", "The cat sat on the mat."],
                            [["the cat sat on the mat"], ["the cat sat on the mat ."]])
    assert segs[0] == pytest.approx(29.644, abs=0.001)
    assert segs[1] == pytest.approx(100.0)


def test_meteor_reports_reason_when_java_is_missing(monkeypatch):
    monkeypatch.setattr(M.shutil, "which", lambda name: None)
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name: None)
    (result,) = M.evaluate(["a b"], [["a b"]], metrics=["meteor"])
    assert result.score is None
    assert result.line().startswith("METEOR: not computed (") and "pycocoevalcap" in result.reason


def test_meteor_only_for_english_and_rouge_warns_elsewhere():
    results = {r.name: r for r in M.evaluate(["ein Haus"], [["ein Haus"]], metrics=["rouge", "meteor"],
                                             language="de")}
    assert results["METEOR"].score is None and "'de'" in results["METEOR"].reason
    assert "English-only" in results["ROUGE-1"].detail


# --- command line --------------------------------------------------------------------------------------------------

def run_score(*args):
    return subprocess.run([sys.executable, SCORE, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=300)


def test_cli_refuses_mismatched_line_counts(tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("a b\nc d\n")
    ref.write_text("a b\nc d\ne f\n")
    proc = run_score("--hyp", hyp, "--ref", ref, "--metrics", "sacrebleu")
    assert proc.returncode == 2
    assert f"hypotheses {hyp} has 2 lines but reference {ref} has 3" in proc.stderr


def test_cli_plain_files_and_generate_log(tmp_path):
    ref = tmp_path / "ref.txt"
    ref.write_text("the cat sat on the mat\nthe dog ran\n")
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("the cat sat on a mat\nthe dog ran\n")
    out = tmp_path / "r.json"
    proc = run_score("--hyp", hyp, "--ref", ref, "--metrics", "sacrebleu,rouge,qg,distinct", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "sacreBLEU: " in proc.stdout and "signature: nrefs:1|" in proc.stdout
    for name in ("ROUGE-1", "ROUGE-2", "ROUGE-L", "QG BLEU-4", "QG ROUGE-L", "Distinct-1", "Distinct-2"):
        assert f"\n{name}: " in proc.stdout
    # a fairseq-generate log: D- lines in id order; one missing id is refused
    log = tmp_path / "gen.out"
    log.write_text("S-1\tx\nD-1\t-0.1\tthe dog ran\nD-0\t-0.2\tthe cat sat on a mat\n")
    proc2 = run_score("--generate-output", log, "--ref", ref, "--metrics", "sacrebleu,qg,distinct")
    assert proc2.returncode == 0, proc2.stderr
    same = [line for line in proc.stdout.splitlines() if line.startswith(("sacreBLEU", "QG", "Distinct"))]
    assert same == [line.replace(str(log), str(hyp)) for line in proc2.stdout.splitlines()
                    if line.startswith(("sacreBLEU", "QG", "Distinct"))]
    log.write_text("D-1\t-0.1\tthe dog ran\n")
    proc3 = run_score("--generate-output", log, "--ref", ref)
    assert proc3.returncode == 2 and "missing ids [0]" in proc3.stderr
