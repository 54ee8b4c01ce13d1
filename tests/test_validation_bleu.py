"""Validation BLEU for the NAR tasks (tasks/translation_lev_bleu.py) and scripts/learning_curve.py.

Unit tests: the aggregation of per-batch, per-worker sacreBLEU statistics against sacreBLEU on the whole corpus; the
decoding schedule of --eval-bleu-interval-updates; the flag checks. End to end: fairseq-train with --eval-bleu on the
toy task, translation_lev_ctc (CTC NAT) and translation_lev_bleu (fairseq's cmlm_transformer): BLEU is logged where
the schedule says, the logged BLEU is what fairseq-generate + sacreBLEU give for checkpoint_best.pt, and
checkpoint_best.pt is the best decoded validation, not a later undecoded one.
"""
import csv
import math
import os
import re

import pytest
import sacrebleu
import torch
from fairseq import metrics, options, tasks
from fairseq.data import Dictionary
from helpers_cli import USER_DIR, ctc_train_args, run_cli
from scripts_loader import load_script

from fairseq_nar_plugins.scoring import check_coverage, read_generate_output, sacrebleu_score
from fairseq_nar_plugins.tasks.translation_lev_bleu import NOT_DECODED, bleu_logging_output

# hand-made hypotheses: exact, partial, reordered, too short (brevity penalty), empty, punctuation (13a splits it)
HYPS = [
    "ein Mann fährt Fahrrad .",
    "eine Frau liest ein Buch",
    "Kinder spielen im Park .",
    "zwei Hunde",
    "",
    "der Mann , der lacht , isst.",
    "ein kleines Mädchen springt in den See .",
]
REFS = [
    "ein Mann fährt Fahrrad .",
    "eine Frau liest ein dickes Buch .",
    "im Park spielen Kinder .",
    "zwei Hunde rennen über eine Wiese .",
    "ein Mann schläft .",
    "der Mann, der lacht, isst.",
    "ein kleines Mädchen springt in einen See .",
]


class _NoCriterion:
    @staticmethod
    def reduce_metrics(logging_outputs):
        pass


def _setup_task(tmp_path, task, arch, extra=()):
    d = Dictionary()
    for w in "a b c".split():
        d.add_symbol(w)
    d.save(str(tmp_path / "dict.src.txt"))
    d.save(str(tmp_path / "dict.tgt.txt"))
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(tmp_path), "--task", task, "-s", "src", "-t", "tgt", "--arch",
                                                arch, *extra])
    return tasks.setup_task(args)


@pytest.fixture
def bleu_task(tmp_path):
    return _setup_task(tmp_path, "translation_lev_bleu", "cmlm_transformer",
                       ["--eval-bleu", "--eval-bleu-interval-updates", "100"])


def _reduce(task, batches):
    """Run the task's reduce_metrics once per validation batch (as fairseq's trainer does; each batch a list of
    per-worker logging outputs) inside a fresh validation aggregator; returns its smoothed values."""
    with metrics.aggregate(new_root=True) as agg:
        for logs in batches:
            task.reduce_metrics(logs, _NoCriterion())
        return agg.get_smoothed_values()


def test_bleu_aggregated_over_batches_and_workers_equals_corpus_sacrebleu(bleu_task):
    reference = sacrebleu.corpus_bleu(HYPS, [REFS])  # what fairseq-generate + sacreBLEU give on the whole set
    # 3 validation batches, the second split across 2 workers; each piece scored as _inference_with_bleu scores it
    pieces = [[(0, 2)], [(2, 4), (4, 5)], [(5, 7)]]
    batches = [[bleu_logging_output(sacrebleu.corpus_bleu(HYPS[a:b], [REFS[a:b]])) for a, b in batch]
               for batch in pieces]
    stats = _reduce(bleu_task, batches)
    assert stats["bleu"] == pytest.approx(round(reference.score, 2), abs=1e-9)
    # the aggregation matters: the mean of the per-batch scores is not the corpus score
    per_batch = [sacrebleu.corpus_bleu(HYPS[a:b], [REFS[a:b]]).score for batch in pieces for a, b in batch]
    assert abs(sum(per_batch) / len(per_batch) - reference.score) > 1
    # nothing hidden leaks into the printed stats, and fairseq's own translation BLEU meters are not created
    assert not any(k.startswith("_") for k in stats)


def test_undecoded_validation_logs_minus_inf_and_empty_output_logs_zero(bleu_task):
    skipped = {k: 0 for k in bleu_logging_output(sacrebleu.corpus_bleu(["a"], [["a"]]))}
    assert _reduce(bleu_task, [[skipped], [skipped]])["bleu"] == NOT_DECODED == -math.inf
    empty = bleu_logging_output(sacrebleu.corpus_bleu(["", ""], [["ein Mann", "zwei Hunde"]]))
    assert _reduce(bleu_task, [[empty]])["bleu"] == 0.0  # fairseq's translation task would log no bleu at all
    # training batches carry no BLEU statistics and must not log a bleu
    assert "bleu" not in _reduce(bleu_task, [[{"loss": 1.0}]])


