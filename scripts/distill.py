#!/usr/bin/env python
"""Sequence-level knowledge distillation for NAR students, in one command (fairseq's documented procedure).

1. Take an autoregressive teacher checkpoint (``--teacher``), or train one with ``fairseq-train`` (``--train-teacher``,
   a fairseq ``transformer`` architecture and budget given by flags).
2. Decode the training split with ``fairseq-generate --gen-subset train`` (beam search, every sentence: the script
   checks that each training id got a hypothesis and, for any that fairseq skipped, e.g. too long for the teacher,
   keeps the original target and reports the count).
3. Re-binarize source + teacher output with the *same* dictionaries into ``--out-bin``; valid/test splits are copied
   unchanged (students are evaluated on real references).

Example::

    python scripts/distill.py --data-bin work/m30k/bin --out-bin work/m30k/bin-distill \\
        --train-teacher --teacher-arch transformer --teacher-max-update 4000 --teacher-save-dir work/m30k/teacher \\
        --teacher-args "--share-all-embeddings --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 ..."
"""
import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-bin", required=True, help="fairseq-preprocess output with the raw (non-distilled) data")
    p.add_argument("--out-bin", required=True, help="where to write the distilled binarized data")
    p.add_argument("--source-lang", "-s", help="source language (default: inferred from --data-bin)")
    p.add_argument("--target-lang", "-t", help="target language (default: inferred from --data-bin)")
    p.add_argument("--teacher", help="checkpoint of an autoregressive fairseq teacher (skip training)")
    p.add_argument("--train-teacher", action="store_true", help="train the teacher with fairseq-train first")
    p.add_argument("--teacher-arch", default="transformer", help="fairseq architecture of the teacher")
    p.add_argument("--teacher-save-dir", help="checkpoint directory for the trained teacher (resumes if present)")
    p.add_argument("--teacher-max-update", type=int, default=0, help="teacher training budget in updates (0: none)")
    p.add_argument("--teacher-stop-time-hours", type=float, default=0, help="teacher training budget in hours")
    p.add_argument("--teacher-args", default="", help="further fairseq-train flags for the teacher, one string")
    p.add_argument("--beam", type=int, default=4, help="teacher beam size when decoding the training set")
    p.add_argument("--lenpen", type=float, default=1.0, help="teacher length penalty")
    p.add_argument("--max-tokens", type=int, default=8000, help="decoding batch size in tokens")
    p.add_argument("--generate-args", default="", help="further fairseq-generate flags, one string")
    p.add_argument("--cpu", action="store_true", help="train and decode on the CPU")
    p.add_argument("--workers", type=int, default=1, help="fairseq-preprocess workers")
    return p


USER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fairseq_nar_plugins")


def run(module, args):
    cmd = [sys.executable, "-m", module] + [str(a) for a in args]
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        sys.exit(f"ERROR: {module} failed with exit code {proc.returncode} (its stderr is above)")
    return proc


def infer_langs(data_bin, src, tgt):
    if src and tgt:
        return src, tgt
    found = sorted(glob.glob(os.path.join(data_bin, "train.*-*.*.idx")))
    if not found:
        sys.exit(f"ERROR: no train.SRC-TGT.*.idx in {data_bin}: pass the fairseq-preprocess output directory")
    pair = os.path.basename(found[0]).split(".")[1]
    s, t = pair.split("-")
    return src or s, tgt or t


def teacher_task(path):
    """The task a checkpoint was trained with (``cfg.task._name``, or legacy ``args.task``), read without its
    tensors; None if the file does not say."""
    sys.path.insert(0, os.path.dirname(USER_DIR))
    from fairseq_nar_plugins.checkpoint_safety import peek_checkpoint  # also allow-lists fairseq's pickled objects

    try:
        state = peek_checkpoint(path)
    except Exception as e:
        sys.exit(f"ERROR: cannot read teacher checkpoint {path!r}: {type(e).__name__}: {e}")
    cfg = state.get("cfg") or {}
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if isinstance(task, dict):
        return task.get("_name")
    return getattr(state.get("args"), "task", None)


def check_teacher(path, generate_args):
    """distill.py decodes with ``--task translation`` (autoregressive teachers). A teacher trained with another task
    (e.g. a non-autoregressive ``translation_lev_ctc`` model) needs that task in --generate-args."""
    task = teacher_task(path)
    if task in (None, "translation") or "--task" in shlex.split(generate_args):
        return
    extra = " --iter-decode-max-iter 0" if task == "translation_lev_ctc" else ""
    sys.exit(f"ERROR: teacher {path!r} was trained with --task {task}, but distill.py decodes the training set with "
             "--task translation (an autoregressive teacher, the usual choice for distillation). To decode with "
             f"this teacher anyway, pass its task to fairseq-generate: --generate-args \"--task {task}{extra}\"")


def read_hypotheses(generate_stdout):
    hyps = {}
    for line in generate_stdout.splitlines():
        m = re.match(r"^H-(\d+)\t[^\t]*\t(.*)$", line)
        if m:
            hyps[int(m.group(1))] = m.group(2)
    return hyps


