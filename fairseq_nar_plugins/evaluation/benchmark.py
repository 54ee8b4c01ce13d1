"""``scripts/benchmark.py``: decoding speed (and, with trained checkpoints, quality) of NAR models against an AR
baseline of the same size, on one machine, in one run. See ``--help`` and the modules it uses:
:mod:`.registry` (the models), :mod:`.systems` (building them with fairseq), :mod:`.speed` (the timing protocol,
FLOPs, matmul peak), :mod:`.profiling` (where batch-1 time goes), :mod:`.report` (table, CSV, plot).
"""
import argparse
import dataclasses
import datetime
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

from . import registry

logger = logging.getLogger("fairseq_nar_plugins.benchmark")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Time NAR and AR decoding through fairseq's own generation code (task.build_generator + "
            "task.inference_step, what fairseq-generate runs): batch-1 latency and large-batch throughput, "
            "parameters, FLOPs, achieved FLOP/s against the measured matmul peak, and a profile of the batch-1 "
            "path.\n\n"
            "quick mode: random weights, no training; a source set (real text or synthetic) binarized with a word "
            "dictionary in a temporary directory; AR and NAR forced to emit the same number of tokens.\n"
            "full mode:  trained checkpoints (--checkpoint NAME=PATH) on a fairseq data directory, plus quality "
            "(sacreBLEU against --reference).\n\n"
            f"registered models: {', '.join(sorted(registry.MODELS))}"),
    )
    p.add_argument("--mode", choices=["quick", "full"], default="quick",
                   help="quick: random weights, forced output lengths, no quality; full: trained checkpoints, real "
                        "output lengths, sacreBLEU (default: quick)")
    p.add_argument("--out-dir", required=True,
                   help="directory for report.md, results.csv, results.json, the plot (plot.png) and, in full mode, "
                        "the hypotheses of every system")
    g = p.add_argument_group("models")
    g.add_argument("--models", nargs="+", default=None, metavar="NAME",
                   help="registered models to run in quick mode (default: "
                        f"{' '.join(registry.DEFAULT_QUICK_MODELS)}); every decoding of each is one system")
    g.add_argument("--size", choices=sorted(registry.SIZES), default="small",
                   help="quick mode: the depth and width every model is built with (default small = "
                        f"{registry.SIZES['small']})")
    g.add_argument("--checkpoint", action="append", default=[], metavar="NAME[@LABEL]=PATH",
                   help="full mode: a trained checkpoint for registered model NAME; repeat for each model. Several "
                        "checkpoints of one model are told apart by a label: 'bnb@lc-minilm=ckpt.pt' (the label "
                        "is shown in the system's name)")
    g.add_argument("--model-args", action="append", default=[], metavar="NAME[@LABEL]=FLAGS",
                   help="extra fairseq flags for model NAME (or one labelled checkpoint) only, e.g. "
                        "'nat_ctc_transformer=--upsample-ratio 3' (must match how it was trained); they come after "
                        "--fairseq-args, so they override it (e.g. another --bpe)")
    g.add_argument("--decodings", action="append", default=[], metavar="NAME[@LABEL]=DECODING[;DECODING]",
                   help="decode model NAME (or one labelled checkpoint) only with these of its registered decodings, "
                        "e.g. 'transformer=greedy' to leave out beam 4 on a large test set (default: all of them)")
    g.add_argument("--data-for", action="append", default=[], metavar="NAME[@LABEL]=DIR",
                   help="full mode: a fairseq data directory for this checkpoint instead of --data (a model trained "
                        "with another dictionary); it must hold the same --gen-subset sentences in the same order, "
                        "scored against the same --reference")
    g.add_argument("--fairseq-args", default="",
                   help="extra fairseq flags for every system, as one string, e.g. '--bpe sentencepiece "
                        "--sentencepiece-model spm.model' (full mode: needed to detokenize for sacreBLEU)")
    g.add_argument("--baseline", default=None,
                   help="system that ratios are taken against (default: the first decoding of the first AR model, "
                        "e.g. 'transformer greedy')")
    g = p.add_argument_group("data")
    g.add_argument("--source-text", default=None,
                   help="quick mode: plain-text source sentences (the first --num-sentences lines are used); without "
                        "it, random synthetic sentences")
    g.add_argument("--target-text", default=None,
                   help="quick mode: references line-aligned with --source-text; their lengths set the forced output "
                        "length (otherwise the source length does)")
    g.add_argument("--num-sentences", type=int, default=96,
                   help="quick mode: sentences in the benchmark set (default 96: two batches at --batch-size 64)")
    g.add_argument("--synthetic-lengths", default="6:22", metavar="MIN:MAX",
                   help="quick mode without --source-text: word counts of the synthetic sentences (default 6:22)")
    g.add_argument("--vocab-size", type=int, default=8000,
                   help="quick mode: dictionary size (the words of the text, padded with fairseq's madeupword "
                        "symbols) so that embeddings and output layer have a realistic size (default 8000, the joint "
                        "sentencepiece vocabulary of the Multi30k recipe)")
    g.add_argument("--data", default=None,
                   help="full mode: fairseq data directory (dictionaries and the binarized --gen-subset)")
    g.add_argument("--gen-subset", default="test", help="split to decode (default test)")
    g.add_argument("--reference", default=None,
                   help="full mode: detokenized reference text of --gen-subset, one line per sentence id, for "
                        "sacreBLEU")
    g.add_argument("--extra-test", action="append", default=[], metavar="SUBSET=REFERENCE",
                   help="full mode: a further split to score (untimed), with its detokenized references, e.g. "
                        "test1=work/spm/raw/test_2017_flickr.de; repeatable; each adds sacreBLEU and chrF columns")
    g.add_argument("--sacrebleu-tokenize", default="13a", help="full mode: sacreBLEU tokenizer (default 13a)")
    g.add_argument("--source-lang", default="en", help="source language suffix of the data files (default en)")
    g.add_argument("--target-lang", default="de", help="target language suffix of the data files (default de)")
    g = p.add_argument_group("protocol")
    g.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads, fixed for the whole run and reported (default 1; inter-op 1)")
    g.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    g.add_argument("--autocast-bf16", action="store_true",
                   help="decode every system, the AR baseline included, under torch.autocast(bfloat16) (weights stay "
                   "fp32; what the NAR tasks' --autocast-bf16 does in fairseq-generate); the matmul peak is then "
                   "measured in bfloat16. Pays on hardware with native bf16 (AVX512-BF16/AMX CPUs, Ampere+ GPUs)")
    g.add_argument("--repeats", type=int, default=3,
                   help="timed rounds; each round decodes every (system, setting) once, rounds alternate forward "
                        "and reverse order; medians and paired ratios over rounds are reported (default 3)")
    g.add_argument("--warmup-batches", type=int, default=1,
                   help="untimed batches decoded per (system, setting) before the rounds (default 1)")
    g.add_argument("--latency-sentences", type=int, default=16,
                   help="sentences decoded one at a time for the batch-1 latency, spread evenly over the set "
                        "(default 16; raise it in full mode)")
    g.add_argument("--batch-size", type=int, default=64, help="throughput setting 1: --batch-size (default 64)")
    g.add_argument("--max-tokens", type=int, default=4096,
                   help="throughput setting 2: fairseq --max-tokens (default 4096)")
    g.add_argument("--throughput-batches", type=int, metavar="N",
                   help="time the two throughput settings on N of their batches, spread evenly over the "
                        "length-sorted batches (default: all; full mode still decodes every sentence once for "
                        "quality)")
    g.add_argument("--no-quality", action="store_true",
                   help="full mode: time the checkpoints but skip the untimed decoding of the whole split for "
                        "sacreBLEU (when the scores are known from fairseq-generate runs)")
    g.add_argument("--no-flops", action="store_true",
                   help="skip FLOP counting (FlopCounterMode, run once, untimed, at batch 1 and at --batch-size)")
    g.add_argument("--no-profile", action="store_true", help="skip the torch.profiler breakdown of batch-1 decoding")
    g.add_argument("--profile-sentences", type=int, default=6,
                   help="batch-1 sentences decoded under the profiler, per system, spread over the latency set "
                        "(default 6); they are also decoded once without the profiler, for comparison")
    g.add_argument("--matmul-size", type=int, default=1024,
                   help="n of the n x n fp32 matmul microbenchmark that measures the peak (default 1024)")
    g.add_argument("--no-plot", action="store_true", help="do not draw plot.png")
    return p


