#!/usr/bin/env python
"""Fault drill: a fairseq-train run killed with SIGKILL at many points must finish as if it was never killed.

Usage::

    python tests/fault_drill.py DATA_BIN WORK_DIR [--max-update 50] [--save-interval-updates 10]

The same ``fairseq-train`` command (``tests/helpers_cli.ctc_train_args``: nat_ctc_transformer_tiny, adam, no
dropout, seed 1) is run

1. once without faults into ``WORK_DIR/reference``;
2. again and again into ``WORK_DIR/drill`` until it exits 0. Each run is a child process (forked from this
   driver, which imported fairseq once, so that a restart costs training time, not import time) that kills itself
   with SIGKILL at the next point of :data:`FAULTS`: after a given update, or *while a checkpoint file is being
   written* (half of its bytes on disk, from a hook in the plugin's ``checkpoint_safety.atomic_write`` path), or
   while ``checkpoint_last.pt`` is copied in place the way fairseq's ``shutil.copyfile`` did (leaving it truncated,
   as in probe 4b). The last run, with every fault spent, is a fresh ``python -m fairseq_cli.train`` process.

After every kill the driver checks that each ``checkpoint*.pt`` in the save directory is a complete, loadable file
(except the one the in-place copy truncated on purpose). At the end it compares the drill's ``checkpoint_last.pt``
with the reference's: same number of updates, identical parameters (training is deterministic, so the updates lost
since the last save are replayed exactly). It prints one JSON line (``DRILL {...}``) and exits 0 if everything held.
"""
import argparse
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

#: (kind, file-name pattern or None, update count): the kills, in the order the training run meets them.
#: With --save-interval-updates 10 and the toy data (24 updates an epoch, --no-epoch-checkpoints) the uninterrupted
#: run saves at 10, 20, 30, 40, 50 (checkpoint_E_U.pt, copied to checkpoint_best.pt and checkpoint_last.pt), at 24
#: (end of epoch 1, no better loss: checkpoint_last.pt) and at 48 (end of epoch 2: checkpoint_best.pt, copied to
#: checkpoint_last.pt).
FAULTS = [
    ("update", None, 13),                           # between two saves: resumes at 10
    ("write", r"checkpoint_\d+_\d+\.pt", 20),        # while the numbered checkpoint is written: resumes at 10
    ("write", r"checkpoint_best\.pt", 30),           # while copying to checkpoint_best.pt: resumes at 24
    ("write", r"checkpoint_last\.pt", 40),           # while copying to checkpoint_last.pt: resumes at 30
    ("plain_copy", r"checkpoint_last\.pt", 40),      # fairseq's own in-place copy, left truncated: falls back to 40
    ("update", None, 45),                            # checkpoint_last.pt still truncated: falls back to 40 again
    ("write", r"checkpoint_best\.pt", 48),           # while the end-of-epoch checkpoint is written: again 40
]


def train_args(data, save_dir, max_update, save_interval):
    from helpers_cli import ctc_train_args

    return ctc_train_args(data, save_dir, max_update, extra=["--save-interval-updates", str(save_interval),
                                                             "--log-interval", "10"])


