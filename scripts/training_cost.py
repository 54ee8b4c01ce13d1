#!/usr/bin/env python
"""Training cost per update of every system of ``make bench``, on the SAME batches, against the AR transformer.

    python scripts/training_cost.py DATA_BIN                       # every system, 3 warm-up + 20 timed updates
    python scripts/training_cost.py DATA_BIN --systems transformer,deer --updates 5 --warmup 1
    # before/after on the same batches, interleaved (A B A B ...), medians over --repeats:
    python scripts/training_cost.py DATA_BIN --user-dir before=/path/old/fairseq_nar_plugins \
        --user-dir after=fairseq_nar_plugins --repeats 3
    # fp32 against bf16 autocast (same batches, same seeds):
    python scripts/training_cost.py DATA_BIN --precision fp32 --precision bf16 --updates 100

DATA_BIN is a binarized parallel corpus with a joined dictionary (``fairseq-preprocess --joined-dictionary``, e.g.
``examples/multi30k/prepare.sh`` writes ``WORK/bin``). Protocol:

* one list of training batches for all systems: the train split's sentence pairs, bucketed by length as fairseq does
  (``--max-tokens`` 2048 on ``max(source, target)`` tokens with ``<s>``, batch sizes a multiple of 8), shuffled
  with ``--seed``; pairs that a CTC model cannot align at upsample ratio 2 (the ``translation_lev_ctc`` rule) are
  left out for every system, so every system sees exactly the same sentences;
* each system runs in its own process with ``--threads`` threads (OpenMP passive waiting): fairseq's task, model,
  criterion and ``Trainer`` are built from the system's ``fairseq-train`` flags (make bench's, see ``SYSTEMS``), and
  ``Trainer.train_step`` (forward, backward, optimizer step: what one update of ``fairseq-train`` costs, batch
  collation aside) is timed on each batch; the first ``--warmup`` updates are not counted;
* reported per system: CPU seconds per update (process CPU time, mean over the timed updates; on a shared machine
  it is far steadier than wall time, which is reported beside it), target tokens (words + ``</s>``, the same count
  for every system) per CPU second (= per second per core), and the ratio of its CPU seconds per update to the AR
  transformer's of the same variant (equal to the ratio of costs per target token, as the batches are the same);
* ``--precision bf16``: the task's ``train_step`` (forward and loss) runs under ``torch.autocast`` with bfloat16 on
  the model's device: weights, gradients and the optimizer stay fp32 (the ``translation_lev_ctc`` task offers the
  same with ``--autocast-bf16``).

Variants (``--user-dir LABEL=PATH`` x ``--precision``) run interleaved for each system, ``--repeats`` times; the
table gives medians over repeats. Prints markdown tables (one per variant, and a comparison when there are several);
``--json-out`` keeps every timing and the per-update losses.
"""
import argparse
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

logging.basicConfig(level=logging.WARNING)  # before fairseq's imports configure the root logger at INFO
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_USER_DIR = os.path.join(ROOT, "fairseq_nar_plugins")

SIZE = ("--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 "
        "--encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 "
        "--decoder-attention-heads 4")
DEER = ("--task translation_lev_ctc --noise random_delete --arch deer_tiny --encoder-layers 6 --encoder-embed-dim 256 "
        "--encoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --share-all-embeddings --criterion ctc "
        "--label-smoothing 0.1 --lr 0.001 --warmup-updates 300")
#: make bench's training flags (examples/multi30k/bench.sh) per system; the first one is the AR reference
SYSTEMS = {
    "transformer": f"--task translation --arch transformer {SIZE} --share-all-embeddings --dropout 0.1 "
                   "--criterion label_smoothed_cross_entropy --label-smoothing 0.1 --lr 0.001 --warmup-updates 300",
    "cmlm_transformer": f"--task translation_lev --noise random_mask --arch cmlm_transformer {SIZE} "
                        "--share-all-embeddings --apply-bert-init --dropout 0.1 --criterion nat_loss "
                        "--label-smoothing 0.1 --length-loss-factor 0.1 --lr 0.001 --warmup-updates 300",
    "nat_ctc_transformer": "--task translation_lev_ctc --noise no_noise --arch nat_ctc_transformer_small "
                           "--share-all-embeddings --encoder-normalize-before --decoder-normalize-before "
                           "--dropout 0.1 --criterion ctc --label-smoothing 0.1 --lr 0.002 --warmup-updates 100",
    "bnb": "--task translation_lev_ctc --noise full_mask --arch bnb_tiny --length-mode ctc --encoder-layers 3 "
           "--encoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --criterion ctc "
           "--label-smoothing 0.1 --lr 0.001 --warmup-updates 300",
    "deer_no_roll_in": f"{DEER} --no-editor-ctc-roll-in",
    "deer": DEER,
    "deer_prune": f"{DEER} --prune --prune-sizes '1.0 0.75 0.5 0.25'",
}
AR = "transformer"
COMMON = ("--optimizer adam --adam-betas (0.9,0.98) --clip-norm 1.0 --lr-scheduler inverse_sqrt "
          "--warmup-init-lr 1e-07 --cpu --num-workers 0 --seed {seed} --max-tokens {max_tokens} "
          "--log-format simple --no-progress-bar")
