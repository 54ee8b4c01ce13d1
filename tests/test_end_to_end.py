"""fairseq-train -> fairseq-generate with --user-dir on a toy task the CTC model must actually learn."""
import os
import re
import shutil

from helpers_cli import USER_DIR, ctc_train_args, run_cli

from fairseq_nar_plugins.scoring import check_coverage, read_generate_output, sacrebleu_score


def generate(data_bin, ckpt, extra=(), check=True):
    return run_cli("fairseq_cli.generate", [
        data_bin, "--user-dir", USER_DIR, "--task", "translation_lev_ctc", "--path", ckpt, "--gen-subset", "test",
        "--iter-decode-max-iter", "0", "--batch-size", "32", "--required-batch-size-multiple", "1", "--cpu",
        *extra,
    ], check=check)


def toy_references(data_bin):
    with open(os.path.join(os.path.dirname(data_bin), "raw", "test.tgt")) as f:
        return [line.strip() for line in f]


def test_ctc_model_learns_toy_task(toy_data_bin, toy_ctc_checkpoint, tmp_path):
    save_dir, train_log = toy_ctc_checkpoint
    assert "all 4,000 pairs can be CTC-aligned" in train_log  # the policy report, once for the training split
    proc = generate(toy_data_bin, os.path.join(save_dir, "checkpoint_last.pt"))
    out = tmp_path / "gen.out"
    out.write_text(proc.stdout)
    refs = toy_references(toy_data_bin)
    hyps = check_coverage(read_generate_output(str(out), "H"), len(refs))
    bleu, _ = sacrebleu_score(hyps, refs)
    assert bleu.score > 60, f"toy BLEU {bleu.score:.1f}: the CTC model did not learn"
    # greedy CTC hypotheses come with per-token scores
    p_line = next(line for line in proc.stdout.splitlines() if line.startswith("P-"))
    assert all(float(x) <= 0 for x in p_line.split("\t")[1].split())


def test_training_resumes_from_last_checkpoint(toy_data_bin, toy_ctc_checkpoint, tmp_path):
    save_dir, _ = toy_ctc_checkpoint
    resumed = str(tmp_path / "ckpt")
    shutil.copytree(save_dir, resumed)
    proc = run_cli("fairseq_cli.train", ctc_train_args(toy_data_bin, resumed, 450))
    log = proc.stdout + proc.stderr
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 400 updates\)", log), log[-2000:]
    assert "num_updates 450" in log or "num_updates=450" in log


def test_generate_with_wrong_task_explains_what_to_do(toy_data_bin, toy_ctc_checkpoint):
    save_dir, _ = toy_ctc_checkpoint
    proc = run_cli("fairseq_cli.generate", [
        toy_data_bin, "--user-dir", USER_DIR, "--path", os.path.join(save_dir, "checkpoint_last.pt"),
        "--gen-subset", "test", "--cpu"], check=False)
    assert proc.returncode != 0
    assert "use --task translation_lev_ctc" in proc.stderr


def test_generate_without_user_dir_fails_at_checkpoint_load(toy_data_bin, toy_ctc_checkpoint):
    """Documented in README troubleshooting: without --user-dir the checkpoint does not even unpickle."""
    save_dir, _ = toy_ctc_checkpoint
    proc = run_cli("fairseq_cli.generate", [
        toy_data_bin, "--path", os.path.join(save_dir, "checkpoint_last.pt"), "--gen-subset", "test", "--cpu"],
        check=False)
    assert proc.returncode != 0
    assert "argparse.Namespace" in proc.stderr or "Replacement index" in proc.stderr