def test_decoding_schedule_of_eval_bleu_interval_updates(bleu_task):
    """Decode at the first validation of the run, then at the first one at or after each multiple of 100 updates
    (validations at epoch ends fall between multiples)."""
    decoded = []
    for n in [24, 48, 72, 96, 100, 120, 199, 230, 460, 461]:
        metrics.log_scalar("num_updates", n, weight=0, priority=200)  # what fairseq's trainer logs at each update
        bleu_task.begin_valid_epoch(1, model=None)
        if bleu_task._bleu_decode_this_validation:
            decoded.append(n)
    assert decoded == [24, 100, 230, 460]
    bleu_task.cfg.eval_bleu_interval_updates = 0  # every validation decodes
    for n in [462, 463]:
        metrics.log_scalar("num_updates", n, weight=0, priority=200)
        bleu_task.begin_valid_epoch(1, model=None)
        assert bleu_task._bleu_decode_this_validation


@pytest.mark.parametrize("extra, message", [
    (["--eval-bleu-interval-updates", "100"], "--eval-bleu-interval-updates 100 needs --eval-bleu"),
    (["--eval-bleu", "--eval-bleu-interval-updates", "-1"], "must be >= 0"),
    (["--eval-bleu", "--eval-bleu-args", "{iter_decode_max_iter: 0}"], "--eval-bleu-args .* is not valid JSON"),
    (["--eval-bleu", "--eval-bleu-args", '{"iter-decode-max-iter": 0}'],
     r"unknown generation option\(s\) \['iter-decode-max-iter'\].*underscores"),
])
def test_inconsistent_flags_are_refused_naming_the_flag(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        _setup_task(tmp_path, "translation_lev_ctc", "nat_ctc_transformer_tiny", extra)


# ---------------------------------------------------------------------------------------------------------------
# end to end

# validations at 50, 100, 150 updates (no epoch-end ones); BLEU at 50 (first of the run) and 100, not at 150
SCHEDULE = ["--eval-bleu", "--eval-bleu-interval-updates", "100", "--validate-interval-updates", "50",
            "--save-interval-updates", "50", "--validate-interval", "1000", "--save-interval", "1000",
            "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric"]


def _valid_bleus(log):
    """{num_updates: bleu} of the 'valid on' lines of a --log-format simple training log."""
    out = {}
    for line in log.splitlines():
        if "valid on 'valid' subset" in line:
            nu = int(re.search(r"\| num_updates (\d+)", line).group(1))
            out[nu] = float(re.search(r"\| bleu (\S+)", line).group(1))
            assert re.search(r"\| wall \d+", line), line  # the learning curve's time axis
    return out


def _check_best_checkpoint(save_dir, bleus, data_bin, task, gen_args):
    """checkpoint_best.pt is the (last) validation with the highest decoded BLEU, and decoding it with
    fairseq-generate gives that BLEU."""
    best = max(v for v in bleus.values())
    best_update = max(n for n, v in bleus.items() if v == best)  # fairseq keeps the later one on ties (>=)
    state = torch.load(os.path.join(save_dir, "checkpoint_best.pt"), map_location="cpu", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == best_update
    assert state["extra_state"]["best"] == pytest.approx(best)
    proc = run_cli("fairseq_cli.generate", [
        data_bin, "--user-dir", USER_DIR, "--task", task, "--path", os.path.join(save_dir, "checkpoint_best.pt"),
        "--gen-subset", "valid", "--batch-size", "64", "--required-batch-size-multiple", "1", "--cpu", *gen_args])
    gen = os.path.join(save_dir, "gen.out")
    with open(gen, "w") as f:
        f.write(proc.stdout)
    with open(os.path.join(os.path.dirname(data_bin), "raw", "valid.tgt")) as f:
        refs = [line.strip() for line in f]
    score, _ = sacrebleu_score(check_coverage(read_generate_output(gen, "D"), len(refs)), refs)
    assert score.score == pytest.approx(best, abs=0.011)


def test_translation_lev_ctc_eval_bleu_selects_best_checkpoint_by_bleu(toy_data_bin, tmp_path):
    save_dir = str(tmp_path / "ctc")
    proc = run_cli("fairseq_cli.train", ctc_train_args(toy_data_bin, save_dir, 150, [
        *SCHEDULE, "--eval-bleu-args", '{"iter_decode_max_iter": 0}']))
    log = proc.stdout + proc.stderr
    bleus = _valid_bleus(log)
    assert sorted(bleus) == [50, 100, 150], log[-3000:]
    assert bleus[150] == -math.inf  # loss-only validation
    assert math.isfinite(bleus[50]) and bleus[100] > 30, bleus  # the CTC NAT learns the toy task
    # the last validation did not decode: checkpoint_best.pt stays at the decoded best (a carried BLEU equal to the
    # best would have moved it to update 150)
    _check_best_checkpoint(save_dir, bleus, toy_data_bin, "translation_lev_ctc", ["--iter-decode-max-iter", "0"])
    # the learning-curve script reads this log: the decoded points, with the validation lines' own wall time
    lc = load_script("learning_curve")
    out_csv, out_png = str(tmp_path / "curve.csv"), str(tmp_path / "curve.png")
    log_path = tmp_path / "train.log"
    log_path.write_text(log)
    assert lc.main([f"ctc={log_path}", "--threads", "2", "--csv", out_csv, "--png", out_png]) == 0
    rows = list(csv.DictReader(open(out_csv)))
    assert [(int(r["num_updates"]), float(r["bleu"])) for r in rows] == [(50, bleus[50]), (100, bleus[100])]
    walls = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"num_updates (\d+) \|.*\| wall (\d+)", log)}
    assert float(rows[1]["cpu_minutes"]) == pytest.approx(walls[100] * 2 / 60, abs=1e-3)
    assert os.path.getsize(out_png) > 0