CTC_UPSAMPLE_RATIO = 2.0


# ------------------------------------------------------------------------------------------------------ batches
def _language_pair(data: str, split: str):
    pairs = sorted({name.split(".")[1] for name in os.listdir(data)
                    if name.startswith(split + ".") and name.endswith(".idx") and name.count(".") == 3})
    if len(pairs) != 1:
        raise SystemExit(f"error: {data} holds {len(pairs)} language pairs for split {split!r} ({pairs}); expected "
                         f"one {split}.SRC-TGT.SRC.idx/.bin pair written by fairseq-preprocess")
    return pairs[0].split("-")


def make_batches(data: str, split: str, max_tokens: int, n_batches: int, seed: int, max_positions: int):
    """``(batches, target_tokens)``: ``n_batches`` lists of sentence ids and each batch's number of target tokens
    (words + ``</s>``). Every pair is CTC-alignable at upsample ratio 2, and no side exceeds ``max_positions``."""
    import numpy as np
    from fairseq.data import data_utils

    sys.path.insert(0, ROOT)
    from fairseq_nar_plugins.modules.ctc.ctc_utils import ctc_required_frames, num_frames
    import torch

    src, tgt = _language_pair(data, split)
    prefix = os.path.join(data, f"{split}.{src}-{tgt}.")
    src_ds = data_utils.load_indexed_dataset(prefix + src, None)
    tgt_ds = data_utils.load_indexed_dataset(prefix + tgt, None)
    if src_ds is None or tgt_ds is None:
        raise SystemExit(f"error: cannot read {prefix}{src} / {prefix}{tgt} (.idx/.bin) in {data}")
    # the NAR tasks prepend <s>: sizes with it (the AR task's are one smaller, so its batches fit too)
    src_sizes = np.asarray(src_ds.sizes, dtype=np.int64) + 1
    tgt_sizes = np.asarray(tgt_ds.sizes, dtype=np.int64) + 1
    frames = num_frames(torch.from_numpy(src_sizes), CTC_UPSAMPLE_RATIO).numpy()
    keep = (src_sizes <= max_positions) & (tgt_sizes <= max_positions)
    for i in np.nonzero(keep & (frames < 2 * (tgt_sizes - 2)))[0]:  # only these can fail (as translation_lev_ctc)
        keep[i] = frames[i] >= ctc_required_frames(tgt_ds[int(i)][:-1].tolist())
    rng = np.random.RandomState(seed)
    indices = rng.permutation(len(src_sizes))
    indices = indices[keep[indices]]
    indices = indices[np.argsort(tgt_sizes[indices], kind="mergesort")]
    indices = indices[np.argsort(src_sizes[indices], kind="mergesort")]
    num_tokens = np.maximum(src_sizes, tgt_sizes)
    batches = data_utils.batch_by_size(indices, lambda i: int(num_tokens[i]), max_tokens=max_tokens,
                                       required_batch_size_multiple=8)
    order = rng.permutation(len(batches))
    if len(batches) < n_batches:
        raise SystemExit(f"error: {data} has only {len(batches)} training batches of {max_tokens} tokens; "
                         f"--warmup + --updates asks for {n_batches}")
    chosen = [[int(i) for i in batches[j]] for j in order[:n_batches]]
    return chosen, [int((tgt_sizes[b] - 1).sum()) for b in chosen]


