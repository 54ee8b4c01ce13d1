#!/usr/bin/env python
"""What hard early exit buys a trained ELMER checkpoint: per exit threshold, quality (sacreBLEU with --reference),
the mean exit layer of the emitted tokens, the share of the full-depth layer work done, the mean number of layers
the loop ran, and the wall-clock time of fairseq's generation call at batch 1 and at --batch-size, against the same
model run to full depth (threshold 0: every token exits at the last layer).

Decoding and timing go through the benchmark's code (fairseq's task.build_generator + task.inference_step, timed as
fairseq-generate's gen_timer times, rounds interleaved over the thresholds, medians reported).

Usage:
  python examples/elmer/exit_report.py --data DATA_BIN --path CKPT [--source-lang src --target-lang tgt]
      [--gen-subset test] [--thresholds 0.25 0.5 1.0] [--reference test.detok.tgt] [--batch-size 64]
      [--latency-sentences 32] [--repeats 3] [--fairseq-args '--bpe ...'] [--json report.json]
"""
import argparse
import json
import logging
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from fairseq_nar_plugins.evaluation.benchmark import _decode_strings  # noqa: E402
from fairseq_nar_plugins.evaluation.metrics import read_lines, sacrebleu_corpus  # noqa: E402
from fairseq_nar_plugins.evaluation.registry import Decoding, ModelSpec  # noqa: E402
from fairseq_nar_plugins.evaluation.speed import decode, fix_threads  # noqa: E402
from fairseq_nar_plugins.evaluation.systems import build_model_systems  # noqa: E402
from fairseq_nar_plugins.scoring import check_coverage  # noqa: E402

logger = logging.getLogger("exit_report")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="fairseq data directory the checkpoint was trained with")
    p.add_argument("--path", required=True, help="ELMER checkpoint (trained with --exit-mode hard or lplm)")
    p.add_argument("--source-lang", default="src", help="source suffix of the data files (default src)")
    p.add_argument("--target-lang", default="tgt", help="target suffix of the data files (default tgt)")
    p.add_argument("--gen-subset", default="test", help="split to decode (default test)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                   help="hard-exit thresholds (entropy in nats) to report; 0 (full depth, the reference of the "
                   "speed ratios) is always added")
    p.add_argument("--reference", help="detokenized references of --gen-subset, one a line, for sacreBLEU")
    p.add_argument("--batch-size", type=int, default=64, help="the large-batch setting (default 64)")
    p.add_argument("--latency-sentences", type=int, default=32,
                   help="sentences decoded one at a time for the batch-1 timing, spread over the split (default 32)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed rounds, interleaved over thresholds (default 3; 0: no timing)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="what is timed: wall-clock seconds of the generation call (the benchmark's measure; default) "
                   "or this process's CPU seconds over the same call (steadier when other jobs share the CPU)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--fairseq-args", default="", help="extra fairseq flags, e.g. '--bpe sentencepiece ...'")
    p.add_argument("--json", help="also write the report as JSON here")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not os.path.isfile(args.path):
        raise SystemExit(f"ERROR: --path {args.path}: checkpoint not found")
    if not os.path.isdir(args.data):
        raise SystemExit(f"ERROR: --data {args.data}: directory not found")
    if any(t < 0 for t in args.thresholds):
        raise SystemExit(f"ERROR: --thresholds must be >= 0, got {args.thresholds}")
    fix_threads(args.threads)
    thresholds = [0.0] + sorted(set(t for t in args.thresholds if t > 0))
    spec = ModelSpec(
        name="elmer", kind="nar", task="translation_lev", arch="elmer_base", task_args=("--noise", "full_mask"),
        decodings=tuple(Decoding(f"exit {t:g}", ("--iter-decode-max-iter", "0", "--model-overrides",
                                                 f"{{'exit_threshold': {t!r}}}")) for t in thresholds),
        length_control="canvas", user_dir=True)
    systems = build_model_systems(spec, args.data, args.source_lang, args.target_lang, args.gen_subset,
                                  checkpoint=args.path, extra_args=args.fairseq_args.split(), device=args.device)
    model = systems[0].model
    if getattr(model, "exit_mode", None) not in ("hard", "lplm"):
        raise SystemExit(f"ERROR: {args.path} decodes with --exit-mode {getattr(model, 'exit_mode', '?')}; the "
                         "thresholds apply to models trained with --exit-mode hard or lplm")
    refs = read_lines(args.reference) if args.reference else None
    rows = []
    for system, t in zip(systems, thresholds):
        model.exit_stats.reset()
        strings = _decode_strings(system, args.gen_subset, args.batch_size)  # activates the threshold
        row = {"threshold": t, **model.exit_stats.summary()}
        if refs is not None:
            ordered = check_coverage(strings, len(refs), f"threshold {t:g}")
            row["bleu"] = sacrebleu_corpus(ordered, [refs]).score
            row["tokens_per_sentence"] = sum(len(s.split()) for s in ordered) / max(1, len(ordered))
        rows.append(row)
    n = len(systems[0].dataset(args.gen_subset))
    ids = sorted({int(i * n / args.latency_sentences) for i in range(min(args.latency_sentences, n))})
    settings = {} if args.repeats < 1 else {
        "batch 1": systems[0].batches_by_ids(args.gen_subset, ids),
        f"batch {args.batch_size}": systems[0].batches(args.gen_subset, None, args.batch_size)}
    times = {(name, i): [] for name in settings for i in range(len(systems))}
    for name, batches in settings.items():  # warm-up
        for i, system in enumerate(systems):
            decode(system, batches[:1], force_length=False)
    for r in range(args.repeats):
        order = list(range(len(systems)))
        order = order if r % 2 == 0 else order[::-1]
        for name, batches in settings.items():
            for i in order:
                t0 = time.process_time()
                run = decode(systems[i], batches, force_length=False)
                seconds = run.seconds if args.clock == "wall" else time.process_time() - t0
                times[(name, i)].append(seconds / max(1, run.sentences) * 1000)
    for name in settings:
        full = statistics.median(times[(name, 0)])
        for i, row in enumerate(rows):
            ms = statistics.median(times[(name, i)])
            row[f"ms_per_sentence {name}"] = ms
            row[f"speedup {name}"] = full / ms if ms else float("nan")
    print(f"ELMER hard exit, {args.path} on {args.data} {args.gen_subset} ({n} sentences), {args.threads} thread(s), "
          f"{args.device}, {args.clock}-clock time, median of {args.repeats} rounds; 'work' = layer work done / full "
          "depth; 'x' = speed-up against full depth")
    head = ["threshold"] + (["BLEU"] if refs is not None else []) + ["mean exit", "work", "layers run"]
    for name in settings:
        head += [f"ms/sent {name}", f"x {name}"]
    print(" | ".join(head))
    for row in rows:
        cells = [f"{row['threshold']:g}" + (" (full depth)" if row["threshold"] == 0 else "")]
        if refs is not None:
            cells.append(f"{row['bleu']:.2f}")
        cells += [f"{row['mean_exit_layer']:.2f}", f"{row['work_share']:.1%}", f"{row['mean_layers_run']:.2f}"]
        for name in settings:
            cells += [f"{row[f'ms_per_sentence {name}']:.2f}", f"{row[f'speedup {name}']:.2f}"]
        print(" | ".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": args.path, "data": args.data, "subset": args.gen_subset, "rows": rows}, f,
                      indent=1)
    return rows


if __name__ == "__main__":
    main()
