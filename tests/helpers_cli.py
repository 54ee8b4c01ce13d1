"""Running fairseq's command-line tools in subprocesses, as a user would."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(ROOT, "fairseq_nar_plugins")


def run_cli(module, args, env=None, check=True, timeout=900):
    """Run ``python -m module args``; returns CompletedProcess with text stdout/stderr (stderr merged if failing)."""
    full_env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("NAR_TEST_THREADS", "1"), PYTHONWARNINGS="ignore")
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", module] + [str(a) for a in args],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def preprocess_toy(raw_dir, dest_dir):
    run_cli("fairseq_cli.preprocess", [
        "--source-lang", "src", "--target-lang", "tgt", "--joined-dictionary", "--workers", "1",
        "--trainpref", f"{raw_dir}/train", "--validpref", f"{raw_dir}/valid", "--testpref", f"{raw_dir}/test",
        "--destdir", dest_dir,
    ])
    return dest_dir


def ctc_train_args(data_dir, save_dir, max_update, extra=()):
    return [
        data_dir, "--user-dir", USER_DIR, "--task", "translation_lev_ctc", "--noise", "no_noise",
        "--arch", "nat_ctc_transformer_tiny", "--share-all-embeddings", "--criterion", "ctc",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "100", "--warmup-init-lr", "1e-07", "--dropout", "0.0", "--max-tokens", "2048",
        "--max-update", str(max_update), "--save-dir", save_dir, "--no-epoch-checkpoints", "--cpu",
        "--num-workers", "0", "--data-buffer-size", "0", "--seed", "1", "--log-format", "simple",
        "--log-interval", "50",
        *extra,
    ]