# ------------------------------------------------------------------------------------------------------- worker
def run_worker(spec: dict) -> dict:
    """One system, one variant: build fairseq's trainer from the flags and time ``train_step`` on each batch."""
    import torch

    torch.set_num_threads(spec["threads"])
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer
    import numpy as np

    argv = [spec["data"], "--user-dir", spec["user_dir"]] + shlex.split(spec["args"])
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=argv)
    cfg = convert_namespace_to_omegaconf(args)
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)
    plugin = sys.modules[os.path.basename(os.path.abspath(spec["user_dir"]))].__file__
    task = tasks.setup_task(cfg.task)
    task.load_dataset(cfg.dataset.train_subset, combine=False, epoch=1)
    dataset = task.dataset(cfg.dataset.train_subset)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    if spec["precision"] == "bf16":
        train_step = task.train_step

        from fairseq_nar_plugins.tasks.autocast import bf16_autocast

        def autocast_train_step(sample, model, *a, **k):  # as the tasks' --autocast-bf16 trains
            with bf16_autocast(next(model.parameters()).device.type, training=True):
                return train_step(sample, model, *a, **k)

        task.train_step = autocast_train_step
    trainer = Trainer(cfg, task, model, criterion)
    trainer.begin_epoch(1)
    times, cpu, losses = [], [], []
    for batch in spec["batches"]:
        sample = dataset.collater([dataset[i] for i in batch])
        start, cpu_start = time.perf_counter(), time.process_time()
        log = trainer.train_step([sample])
        cpu.append(time.process_time() - cpu_start)
        times.append(time.perf_counter() - start)
        losses.append(float(log["loss"]) if log and "loss" in log else float("nan"))
    return {"times": times, "cpu_times": cpu, "losses": losses, "plugin": plugin,
            "params": sum(p.numel() for p in model.parameters())}


# ------------------------------------------------------------------------------------------------------- parent
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("data", help="binarized parallel data (fairseq-preprocess --joined-dictionary output)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated systems among {', '.join(SYSTEMS)} and those of --system "
                   f"(default: all built-in ones); {AR!r} (the AR reference of the ratios) is always added")
    p.add_argument("--system", action="append", default=[], metavar="NAME=FLAGS",
                   help="add or replace a system: NAME and its fairseq-train flags (task, arch, criterion, lr, ...; "
                   "the optimizer and data flags are common to all)")
    p.add_argument("--extra-args", default="", metavar="FLAGS",
                   help="fairseq-train flags appended to every system's (e.g. '--dropout 0.3')")
    p.add_argument("--user-dir", action="append", default=[], metavar="[LABEL=]PATH",
                   help="plugin directory (fairseq --user-dir) to measure; several (LABEL=PATH) are compared on the "
                   "same batches, interleaved (default: this checkout's fairseq_nar_plugins)")
    p.add_argument("--precision", action="append", choices=("fp32", "bf16"), default=[],
                   help="fp32, or bf16 autocast of the forward pass (weights and optimizer fp32); several are "
                   "compared (default: fp32)")
    p.add_argument("--updates", type=int, default=20, help="timed updates per system (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates before them (default 3)")
    p.add_argument("--max-tokens", type=int, default=2048, help="tokens per batch (default 2048, make bench's)")
    p.add_argument("--max-positions", type=int, default=128,
                   help="leave out pairs with a side longer than this (tokens; default 128)")
    p.add_argument("--split", default="train", help="data split the batches come from (default train)")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads per system (default 1)")
    p.add_argument("--repeats", type=int, default=1, help="runs of every system and variant (median reported)")
    p.add_argument("--seed", type=int, default=1, help="batch choice and training seed (default 1)")
    p.add_argument("--json-out", metavar="FILE", help="write every timing and loss here")
    p.add_argument("--markdown-out", metavar="FILE", help="write the tables here too")
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for flag, value in (("--updates", args.updates), ("--threads", args.threads), ("--repeats", args.repeats),
                        ("--max-tokens", args.max_tokens)):
        if value < 1:
            p.error(f"{flag} must be at least 1, got {value}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def systems_from(args) -> dict:
    systems = dict(SYSTEMS)
    for item in args.system:
        name, sep, flags = item.partition("=")
        if not sep or not name.strip() or not flags.strip():
            raise SystemExit(f"error: --system {item!r}: expected NAME=FLAGS")
        systems[name.strip()] = flags
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in systems]
    if unknown:
        raise SystemExit(f"error: --systems: unknown {unknown}; known: {sorted(systems)} (add one with --system)")
    if AR not in names:
        names.insert(0, AR)
    return {n: systems[n] for n in names}


def user_dirs_from(args) -> dict:
    out = {}
    for item in args.user_dir or [DEFAULT_USER_DIR]:
        label, sep, path = item.partition("=")
        if not sep:
            label, path = ("plugins" if len(args.user_dir) <= 1 else item), item
        path = os.path.abspath(path)
        if not os.path.isfile(os.path.join(path, "__init__.py")):
            raise SystemExit(f"error: --user-dir {item!r}: {path} is not a plugin directory (no __init__.py)")
        out[label] = path
    return out


