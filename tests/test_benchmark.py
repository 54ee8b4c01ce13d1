"""The speed harness: the protocol's bookkeeping on fake systems, and scripts/benchmark.py end to end on tiny
random-weight models (that it runs and reports consistent fields; no timing thresholds)."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from fairseq_nar_plugins.evaluation import report, speed
from fairseq_nar_plugins.evaluation.systems import LengthForcer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- protocol bookkeeping on fake systems ---------------------------------------------------------------------------

class FakeDictionary:
    def pad(self):
        return 1

    def bos(self):
        return 0

    def eos(self):
        return 2


class FakeTask:
    target_dictionary = FakeDictionary()


class FakeSystem:
    """Returns 4 tokens and </s> per sentence (as fairseq's SequenceGenerator would) and records every inference call
    in ``log``."""

    device = "cpu"
    kind = "ar"
    generator = None

    def __init__(self, name, log):
        self.name, self.log, self.task, self.forcer = name, log, FakeTask(), LengthForcer()

    def _batch(self, ids):
        return {"id": torch.tensor(ids), "target": torch.full((len(ids), 4), 5),
                "net_input": {"src_tokens": torch.full((len(ids), 4), 5)}}

    def batches_by_ids(self, split, ids):
        return [self._batch([i]) for i in ids]

    def batches(self, split, max_tokens, max_sentences):
        return [self._batch([0, 1, 2]), self._batch([3, 4])]

    def activate(self):
        pass

    def inference(self, sample):
        self.log.append(self.name)
        return [[{"tokens": torch.tensor([0, 7, 8, 9, 2])}] for _ in sample["id"]]


def test_rounds_interleave_forward_and_reverse():
    log = []
    a, b = FakeSystem("A", log), FakeSystem("B", log)
    settings = [speed.Setting("batch 1", latency=True, max_sentences=1), speed.Setting("batch 3", max_sentences=3)]
    results = speed.run_speed([a, b], settings, "test", latency_ids=[0, 1], repeats=2, warmup_batches=1,
                              force_length=False, log=lambda msg: None)
    warmup, timed = log[:4], log[4:]
    assert warmup == ["A", "B", "A", "B"]  # one warm-up batch per (system, setting)
    # round 1 forward: A b1 (2 sentences) B b1, A b3 (2 batches) B b3; round 2: the reverse
    assert timed == ["A", "A", "B", "B", "A", "A", "B", "B"] + ["B", "B", "A", "A", "B", "B", "A", "A"]
    r = results[("A", "batch 3")]
    assert (r.batches, r.sentences, r.tokens, len(r.seconds)) == (2, 5, 20, 2)
    assert results[("B", "batch 1")].sentences == 2
    assert speed.paired_ratio(results, "A", "A", "batch 1") == 1.0


def test_spread_ids_and_pareto_front():
    assert speed.spread_ids(100, 5) == [0, 25, 50, 74, 99]
    assert speed.spread_ids(3, 10) == [0, 1, 2]
    batches = [f"b{i}" for i in range(9)]
    assert speed.spread_batches(batches, 3) == ["b0", "b4", "b8"]
    assert speed.spread_batches(batches, None) == batches and speed.spread_batches(batches, 20) == batches
    with pytest.raises(ValueError):
        speed.spread_batches(batches, 0)
    # (latency, quality): C is beaten by A on both axes; D ties A's latency with lower quality
    points = [(10, 20), (5, 10), (12, 15), (10, 18), (30, 25)]
    assert report.pareto_front(points) == [1, 0, 4]


def test_matmul_peak_reports_positive_rates():
    peak = speed.matmul_peak(n=64, repeats=3)
    assert peak["n"] == 64 and peak["best_gflops"] >= peak["median_gflops"] > 0


# --- end to end on tiny random models -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), "--out-dir", str(out), "--size", "tiny",
           "--num-sentences", "20", "--synthetic-lengths", "3:9", "--vocab-size", "400", "--latency-sentences", "4",
           "--repeats", "2", "--batch-size", "8", "--max-tokens", "128", "--profile-sentences", "2",
           "--matmul-size", "128", "--threads", "1", "--throughput-batches", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    with open(out / "results.csv", newline="") as f:
        rows = {r["system"]: r for r in csv.DictReader(f)}
    with open(out / "results.json") as f:
        meta = json.load(f)
    return out, proc.stdout, rows, meta


SYSTEMS = ["nat_ctc_transformer 1 pass", "cmlm_transformer 1 it.", "cmlm_transformer 10 it.",
           "nonautoregressive_transformer 1 pass", "transformer greedy", "transformer beam 4"]


def test_benchmark_reports_every_system_with_consistent_fields(tiny_bench):
    out, stdout, rows, meta = tiny_bench
    assert list(rows) == SYSTEMS
    assert meta["threads"]["torch_threads"] == 1 and meta["baseline"] == "transformer greedy"
    assert meta["matmul_peak"]["best_gflops"] > 0
    for name, r in rows.items():
        rounds = [float(x) for x in r["b1_ms_rounds"].split()]
        assert len(rounds) == 2 and all(x > 0 for x in rounds)
        assert float(r["b1_ms_min"]) <= float(r["b1_ms"]) <= float(r["b1_ms_max"])
        assert int(r["b1_sentences"]) == 4
        # batch 8 gives 3 batches (no sentence dropped); --throughput-batches 2 times the first and the last
        assert int(r["bs_batches"]) == 2 and 8 < int(r["bs_sentences"]) < 20
        assert float(r["bs_sps"]) > 0 and float(r["tok_sps"]) > 0
        for key in ("b1_ratio", "bs_ratio", "tok_ratio", "b1_gflop", "bs_gflop", "b1_gflops_pct"):
            assert float(r[key]) > 0, (name, key)
        parts = [float(r[k]) for k in ("profile_matrix_pct", "profile_other_ops_pct", "profile_outside_ops_pct")]
        assert sum(parts) == pytest.approx(100.0, abs=0.5) or parts[2] == 0.0
        assert 0 < float(r["outside_matrix_pct"]) < 100
        assert float(r["outside_matrix_pct"]) == pytest.approx(100 - parts[0], abs=1e-6)
    base = rows["transformer greedy"]
    assert float(base["b1_ratio"]) == 1.0 and float(base["bs_ratio"]) == 1.0
    # the same size everywhere: parameter counts within 10% of the AR baseline's (NAT length tables differ)
    for r in rows.values():
        assert float(r["params_m"]) == pytest.approx(float(base["params_m"]), rel=0.1)
    # beam 4 does about 4x the decoder work of greedy per sentence
    assert float(rows["transformer beam 4"]["b1_gflop"]) > 2 * float(base["b1_gflop"])
    assert float(rows["cmlm_transformer 10 it."]["b1_gflop"]) > 5 * float(rows["cmlm_transformer 1 it."]["b1_gflop"])


def test_benchmark_forces_equal_output_lengths(tiny_bench):
    _, _, rows, _ = tiny_bench
    for setting in ("b1", "bs"):  # per sentence, at batch 1 and in batches of 8
        forced = float(rows["transformer greedy"][f"{setting}_forced_per_sent"])
        assert forced > 1
        for name in ("transformer greedy", "transformer beam 4"):
            assert float(rows[name][f"{setting}_tokens_per_sent"]) == forced, (name, setting)
        # NAR length prediction is overridden: as many output positions (a random NAT may write a padding symbol,
        # which the generator drops, so allow a little less)
        for name in ("cmlm_transformer 1 it.", "cmlm_transformer 10 it.", "nonautoregressive_transformer 1 pass"):
            assert float(rows[name][f"{setting}_forced_per_sent"]) == forced
            assert forced * 0.9 <= float(rows[name][f"{setting}_tokens_per_sent"]) <= forced, (name, setting)
    assert rows["transformer greedy"]["output_length"].endswith("(forced per sentence)")
    assert rows["nat_ctc_transformer 1 pass"]["output_length"].endswith("(not forced)")
    assert rows["nat_ctc_transformer 1 pass"]["b1_forced_per_sent"] == ""  # CTC: frames fixed by the source


def test_benchmark_writes_table_ratios_and_plot(tiny_bench):
    out, stdout, rows, _ = tiny_bench
    text = (out / "report.md").read_text()
    assert text == stdout[:len(text)]
    assert "| system | params (M) |" in text and "## NAR / AR ratios" in text and "## Batch-1 profile" in text
    for name in SYSTEMS:
        assert f"| {name} |" in text
    assert "torch threads 1" in text and "matmul peak:" in text
    assert "throughput over 2 batches per setting" in text
    ratio_lines = [line for line in text.splitlines() if "batch-1 latency ratio" in line]
    assert len(ratio_lines) == 4 * 2  # every NAR system against both AR decodings
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labelled_checkpoints_and_per_system_flags():
    from fairseq_nar_plugins.evaluation.benchmark import _named_args, _parse_named

    named = _parse_named(["bnb@lc=a.pt", "bnb@ctc=b.pt", "transformer=t.pt"], "--checkpoint")
    assert named == {"bnb@lc": "a.pt", "bnb@ctc": "b.pt", "transformer": "t.pt"}
    flags = _parse_named(["bnb=--bpe x", "bnb@lc=--iter-decode-with-beam 3"], "--model-args")
    # the model's flags first, the labelled checkpoint's after them (argparse: the last one wins)
    assert _named_args(flags, "bnb@lc") == ["--bpe", "x", "--iter-decode-with-beam", "3"]
    assert _named_args(flags, "bnb@ctc") == ["--bpe", "x"]
    assert _named_args(flags, "transformer") == []
    with pytest.raises(SystemExit, match="unknown model 'nosuch'"):
        _parse_named(["nosuch@x=a.pt"], "--checkpoint")
    with pytest.raises(SystemExit, match="given twice"):
        _parse_named(["bnb@lc=a.pt", "bnb@lc=b.pt"], "--checkpoint")


def test_decodings_flag_keeps_the_named_decodings_only():
    from fairseq_nar_plugins.evaluation import registry
    from fairseq_nar_plugins.evaluation.benchmark import select_decodings

    ar = registry.MODELS["transformer"]
    assert [d.label for d in ar.decodings] == ["greedy", "beam 4"]
    assert select_decodings(ar, None, "transformer") is ar
    assert [d.label for d in select_decodings(ar, "greedy", "transformer").decodings] == ["greedy"]
    assert [d.label for d in select_decodings(ar, "beam 4; greedy", "transformer").decodings] == ["beam 4", "greedy"]
    assert ar.decodings[1].label == "beam 4"  # the registry's spec is not changed
    with pytest.raises(SystemExit, match=r"transformer has the decodings \['greedy', 'beam 4'\]"):
        select_decodings(ar, "beam 5", "transformer")


def test_bnb_lc_forced_lengths_replace_the_classifier_answer():
    """Quick mode on BnB with length classification: the classifier still runs, its answer is replaced."""
    import torch
    from fairseq_nar_plugins.evaluation import registry
    from fairseq_nar_plugins.evaluation.systems import ClassifiedLength, make_length_forcer
    from test_bnb import batch, tiny_bnb

    model, d = tiny_bnb("lc")
    forcer = make_length_forcer(registry.MODELS["bnb_lc"], model, None)
    assert isinstance(forcer, ClassifiedLength) and forcer.forces
    assert make_length_forcer(registry.MODELS["bnb_lc"], model, None) is forcer  # installed once
    src = batch(d, [[1, 2, 3], [4, 5]])
    enc = model.forward_encoder([src, None])
    free = model.initialize_output_tokens(enc, src).output_tokens.ne(d.pad()).sum(1)
    forcer.set(torch.tensor([7, 3]))
    assert model.initialize_output_tokens(enc, src).output_tokens.ne(d.pad()).sum(1).tolist() == [9, 5]
    forcer.set(None)
    assert model.initialize_output_tokens(enc, src).output_tokens.ne(d.pad()).sum(1).tolist() == free.tolist()


def test_chrf_and_extra_test_columns():
    """chrF equals sacrebleu's own corpus chrF; the table shows a chrF column and one BLEU + chrF pair per extra
    split, and --extra-test is refused outside full mode or without its reference file."""
    import sacrebleu

    from fairseq_nar_plugins.evaluation.benchmark import _parse_extra_tests, main
    from fairseq_nar_plugins.evaluation.metrics import chrf_corpus
    from fairseq_nar_plugins.evaluation.report import markdown_table

    hyps, refs = ["ein mann fährt rad .", "zwei hunde"], ["ein mann fährt fahrrad .", "zwei hunde spielen"]
    assert chrf_corpus(hyps, [refs]).score == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    row = {"system": "x", "quality": 30.0, "chrf": 55.5, "quality_test1": 20.0, "chrf_test1": 44.4}
    table = markdown_table([row], "batch 64", "4096 tokens", "sacreBLEU", ["test1"])
    header, _, line = table.splitlines()
    assert header.endswith("| sacreBLEU | chrF | sacreBLEU test1 | chrF test1 |")
    assert line.endswith("| 30.00 | 55.50 | 20.00 | 44.40 |")
    assert "chrF" not in markdown_table([{"system": "x"}], "b", "t", "quality")  # quick mode: no scores
    with pytest.raises(SystemExit, match="SUBSET=REFERENCE"):
        _parse_extra_tests(["test1"])
    with pytest.raises(SystemExit, match="reference file not found: /nonexistent"):
        _parse_extra_tests(["test1=/nonexistent"])
    with pytest.raises(SystemExit, match="needs --mode full"):
        main(["--mode", "quick", "--out-dir", "/tmp/x", "--extra-test", "test1=/nonexistent"])