def test_translation_lev_bleu_task_scores_fairseq_cmlm(toy_data_bin, tmp_path):
    save_dir = str(tmp_path / "cmlm")
    proc = run_cli("fairseq_cli.train", [
        toy_data_bin, "--user-dir", USER_DIR, "--task", "translation_lev_bleu", "--noise", "random_mask",
        "--arch", "cmlm_transformer", "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64",
        "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
        "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--share-all-embeddings",
        "--criterion", "nat_loss", "--length-loss-factor", "0.1", "--optimizer", "adam", "--adam-betas",
        "(0.9, 0.98)", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
        "--warmup-init-lr", "1e-07", "--dropout", "0.0", "--max-tokens", "2048", "--max-update", "150",
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--cpu", "--num-workers", "0", "--data-buffer-size", "0",
        "--seed", "1", "--log-format", "simple", "--log-interval", "50",
        *SCHEDULE, "--eval-bleu-args", '{"iter_decode_max_iter": 4}'])
    log = proc.stdout + proc.stderr
    bleus = _valid_bleus(log)
    assert sorted(bleus) == [50, 100, 150] and bleus[150] == -math.inf, log[-3000:]
    assert bleus[100] > bleus[50], bleus  # mask-predict is learning
    # its checkpoints decode with fairseq's own translation_lev task
    _check_best_checkpoint(save_dir, bleus, toy_data_bin, "translation_lev", ["--iter-decode-max-iter", "4"])


# ---------------------------------------------------------------------------------------------------------------
# learning_curve.py on made-up logs

_FAIRSEQ_TRANSLATION_LOG = """\
2026-01-01 10:00:00 | INFO | train_inner | epoch 001:    100 / 227 loss=9.1, nll_loss=8.9, ppl=477, wps=3000, ups=1, wpb=3000, bsz=100, num_updates=100, lr=0.0003, gnorm=2, train_wall=50, gb_free=None, wall=60
2026-01-01 10:01:00 | INFO | train_inner | epoch 001:    200 / 227 loss=7.1, nll_loss=6.9, ppl=120, wps=3000, ups=1, wpb=3000, bsz=100, num_updates=200, lr=0.0006, gnorm=2, train_wall=50, gb_free=None, wall=120
2026-01-01 10:01:01 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 6.5 | nll_loss 6.3 | ppl 79 | bleu 3.5 | wps 9000 | wpb 2000 | bsz 80 | num_updates 200
2026-01-01 10:02:00 | INFO | train_inner | epoch 002:     73 / 227 loss=6.1, nll_loss=5.9, ppl=60, wps=3000, ups=1, wpb=3000, bsz=100, num_updates=300, lr=0.0009, gnorm=2, train_wall=50, gb_free=None, wall=180
2026-01-01 10:02:30 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 5.5 | nll_loss 5.3 | ppl 39 | bleu 9.25 | wps 9000 | wpb 2000 | bsz 80 | num_updates 350 | best_bleu 9.25
2026-01-01 10:03:00 | INFO | train_inner | epoch 002:    173 / 227 loss=5.1, nll_loss=4.9, ppl=30, wps=3000, ups=1, wpb=3000, bsz=100, num_updates=400, lr=0.0009, gnorm=2, train_wall=50, gb_free=None, wall=240
"""

