"""examples/qg/qg_scores.py: the QG table of a benchmark run (scores from the hypotheses, speed from results.csv)."""
import csv
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("qg_scores", os.path.join(ROOT, "examples", "qg", "qg_scores.py"))
qg_scores = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qg_scores)

SOURCES = ["the cat sat on the mat .", "the cat sat on the mat .", "rome is the capital of italy ."]
REFS = ["where did the cat sit ?", "who sat on the mat ?", "what is the capital of italy ?"]


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def results_csv(tmp_path, systems):
    fields = ["system", "params_m", "hypotheses", "b1_ms", "b1_speedup", "bs_ratio"]
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for name, hyps, ms, speedup, ratio in systems:
            w.writerow({"system": name, "params_m": 22.7, "hypotheses": write(tmp_path / f"{name}.txt", hyps),
                        "b1_ms": ms, "b1_speedup": speedup, "bs_ratio": ratio})


def test_table_scores_each_system_against_grouped_references(tmp_path):
    perfect = ["where did the cat sit?", "where did the cat sit?", "what is the capital of italy?"]
    wrong = ["who is he?", "who is he?", "who is he?"]
    results_csv(tmp_path, [("transformer greedy", perfect, 100.0, 1.0, 1.0), ("bnb_lc@minilm", wrong, 20.0, 5.0, 2.5)])
    out = tmp_path / "qg.md"
    qg_scores.main(["--report-dir", str(tmp_path), "--source", write(tmp_path / "src", SOURCES),
                    "--reference", write(tmp_path / "ref", REFS), "--out", str(out), "--example-stride", "1",
                    "--examples", "2"])
    text = out.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith("| transformer") or line.startswith("| bnb")}
    # the first source's group has both references: the perfect output matches one of them exactly (13a splits '?')
    assert float(rows["transformer greedy"][2]) == pytest.approx(100.0)
    assert float(rows["bnb_lc@minilm"][2]) < 5
    assert rows["bnb_lc@minilm"][7:9] == ["5.00x", "2.50 |"]
    assert "- bnb_lc@minilm: who is he?" in text and "- reference: where did the cat sit ?" in text


def test_hypotheses_of_another_length_are_refused(tmp_path):
    results_csv(tmp_path, [("transformer greedy", ["one question?"], 100.0, 1.0, 1.0)])
    with pytest.raises(Exception, match="line"):
        qg_scores.main(["--report-dir", str(tmp_path), "--source", write(tmp_path / "src", SOURCES),
                        "--reference", write(tmp_path / "ref", REFS), "--out", str(tmp_path / "qg.md")])