def run_one(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]),
               OMP_WAIT_POLICY="PASSIVE", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)  # the plugin comes from --user-dir only
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), spec["data"], "--worker", f.name],
                              env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise SystemExit(f"error: {spec['system']} [{spec['variant']}] failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs, tokens, warmup, threads):
    """Medians over repeats of the mean CPU and wall seconds per timed update, and target tokens per CPU second."""
    n = len(tokens[warmup:])
    cpu = statistics.median(statistics.mean(r["cpu_times"][warmup:]) for r in runs)
    wall = statistics.median(statistics.mean(r["times"][warmup:]) for r in runs)
    return {"cpu_s_per_update": cpu, "wall_s_per_update": wall,
            "tok_per_s_per_core": sum(tokens[warmup:]) / (cpu * n),
            "final_loss": statistics.median(statistics.mean(r["losses"][-5:]) for r in runs)}


def tables(results, systems, variants, args) -> str:
    out = []
    for v in variants:
        ar = results[(AR, v)]["cpu_s_per_update"]
        out.append(f"\n### {v}: {args.updates} updates after {args.warmup} warm-up ones, {args.max_tokens}-token "
                   f"batches, {args.threads} thread(s), median of {args.repeats}\n")
        out.append("| system | CPU s / update | wall s / update | target tok / s / core | cost / AR | "
                   "loss (last 5) |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for name in systems:
            r = results[(name, v)]
            out.append(f"| {name} | {r['cpu_s_per_update']:.3f} | {r['wall_s_per_update']:.3f} | "
                       f"{r['tok_per_s_per_core']:.0f} | {r['cpu_s_per_update'] / ar:.2f}x | {r['final_loss']:.3f} |")
    if len(variants) > 1:
        base = variants[0]
        out.append(f"\n### CPU s / update by variant (speed-up against {base})\n")
        out.append("| system | " + " | ".join(variants) + " | " +
                   " | ".join(f"{base} / {v}" for v in variants[1:]) + " |")
        out.append("|---|" + "---:|" * (2 * len(variants) - 1))
        for name in systems:
            cells = [f"{results[(name, v)]['cpu_s_per_update']:.3f}" for v in variants]
            speed = [f"{results[(name, base)]['cpu_s_per_update'] / results[(name, v)]['cpu_s_per_update']:.2f}x"
                     for v in variants[1:]]
            out.append(f"| {name} | " + " | ".join(cells + speed) + " |")
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        with open(args.worker) as f:
            spec = json.load(f)
        print(json.dumps(run_worker(spec)))
        return
    systems = systems_from(args)
    user_dirs = user_dirs_from(args)
    precisions = args.precision or ["fp32"]
    variants = {(f"{label} {p}" if len(precisions) > 1 and len(user_dirs) > 1 else
                 label if len(precisions) == 1 else p): (path, p)
                for label, path in user_dirs.items() for p in precisions}
    batches, tokens = make_batches(args.data, args.split, args.max_tokens, args.warmup + args.updates, args.seed,
                                   args.max_positions)
    print(f"{len(batches)} batches, {sum(len(b) for b in batches)} sentences, {sum(tokens)} target tokens; "
          f"systems {list(systems)}; variants {list(variants)}", flush=True)
    common = COMMON.format(seed=args.seed, max_tokens=args.max_tokens)
    raw = {}
    for name, flags in systems.items():
        for rep in range(args.repeats):
            for variant, (path, precision) in variants.items():
                spec = {"system": name, "variant": variant, "data": os.path.abspath(args.data), "user_dir": path,
                        "precision": precision, "threads": args.threads, "batches": batches,
                        "args": f"{flags} {common} {args.extra_args}"}
                result = run_one(spec)
                raw.setdefault((name, variant), []).append(result)
                cpu, wall = result["cpu_times"][args.warmup:], result["times"][args.warmup:]
                print(f"  {name} [{variant}] run {rep + 1}: {statistics.mean(cpu):.3f} CPU s/update "
                      f"(min {min(cpu):.3f}, max {max(cpu):.3f}), wall {statistics.mean(wall):.3f}; "
                      f"loss {result['losses'][-1]:.3f}", flush=True)
    results = {k: summarise(v, tokens, args.warmup, args.threads) for k, v in raw.items()}
    text = tables(results, list(systems), list(variants), args)
    print(text)
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(text.lstrip() + "\n")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "tokens": tokens, "batches": batches,
                       "systems": systems, "variants": {k: list(v) for k, v in variants.items()},
                       "runs": [{"system": s, "variant": v, **r} for (s, v), rs in raw.items() for r in rs],
                       "summary": [{"system": s, "variant": v, **r} for (s, v), r in results.items()]}, f, indent=1)


if __name__ == "__main__":
    main()