_NAR_LOG_RESUMED = """\
2026-01-01 10:00:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 5.0 | bleu 1.5 | num_updates 100 | wall 30
2026-01-01 10:00:30 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 4.0 | bleu -inf | num_updates 150 | best_bleu 1.5 | wall 45
2026-01-01 10:01:00 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 3.0 | bleu 7 | num_updates 200 | best_bleu 7 | wall 60
2026-01-01 10:01:00 | INFO | valid | epoch 002 | valid on 'valid1' subset | loss 3.0 | bleu 99 | num_updates 200 | wall 60
2026-01-02 09:00:00 | INFO | fairseq.checkpoint_utils | Loaded checkpoint ckpt/checkpoint_last.pt (epoch 2 @ 150 updates)
2026-01-02 09:01:00 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 3.1 | bleu 6.5 | num_updates 200 | best_bleu 6.5 | wall 62
2026-01-02 09:02:00 | INFO | valid | epoch 003 | valid on 'valid' subset | loss 2.0 | bleu 12 | num_updates 300 | best_bleu 12 | wall 95
"""


def test_learning_curve_reads_logs_and_turns_wall_time_into_cpu_minutes(tmp_path):
    lc = load_script("learning_curve")
    ar, nar = tmp_path / "ar.log", tmp_path / "nar" / "train.log"
    nar.parent.mkdir()
    ar.write_text(_FAIRSEQ_TRANSLATION_LOG)
    nar.write_text(_NAR_LOG_RESUMED)
    out_csv, out_png = tmp_path / "c.csv", tmp_path / "c.png"
    assert lc.main([f"teacher={ar}", str(nar), "--threads", "2", "--threads", "nar=1", "--csv", str(out_csv),
                    "--png", str(out_png)]) == 0
    rows = [(r["system"], int(r["num_updates"]), float(r["wall_s"]), int(r["threads"]), float(r["cpu_minutes"]),
             float(r["bleu"])) for r in csv.DictReader(open(out_csv))]
    assert rows == [
        # no wall on fairseq translation's valid lines: the train line at the same update, or interpolated
        ("teacher", 200, 120.0, 2, 4.0, 3.5),
        ("teacher", 350, 210.0, 2, 7.0, 9.25),
        # the label defaults to the log's folder; -inf (not decoded) and other subsets are left out; the resumed run's
        # validation at 200 replaces the first run's
        ("nar", 100, 30.0, 1, 0.5, 1.5),
        ("nar", 200, 62.0, 1, round(62 / 60, 3), 6.5),
        ("nar", 300, 95.0, 1, round(95 / 60, 3), 12.0),
    ]
    assert out_png.stat().st_size > 0


def test_learning_curve_explains_bad_input(tmp_path, capsys):
    lc = load_script("learning_curve")
    no_bleu = tmp_path / "loss_only.log"
    no_bleu.write_text("2026-01-01 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 5.0 | num_updates 10\n")
    assert lc.main([f"x={no_bleu}", "--csv", str(tmp_path / "c.csv")]) == 2
    assert "loss_only.log: no \"valid on 'valid' subset\" line with a bleu value; train with --eval-bleu" in \
        capsys.readouterr().err
    assert lc.main([f"x={tmp_path / 'missing.log'}", "--csv", str(tmp_path / "c.csv")]) == 2
    assert "log file" in capsys.readouterr().err
    assert lc.main([f"x={no_bleu}", "--threads", "y=2", "--csv", str(tmp_path / "c.csv")]) == 2
    assert "no system is labelled 'y'" in capsys.readouterr().err
    assert lc.main([f"x={no_bleu}"]) == 2
    assert "--csv FILE and/or --png FILE" in capsys.readouterr().err


def test_learning_curve_plots_against_updates_on_request(tmp_path, monkeypatch):
    """--x num_updates: jobs that shared a core have inflated wall times; same-shaped systems on the same batches cost
    the same per update, so updates are their fair compute axis."""
    import matplotlib.axes

    lc = load_script("learning_curve")
    nar = tmp_path / "nar" / "train.log"
    nar.parent.mkdir()
    nar.write_text(_NAR_LOG_RESUMED)
    drawn = []
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, x, y, **kw: drawn.append((list(x), list(y))))
    assert lc.main([str(nar), "--png", str(tmp_path / "u.png"), "--x", "num_updates", "--ylabel", "BLEU-4"]) == 0
    assert drawn == [([100, 200, 300], [1.5, 6.5, 12.0])]
    drawn.clear()
    assert lc.main([str(nar), "--png", str(tmp_path / "m.png")]) == 0
    assert drawn == [([0.5, round(62 / 60, 3), round(95 / 60, 3)], [1.5, 6.5, 12.0])]