# --------------------------------------------------------------------------------------------------- the child
def _die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(fault):
    """Install the hooks that SIGKILL this process at ``fault`` (called in the forked child only)."""
    from fairseq import trainer as trainer_mod

    from fairseq_nar_plugins import checkpoint_safety

    kind, pattern, at_update = fault
    progress = {"updates": 0}
    train_step = trainer_mod.Trainer.train_step

    def counting_train_step(self, *args, **kwargs):
        out = train_step(self, *args, **kwargs)
        progress["updates"] = self.get_num_updates()
        if kind == "update" and progress["updates"] == at_update:
            print(f"DRILL: SIGKILL after update {at_update}", flush=True)
            _die()
        return out

    trainer_mod.Trainer.train_step = counting_train_step

    def hit(path):
        return progress["updates"] == at_update and re.fullmatch(pattern, os.path.basename(path))

    if kind == "write":
        atomic_write = checkpoint_safety.atomic_write

        def dying_atomic_write(path, write):
            if not hit(path):
                return atomic_write(path, write)

            def half_then_die(f):
                buf = io.BytesIO()
                write(buf)
                data = buf.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                print(f"DRILL: SIGKILL while writing {os.path.basename(path)} at update {at_update} "
                      f"({len(data) // 2} of {len(data)} bytes written)", flush=True)
                _die()

            return atomic_write(path, half_then_die)

        checkpoint_safety.atomic_write = dying_atomic_write
    elif kind == "plain_copy":
        atomic_copy = checkpoint_safety.atomic_copy

        def in_place_copy_then_die(src, dst):
            if not hit(dst):
                return atomic_copy(src, dst)
            with open(src, "rb") as fin:
                data = fin.read()
            with open(dst, "wb") as fout:  # what shutil.copyfile does: truncate the target, then write into it
                fout.write(data[: len(data) // 2])
                fout.flush()
                os.fsync(fout.fileno())
            print(f"DRILL: SIGKILL during an in-place copy to {os.path.basename(dst)} at update {at_update}",
                  flush=True)
            _die()

        checkpoint_safety.atomic_copy = in_place_copy_then_die


def run_forked(args, log_path, fault=None):
    """Run fairseq-train ``args`` in a forked child (killed at ``fault``); returns its exit status (-9: SIGKILL)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if fault is not None:
                _arm(fault)
            from fairseq_cli.train import cli_main

            sys.argv = ["fairseq-train"] + [str(a) for a in args]
            cli_main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run_fresh(args, log_path):
    """The same command as a new ``python -m fairseq_cli.train`` process."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with open(log_path, "a") as log:
        return subprocess.run([sys.executable, "-m", "fairseq_cli.train"] + [str(a) for a in args], stdout=log,
                              stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode


# -------------------------------------------------------------------------------------------------- checking
def broken_checkpoints(save_dir, allowed=()):
    """Names of checkpoint files in ``save_dir`` that do not load (besides ``allowed``)."""
    from fairseq_nar_plugins import checkpoint_safety

    bad = []
    for name in sorted(os.listdir(save_dir)):
        if not name.startswith("checkpoint") or not name.endswith(".pt") or name in allowed:
            continue
        path = os.path.join(save_dir, name)
        try:
            checkpoint_safety.verify_checkpoint_file(path)
            checkpoint_safety.peek_checkpoint(path)
        except Exception as e:
            bad.append(f"{name}: {type(e).__name__}: {e}")
    return bad


def final_state(path):
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["optimizer_history"][-1]["num_updates"], state["model"]


def drill(data, work, max_update=50, save_interval=10, faults=None):
    faults = list(FAULTS if faults is None else faults)
    data, work = os.path.abspath(data), os.path.abspath(work)
    os.makedirs(work, exist_ok=True)
    ref_dir, drill_dir = os.path.join(work, "reference"), os.path.join(work, "drill")
    report = {"kills": 0, "faults": len(faults), "runs": 0, "problems": [], "fallback_warnings": 0}
    t0 = time.time()
    rc = run_forked(train_args(data, ref_dir, max_update, save_interval), os.path.join(work, "reference.log"))
    if rc != 0:
        report["problems"].append(f"reference run failed with {rc} (see {work}/reference.log)")
        return report
    report["reference_seconds"] = round(time.time() - t0, 1)
    args = train_args(data, drill_dir, max_update, save_interval)
    log = os.path.join(work, "drill.log")
    truncated = set()
    t0 = time.time()
    for fault in faults:
        report["runs"] += 1
        rc = run_forked(args, log, fault)
        if rc != -signal.SIGKILL:
            report["problems"].append(f"run {report['runs']} (fault {fault}) ended with {rc}, not SIGKILL")
            return report
        report["kills"] += 1
        if fault[0] == "plain_copy":  # truncated on purpose; replaced by the first complete save after it
            truncated.add("checkpoint_last.pt")
        bad = broken_checkpoints(drill_dir, allowed=truncated)
        if bad:
            report["problems"].append(f"after kill {report['kills']} ({fault}): broken files {bad}")
    report["runs"] += 1
    rc = run_fresh(args, log)
    report["drill_seconds"] = round(time.time() - t0, 1)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report["cpu_seconds_all_runs"] = round(usage.ru_utime + usage.ru_stime, 1)
    if rc != 0:
        report["problems"].append(f"the final resume exited {rc} (see {log})")
        return report
    with open(log) as f:
        text = f.read()
    report["fallback_warnings"] = len(re.findall(r"cannot be loaded .*; resuming from \S*checkpoint_\d+_40\.pt", text))
    bad = broken_checkpoints(drill_dir)
    if bad:
        report["problems"].append(f"after the final run: broken files {bad}")
    leftovers = [n for n in os.listdir(drill_dir) if ".nar-tmp-" in n]
    if leftovers:
        report["problems"].append(f"temporary files left: {leftovers}")
    (ref_updates, ref_model), (updates, model) = (final_state(os.path.join(d, "checkpoint_last.pt"))
                                                  for d in (ref_dir, drill_dir))
    report["updates"], report["reference_updates"] = updates, ref_updates
    if updates != ref_updates:
        report["problems"].append(f"{updates} updates after the drill, {ref_updates} in the reference")
    import torch

    differing = [k for k in ref_model if k not in model or not torch.equal(ref_model[k], model[k])]
    report["differing_tensors"] = differing[:10]
    if differing:
        report["max_abs_difference"] = max(float((ref_model[k] - model[k]).abs().max()) for k in differing
                                           if k in model)
        report["problems"].append(f"{len(differing)} tensors differ from the uninterrupted run")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="binarized toy data (fairseq-preprocess output of tests/toy_data.py)")
    p.add_argument("work", help="empty directory for the two runs and their logs")
    p.add_argument("--max-update", type=int, default=50)
    p.add_argument("--save-interval-updates", type=int, default=10)
    args = p.parse_args(argv)
    import torch

    import fairseq_nar_plugins  # noqa: F401  (the plugin, as --user-dir would load it)
    from fairseq_cli import train  # noqa: F401  (fairseq's imports, once for all children)

    torch.set_num_threads(1)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch's lazy optimizer imports, once
    report = drill(args.data, args.work, args.max_update, args.save_interval_updates)
    print("DRILL " + json.dumps(report), flush=True)
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