def _parse_named(values: List[str], flag: str) -> Dict[str, str]:
    """``NAME[@LABEL]=VALUE`` flags -> {``NAME[@LABEL]``: VALUE}; NAME must be a registered model."""
    out = {}
    for v in values:
        if "=" not in v:
            raise SystemExit(f"ERROR: {flag} expects NAME[@LABEL]=VALUE, got {v!r}")
        key, value = v.split("=", 1)
        name = key.split("@", 1)[0]
        if name not in registry.MODELS:
            raise SystemExit(f"ERROR: {flag}: unknown model {name!r}; registered: {sorted(registry.MODELS)}")
        if key in out:
            raise SystemExit(f"ERROR: {flag} {key} given twice")
        out[key] = value
    return out


def _named_args(per_model: Dict[str, str], key: str) -> List[str]:
    """Flags for ``NAME@LABEL``: those given for NAME, then those given for NAME@LABEL."""
    name = key.split("@", 1)[0]
    flags = per_model.get(name, "").split()
    return flags + (per_model.get(key, "").split() if key != name else [])


def select_decodings(spec, names: Optional[str], flag_key: str):
    """``spec`` with only the decodings named in ``names`` (``'greedy;beam 4'``, in the given order); all of them
    when ``names`` is None. An unknown name stops with the decodings the model has."""
    if names is None:
        return spec
    by_name = {d.label: d for d in spec.decodings}
    wanted = [n.strip() for n in names.split(";") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown or not wanted:
        raise SystemExit(f"ERROR: --decodings {flag_key}={names!r}: {spec.name} has the decodings "
                         f"{[d.label for d in spec.decodings]}; name one or more of them, separated by ';'")
    return dataclasses.replace(spec, decodings=tuple(by_name[n] for n in wanted))


def _read_lines(path: str, n: Optional[int] = None) -> List[str]:
    from .metrics import read_lines

    lines = read_lines(path)
    return lines[:n] if n is not None else lines


def _median(xs):
    return statistics.median(xs) if xs else None


def build_systems(args, data_dir: str, work: str):
    from .systems import build_model_systems

    extra = args.fairseq_args.split()
    per_model = _parse_named(args.model_args, "--model-args")
    systems = []
    if args.mode == "quick":
        names = args.models or list(registry.DEFAULT_QUICK_MODELS)
        try:
            specs = registry.get(names)
        except KeyError as e:
            raise SystemExit(f"ERROR: {e.args[0]}")
        for spec in specs:
            systems += build_model_systems(spec, data_dir, args.source_lang, args.target_lang, args.gen_subset,
                                           size=registry.SIZES[args.size],
                                           extra_args=extra + _named_args(per_model, spec.name),
                                           device=args.device, force_lengths=True,
                                           autocast_bf16=args.autocast_bf16)
    else:
        checkpoints = _parse_named(args.checkpoint, "--checkpoint")
        if not checkpoints:
            raise SystemExit("ERROR: full mode needs at least one --checkpoint NAME=PATH")
        data_for = _parse_named(args.data_for, "--data-for")
        decodings = _parse_named(args.decodings, "--decodings")
        for key in decodings:
            if key not in checkpoints and key not in {k.split("@", 1)[0] for k in checkpoints}:
                raise SystemExit(f"ERROR: --decodings {key}: no --checkpoint {key}=PATH")
        for key in data_for:
            if key not in checkpoints:
                raise SystemExit(f"ERROR: --data-for {key}: no --checkpoint {key}=PATH")
        for key, path in checkpoints.items():
            if not os.path.isfile(path):
                raise SystemExit(f"ERROR: --checkpoint {key}: file not found: {path}")
            own_data = data_for.get(key, data_dir)
            if not os.path.isdir(own_data):
                raise SystemExit(f"ERROR: --data-for {key}: directory not found: {own_data}")
            name, _, label = key.partition("@")
            spec = select_decodings(registry.MODELS[name], decodings.get(key, decodings.get(name)), key)
            systems += build_model_systems(spec, own_data, args.source_lang, args.target_lang,
                                           args.gen_subset, checkpoint=path,
                                           extra_args=extra + _named_args(per_model, key), device=args.device,
                                           label=label or None, autocast_bf16=args.autocast_bf16)
    return systems


def prepare_data(args, work: str) -> (str, str):
    """Returns (data directory, description)."""
    from .systems import prepare_quick_data, synthetic_lines

    if args.mode == "full":
        if not args.data or not os.path.isdir(args.data):
            raise SystemExit(f"ERROR: full mode needs --data, a fairseq data directory (got {args.data!r})")
        return args.data, f"{args.data} split {args.gen_subset}"
    if args.source_text:
        src = _read_lines(args.source_text, args.num_sentences)
        tgt = _read_lines(args.target_text, args.num_sentences) if args.target_text else None
        if tgt is not None and len(tgt) != len(src):
            raise SystemExit(f"ERROR: line counts differ: {args.source_text} gives {len(src)} lines but "
                             f"{args.target_text} gives {len(tgt)}")
        what = (f"first {len(src)} lines of {args.source_text}"
                + (f" (output lengths from {args.target_text})" if tgt else " (output length = source length)"))
    else:
        lo, hi = (int(x) for x in args.synthetic_lengths.split(":"))
        src, tgt = synthetic_lines(args.num_sentences, lo, hi), None
        what = f"{len(src)} synthetic sentences of {lo}-{hi} random words (output length = source length)"
    data_dir = prepare_quick_data(os.path.join(work, "data"), src, tgt, args.source_lang, args.target_lang,
                                  args.vocab_size, split=args.gen_subset)
    return data_dir, what + f", word dictionary padded to {args.vocab_size}"


def _parse_extra_tests(values: List[str]) -> List[tuple]:
    """``SUBSET=REFERENCE`` flags -> [(subset, reference path)], checked."""
    out = []
    for v in values:
        subset, sep, ref = v.partition("=")
        if not sep or not subset or not ref:
            raise SystemExit(f"ERROR: --extra-test expects SUBSET=REFERENCE (e.g. test1=refs.de), got {v!r}")
        if not os.path.isfile(ref):
            raise SystemExit(f"ERROR: --extra-test {subset}: reference file not found: {ref}")
        out.append((subset, ref))
    return out


def _decode_strings(system, subset: str, batch_size: int) -> Dict[int, str]:
    """Decode every sentence of ``subset`` (free lengths, untimed) and detokenize as fairseq-generate does:
    {sentence id: text}."""
    from fairseq import utils
    from fairseq_cli.generate import get_symbols_to_strip_from_output

    from .speed import decode

    batches = system.batches(subset, None, batch_size)
    _, hyps = decode(system, batches, force_length=False, keep_hypotheses=True)
    cfg, task = system.cfg, system.task
    tokenizer, bpe = task.build_tokenizer(cfg.tokenizer), task.build_bpe(cfg.bpe)
    strings = {}
    for sid, h in hyps.items():
        _, text, _ = utils.post_process_prediction(
            hypo_tokens=h["tokens"].int().cpu(), src_str="", alignment=h.get("alignment"), align_dict=None,
            tgt_dict=task.target_dictionary, remove_bpe=cfg.common_eval.post_process,
            extra_symbols_to_ignore=get_symbols_to_strip_from_output(system.generator))
        if bpe is not None:
            text = bpe.decode(text)
        if tokenizer is not None:
            text = tokenizer.decode(text)
        strings[sid] = text
    return strings


def quality(args, systems, out_dir: str, settings) -> Dict[str, Dict]:
    """Full mode: decode --gen-subset (and every --extra-test split) once at the batch-size setting (untimed, free
    lengths), detokenize as fairseq-generate does, write hyp.<system>[.<subset>].txt and score with sacreBLEU and
    chrF against the references. Row keys: ``quality`` / ``chrf`` / ``quality_detail`` for --gen-subset,
    ``quality_<subset>`` / ``chrf_<subset>`` / ``quality_detail_<subset>`` for each extra split."""
    from ..scoring import check_coverage
    from .metrics import chrf_corpus, sacrebleu_corpus

    sets = [(args.gen_subset, args.reference, "")] + [(sub, ref, "_" + sub)
                                                      for sub, ref in _parse_extra_tests(args.extra_test)]
    out = {}
    for system in systems:
        row = {}
        for subset, reference, suffix in sets:
            refs = _read_lines(reference)
            if subset not in system.task.datasets:  # the decodings of one model share its task
                system.task.load_dataset(subset)
            strings = _decode_strings(system, subset, args.batch_size)
            ordered = check_coverage(strings, len(refs), f"{system.name} on {subset}")
            stem = system.name.replace(" ", "_").replace(".", "")
            path = os.path.join(out_dir, f"hyp.{stem}{'.' + subset if suffix else ''}.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(s + "\n" for s in ordered)
            bleu = sacrebleu_corpus(ordered, [refs], args.sacrebleu_tokenize)
            chrf = chrf_corpus(ordered, [refs])
            row.update({f"quality{suffix}": bleu.score, f"chrf{suffix}": chrf.score,
                        f"quality_detail{suffix}": bleu.detail, f"chrf_detail{suffix}": chrf.detail,
                        f"tokens_per_sent{suffix}": sum(len(s.split()) for s in ordered) / max(1, len(ordered)),
                        f"hypotheses{suffix}": path})
            logger.info(f"{system.name} on {subset}: sacreBLEU {bleu.score:.2f}, chrF {chrf.score:.2f}")
        out[system.name] = row
    return out


def assemble_rows(systems, results, settings, baseline: str, peak: float, profiles, qualities, force: bool):
    from .speed import paired_ratio

    b1, bs, tok = (s.name for s in settings)
    rows = []
    for system in systems:
        name = system.name
        r1, rb, rt = results[(name, b1)], results[(name, bs)], results[(name, tok)]
        ms = r1.ms_per_sentence()
        row = {
            "system": name, "kind": system.kind, "model": system.model_name, "decoding": system.decoding.label,
            "decoding_args": " ".join(system.decoding.args),
            "params_m": system.num_parameters() / 1e6,
            "b1_tokens_per_sent": r1.tokens / r1.sentences,
            "b1_forced_per_sent": r1.forced_tokens / r1.sentences if force and system.forcer.forces else None,
            "bs_tokens_per_sent": rb.tokens / rb.sentences,
            "bs_forced_per_sent": rb.forced_tokens / rb.sentences if force and system.forcer.forces else None,
            "output_length": f"{r1.tokens / r1.sentences:.1f} ("
                             + (system.forcer.description.split(":")[0] if force else "free") + ")",
            "length_control": system.forcer.description if force else "free (trained model decides)",
            "b1_ms": _median(ms), "b1_ms_min": min(ms), "b1_ms_max": max(ms), "b1_ms_rounds": ms,
            "b1_sentences": r1.sentences,
            "b1_ratio": paired_ratio(results, name, baseline, b1),
            "bs_sps": _median(rb.sentences_per_second()), "bs_sps_rounds": rb.sentences_per_second(),
            "bs_batches": rb.batches, "bs_sentences": rb.sentences,
            "bs_ratio": paired_ratio(results, name, baseline, bs, higher_is_better=True),
            "tok_sps": _median(rt.sentences_per_second()), "tok_sps_rounds": rt.sentences_per_second(),
            "tok_batches": rt.batches,
            "tok_ratio": paired_ratio(results, name, baseline, tok, higher_is_better=True),
        }
        row["b1_speedup"] = 1.0 / row["b1_ratio"] if row["b1_ratio"] else None
        for prefix, res, per_s in (("b1", r1, 1000.0 / row["b1_ms"]), ("bs", rb, row["bs_sps"]),
                                   ("tok", rt, row["tok_sps"])):
            if res.flops is not None:
                row[f"{prefix}_gflop"] = res.flops / 1e9
                row[f"{prefix}_gflops"] = res.flops / 1e9 * per_s
                row[f"{prefix}_gflops_pct"] = 100.0 * row[f"{prefix}_gflops"] / peak
        prof = profiles.get(name)
        if prof is not None:
            w = prof.wall_s
            row.update({
                "outside_matrix_pct": 100.0 * prof.outside_matrix_fraction,
                "outside_matrix_pct_plain": 100.0 * prof.outside_matrix_fraction_plain,
                "profile_matrix_pct": 100.0 * prof.matrix_s / w, "profile_other_ops_pct": 100.0 * prof.other_ops_s / w,
                "profile_outside_ops_pct": 100.0 * prof.outside_s / w,
                "profile_ms_per_sent": 1000.0 * w / prof.sentences,
                "profile_top_ops": "; ".join(f"{k} {1000 * s:.1f}ms/{c}" for k, s, c in prof.top_ops),
            })
        row.update(qualities.get(name, {}))
        rows.append(row)
    return rows


def ratio_lines(rows, systems, settings, results) -> List[str]:
    """NAR/AR ratios of every NAR system against every AR system (paired medians over rounds)."""
    from .speed import paired_ratio

    b1, bs, tok = (s.name for s in settings)
    ar = [s.name for s in systems if s.kind == "ar"]
    lines = []
    for s in systems:
        if s.kind != "nar":
            continue
        for a in ar:
            lat = paired_ratio(results, s.name, a, b1)
            thr = paired_ratio(results, s.name, a, bs, higher_is_better=True)
            thr2 = paired_ratio(results, s.name, a, tok, higher_is_better=True)
            lines.append(f"{s.name:<38} / {a:<18}: batch-1 latency ratio {lat:.2f} (speed-up {1 / lat:.2f}x); "
                         f"throughput ratio {thr:.2f} @{bs}, {thr2:.2f} @{tok}")
    return lines


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.WARNING,
                        stream=sys.stderr)
    logger.setLevel(logging.INFO)
    t_start = time.perf_counter()
    if args.mode == "full" and not args.reference:
        raise SystemExit("ERROR: full mode needs --reference (detokenized references of --gen-subset)")
    for flag in ("source_text", "target_text", "reference"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            raise SystemExit(f"ERROR: --{flag.replace('_', '-')} file not found: {path}")
    if args.extra_test and args.mode != "full":
        raise SystemExit("ERROR: --extra-test scores trained models: it needs --mode full")
    _parse_extra_tests(args.extra_test)
    os.makedirs(args.out_dir, exist_ok=True)

    # heavy imports only after the argument checks above, so that usage errors are fast
    import fairseq_nar_plugins  # noqa: F401  (registers our tasks/models, safe checkpoint loading)

    from . import profiling, report, speed
    import torch

    threads = speed.fix_threads(args.threads)
    machine = speed.machine_info(args.device)
    settings = speed.default_settings(args.batch_size, args.max_tokens)
    force = args.mode == "quick"
    with tempfile.TemporaryDirectory(prefix="nar-bench-") as work:
        data_dir, data_desc = prepare_data(args, work)
        systems = build_systems(args, data_dir, work)
        names = [s.name for s in systems]
        if len(set(names)) != len(names):
            raise SystemExit(f"ERROR: duplicate system names {names}")
        baseline = args.baseline or next((s.name for s in systems if s.kind == "ar"), None)
        if baseline not in names:
            raise SystemExit(f"ERROR: baseline {baseline!r} is not among the systems {names}: add an AR model or "
                             "pass --baseline")
        n_sent = len(systems[0].dataset(args.gen_subset))
        logger.info(f"data and {len(systems)} systems ready after {time.perf_counter() - t_start:.1f} s")
        latency_ids = speed.spread_ids(n_sent, args.latency_sentences)
        logger.info(f"{len(systems)} systems, {n_sent} sentences, threads {threads}; measuring matmul peak")
        peak_dtype = torch.bfloat16 if args.autocast_bf16 else torch.float32
        peaks = [speed.matmul_peak(args.matmul_size, device=args.device, dtype=peak_dtype)]
        logger.info(f"matmul peak {peaks[0]['best_gflops']:.1f} GFLOP/s; timing {args.repeats} interleaved rounds")
        results = speed.run_speed(
            systems, settings, args.gen_subset, latency_ids, args.repeats, args.warmup_batches, force,
            log=logger.info, flop_settings=[] if args.no_flops else [settings[0].name, settings[1].name],
            after_round=lambda r: peaks.append(speed.matmul_peak(args.matmul_size, device=args.device,
                                                                  dtype=peak_dtype)),
            throughput_batches=args.throughput_batches)
        peak = {"n": args.matmul_size, "measurements": len(peaks),
                "best_gflops": max(p["best_gflops"] for p in peaks),
                "median_gflops": statistics.median(p["median_gflops"] for p in peaks)}
        profiles, prof_ids = {}, []
        t_prof = time.perf_counter()
        if not args.no_profile:
            prof_ids = [latency_ids[i] for i in speed.spread_ids(len(latency_ids), args.profile_sentences)]
            for system in systems:
                profiles[system.name] = profiling.profile_decode(
                    system, system.batches_by_ids(args.gen_subset, prof_ids), force)
            logger.info(f"profiles done in {time.perf_counter() - t_prof:.1f} s")
        scored = args.mode == "full" and not args.no_quality
        qualities = quality(args, systems, args.out_dir, settings) if scored else {}
    load_end = tuple(round(x, 2) for x in os.getloadavg()) if hasattr(os, "getloadavg") else None

    rows = assemble_rows(systems, results, settings, baseline, peak["best_gflops"], profiles, qualities, force)
    elapsed = time.perf_counter() - t_start
    ratios = ratio_lines(rows, systems, settings, results)
    size_desc = str(registry.SIZES[args.size]) if args.mode == "quick" else "as trained (checkpoints)"
    header = [
        f"# NAR decoding benchmark ({args.mode} mode{': random weights, no quality' if force else ''})",
        "",
        f"- run: {datetime.datetime.now().isoformat(timespec='seconds')}, {elapsed:.0f} s in all",
        f"- machine: {machine['cpu']}, {machine['cpu_count']} logical CPUs, torch {machine['torch']}, device "
        f"{args.device}{' (' + machine['gpu'] + ')' if 'gpu' in machine else ''}; torch threads "
        f"{threads['torch_threads']} (inter-op {threads['torch_interop_threads']}); load average (1/5/15 min) "
        f"{machine['load_average_1_5_15']} at start, {load_end} at end",
        f"- matmul peak: {peak['best_gflops']:.1f} GFLOP/s best, {peak['median_gflops']:.1f} median "
        f"({peak['n']}x{peak['n']} {'bf16' if args.autocast_bf16 else 'fp32'} torch.matmul, same threads; 10 runs "
        "before the rounds and after each round, "
        f"{peak['measurements']} sets); '% peak' is against the best",
        f"- data: {data_desc}; {n_sent} sentences; batch-1 latency over {len(latency_ids)} of them; throughput "
        + (f"over {args.throughput_batches} batches per setting, spread over the length-sorted batches"
           if args.throughput_batches else "over all of them"),
        f"- models: size {size_desc}; baseline for ratios: {baseline}",
        "- output lengths: " + ("forced equal, per sentence, at every batch size: each sentence's reference length in "
                                "dictionary tokens (AR: the search allows </s> exactly there; NAR: the length "
                                "prediction is overridden after it ran), except CTC models, whose decoder frame count "
                                "is fixed by the source" if force else "free (each model decides)"),
        f"- protocol: timed = task.inference_step (fairseq-generate's gen_timer); warm-up: {args.warmup_batches} "
        f"untimed batch(es) per (system, setting); {args.repeats} rounds alternating forward/reverse order over all "
        "(system, setting) pairs; medians over rounds; ratios paired within rounds, then median",
        "- precision: " + ("bf16 autocast (torch.autocast(bfloat16), fp32 weights) for every system, the baseline "
                           "included" if args.autocast_bf16 else "fp32"),
        f"- FLOPs: torch.utils.flop_counter (matmul + attention, 2 per multiply-add), counted once at batch 1 and "
        f"at {settings[1].name}; profile: torch.profiler on {len(prof_ids) if profiles else 0} batch-1 sentences "
        "(self time of matrix ops vs wall time under the profiler; the profile section also gives matrix time against "
        "the same sentences decoded without the profiler, since the profiler's per-operator cost inflates the "
        "outside share)",
        "",
    ]
    quality_label = "sacreBLEU" if scored else "quality"
    table = report.markdown_table(rows, settings[1].name.replace(" ", " "), settings[2].name, quality_label,
                                  [e.split("=", 1)[0] for e in args.extra_test] if scored else ())
    profile_lines = [f"- {r['system']}: {profiles[r['system']].summary()}; top ops (self time/calls): "
                     f"{r['profile_top_ops']}" for r in rows if r["system"] in profiles]
    text = "\n".join(header + [table, "", "## NAR / AR ratios", "", "```", *ratios, "```", "",
                               "## Batch-1 profile", "", *profile_lines, ""])
    if scored:
        text += "\n## Quality\n\n" + "\n".join(
            f"- {r['system']} ({sub}): sacreBLEU {r['quality_detail' + sfx]}; chrF {r['chrf_detail' + sfx]}"
            for r in rows for sub, sfx in [(args.gen_subset, "")] + [(e.split("=", 1)[0], "_" + e.split("=", 1)[0])
                                                                       for e in args.extra_test]) + "\n"
    with open(os.path.join(args.out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(text)
    report.write_csv(os.path.join(args.out_dir, "results.csv"), rows)
    with open(os.path.join(args.out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"machine": machine, "threads": threads, "matmul_peak": peak, "args": vars(args),
                   "baseline": baseline, "rows": rows}, f, indent=2, default=str)
    if not args.no_plot:
        labels = [r["system"] for r in rows]
        xs = [r["b1_ms"] for r in rows]
        if scored:
            ys, ylabel = [r["quality"] for r in rows], f"sacreBLEU ({args.gen_subset})"
            title = "quality against batch-1 latency (Pareto front: faster and better)"
        else:
            ys, ylabel = [r["bs_sps"] for r in rows], f"throughput, sentences/s @{settings[1].name}"
            title = ("quick mode (random weights, no quality): large-batch throughput against batch-1 latency\n"
                     "(Pareto front: faster at batch 1 and at large batch)")
        report.plot(os.path.join(args.out_dir, "plot.png"), labels, xs, ys,
                    f"batch-1 latency, ms/sentence (log scale; {threads['torch_threads']} thread(s))", ylabel, title)
    print(text)
    print(f"wrote {args.out_dir}/report.md, results.csv, results.json" + ("" if args.no_plot else ", plot.png"))
    return rows