def main(argv=None):
    args = get_parser().parse_args(argv)
    if not os.path.isdir(args.data_bin):
        sys.exit(f"ERROR: --data-bin {args.data_bin!r} does not exist")
    if bool(args.teacher) == bool(args.train_teacher):
        sys.exit("ERROR: give exactly one of --teacher CHECKPOINT or --train-teacher")
    src, tgt = infer_langs(args.data_bin, args.source_lang, args.target_lang)
    cpu = ["--cpu"] if args.cpu else []

    teacher = args.teacher
    if args.train_teacher:
        if not args.teacher_save_dir:
            sys.exit("ERROR: --train-teacher needs --teacher-save-dir")
        if not (args.teacher_max_update or args.teacher_stop_time_hours):
            sys.exit("ERROR: --train-teacher needs a budget: --teacher-max-update or --teacher-stop-time-hours")
        budget = []
        if args.teacher_max_update:
            budget += ["--max-update", args.teacher_max_update]
        if args.teacher_stop_time_hours:
            budget += ["--stop-time-hours", args.teacher_stop_time_hours]
        # --user-dir: under torch >= 2.6 fairseq checkpoints (AR ones too) load only with the plugin's allow-list
        run("fairseq_cli.train", [args.data_bin, "--user-dir", USER_DIR, "--task", "translation", "-s", src, "-t", tgt,
                                  "--arch", args.teacher_arch, "--save-dir", args.teacher_save_dir,
                                  "--no-epoch-checkpoints", *budget, *cpu, *shlex.split(args.teacher_args)])
        teacher = os.path.join(args.teacher_save_dir, "checkpoint_last.pt")
    if not os.path.isfile(teacher):
        sys.exit(f"ERROR: teacher checkpoint {teacher!r} not found")
    check_teacher(teacher, args.generate_args)

    gen = run("fairseq_cli.generate", [args.data_bin, "--user-dir", USER_DIR, "--task", "translation", "-s", src, "-t", tgt,
                                       "--path", teacher, "--gen-subset", "train", "--beam", args.beam,
                                       "--lenpen", args.lenpen, "--max-tokens", args.max_tokens,
                                       "--required-batch-size-multiple", "1", "--skip-invalid-size-inputs-valid-test",
                                       *cpu, *shlex.split(args.generate_args)])
    hyps = read_hypotheses(gen.stdout)

    sys.path.insert(0, os.path.dirname(USER_DIR))
    import fairseq_nar_plugins  # noqa: F401  (reads pretrained vocabulary bridges, e.g. BERT data for BnB)
    from fairseq.data import Dictionary, data_utils

    src_dict = Dictionary.load(os.path.join(args.data_bin, f"dict.{src}.txt"))
    tgt_dict = Dictionary.load(os.path.join(args.data_bin, f"dict.{tgt}.txt"))
    prefix = os.path.join(args.data_bin, f"train.{src}-{tgt}.")
    src_ds = data_utils.load_indexed_dataset(prefix + src, src_dict)
    tgt_ds = data_utils.load_indexed_dataset(prefix + tgt, tgt_dict)
    if src_ds is None or tgt_ds is None:
        sys.exit(f"ERROR: could not read {prefix}{src} / {prefix}{tgt}")

    text_dir = os.path.join(args.out_bin, "text")
    os.makedirs(text_dir, exist_ok=True)
    kept_original = 0
    with open(os.path.join(text_dir, f"train.{src}"), "w") as fs, open(os.path.join(text_dir, f"train.{tgt}"), "w") as ft:
        for i in range(len(src_ds)):
            fs.write(src_dict.string(src_ds[i]) + "\n")
            if i in hyps:
                ft.write(hyps[i] + "\n")
            else:
                kept_original += 1
                ft.write(tgt_dict.string(tgt_ds[i]) + "\n")
    print(f"| distilled {len(src_ds) - kept_original:,} of {len(src_ds):,} training pairs with the teacher; "
          f"{kept_original:,} kept their original target (skipped by fairseq-generate)")

    run("fairseq_cli.preprocess", ["--user-dir", USER_DIR, "--source-lang", src, "--target-lang", tgt,
                                   "--trainpref", os.path.join(text_dir, "train"), "--destdir", args.out_bin,
                                   "--srcdict", os.path.join(args.data_bin, f"dict.{src}.txt"),
                                   "--tgtdict", os.path.join(args.data_bin, f"dict.{tgt}.txt"),
                                   "--workers", args.workers])
    for path in glob.glob(os.path.join(args.data_bin, "*")):
        name = os.path.basename(path)
        if (name.startswith("valid") or name.startswith("test")) and name.endswith((".bin", ".idx")):
            shutil.copy(path, os.path.join(args.out_bin, name))
    print(f"| distilled data in {args.out_bin} (valid/test copied unchanged from {args.data_bin})")


if __name__ == "__main__":
    main()
