#!/usr/bin/env python
"""How well length-classification checkpoints (BnB with ``--length-mode lc``) predict target lengths on a split.

For each checkpoint and each sentence of the split, the predicted length is compared with the reference's (both
count ``<s>`` and ``</s>``, as fairseq's NAT models do):

* ``generated``: the length generation uses (``initialize_output_tokens``: the classifier's best length within
  the model's ``--max-length-ratio`` x source + ``--max-length-offset`` and the decoder's positions);
* ``argmax``: the classifier's argmax class without any cap.

Reported per checkpoint: exact-length accuracy, accuracy within +-1 and +-2, mean absolute error (MAE, tokens) and
mean signed error (predicted - reference). Two references without a model are printed for scale: ``source`` (the
source length) and ``ratio`` (source length x the split's own mean target/source ratio, rounded: an oracle
constant). Use it to compare, e.g., ``--length-pooling latent`` against ``encoder``, or absolute classes against
``--pred-length-offset``, on the same split::

    python scripts/length_accuracy.py DATA_BIN ckpt_latent/checkpoint_best.pt ckpt_offset/checkpoint_best.pt \\
        --user-dir fairseq_nar_plugins --gen-subset valid [--json lengths.json]

The task and its flags come from each checkpoint; ``DATA_BIN`` replaces its data directory.
"""
import argparse
import json
import logging
import os
import sys

logging.basicConfig(level=logging.WARNING)  # before fairseq's imports configure the root logger at INFO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="binarized data directory (fairseq-preprocess output) holding --gen-subset")
    p.add_argument("checkpoints", nargs="+", help="length-classification checkpoints (e.g. bnb --length-mode lc)")
    p.add_argument("--user-dir", default=os.path.join(ROOT, "fairseq_nar_plugins"),
                   help="the plugin folder (default: this checkout's fairseq_nar_plugins)")
    p.add_argument("--gen-subset", default="valid", help="split to evaluate (default valid)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch (default 4096)")
    p.add_argument("--model-overrides", default="{}",
                   help="dict of model args to override, as fairseq-generate's (e.g. \"{'max_length_ratio': 2.0}\")")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    return p


def length_stats(predicted, reference):
    """Accuracy (exact, within 1 and 2), MAE and mean signed error of two equal-length sequences of lengths."""
    if len(predicted) != len(reference) or not reference:
        raise ValueError(f"{len(predicted)} predictions for {len(reference)} references")
    diff = [p - r for p, r in zip(predicted, reference)]
    n = len(diff)
    return {
        "sentences": n,
        "exact": sum(d == 0 for d in diff) / n,
        "within_1": sum(abs(d) <= 1 for d in diff) / n,
        "within_2": sum(abs(d) <= 2 for d in diff) / n,
        "mae": sum(abs(d) for d in diff) / n,
        "mean_error": sum(diff) / n,
    }


def predict_lengths(path, args):
    """``{"generated": [...], "argmax": [...], "reference": [...], "source": [...]}`` over the split, by id."""
    import ast

    import torch
    from fairseq import checkpoint_utils, utils

    utils.import_user_module(argparse.Namespace(user_dir=args.user_dir))
    overrides = {**ast.literal_eval(args.model_overrides), "data": args.data}
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides)
    model = models[0].eval()
    length = getattr(getattr(model, "decoder", None), "length", None)
    if length is None or not hasattr(model.decoder, "forward_length"):
        raise SystemExit(f"ERROR: {path}: the model has no length classifier (decoder.length): this script is for "
                         "length-classification models such as bnb --length-mode lc")
    use_cuda = torch.cuda.is_available() and not args.cpu
    if use_cuda:
        model.cuda()
    task.load_dataset(args.gen_subset, combine=False, epoch=1)
    dataset = task.dataset(args.gen_subset)
    pad = task.target_dictionary.pad()
    itr = task.get_batch_iterator(dataset=dataset, max_tokens=args.max_tokens, max_positions=None,
                                  ignore_invalid_inputs=False, required_batch_size_multiple=1,
                                  num_workers=0).next_epoch_itr(shuffle=False)
    out = {k: [0] * len(dataset) for k in ("generated", "argmax", "reference", "source")}
    with torch.no_grad():
        for sample in itr:
            sample = utils.move_to_cuda(sample) if use_cuda else sample
            src = sample["net_input"]["src_tokens"]
            src_lengths = src.ne(task.source_dictionary.pad()).sum(1)
            enc = model.forward_encoder([src, sample["net_input"]["src_lengths"]])
            generated = model.initialize_output_tokens(enc, src).output_tokens.ne(pad).sum(1)
            argmax = length.predict(model.decoder.forward_length(enc), src_lengths)
            reference = sample["target"].ne(pad).sum(1)
            for i, sid in enumerate(sample["id"].tolist()):
                out["generated"][sid] = int(generated[i])
                out["argmax"][sid] = int(argmax[i])
                out["reference"][sid] = int(reference[i])
                out["source"][sid] = int(src_lengths[i])
    return out


def main(argv=None):
    args = get_parser().parse_args(argv)
    results, baselines = {}, None
    for path in args.checkpoints:
        if not os.path.exists(path):
            raise SystemExit(f"ERROR: checkpoint {path} not found")
        lengths = predict_lengths(path, args)
        ref = lengths["reference"]
        results[path] = {kind: length_stats(lengths[kind], ref) for kind in ("generated", "argmax")}
        if baselines is None:
            src = lengths["source"]
            ratio = sum(ref) / max(sum(src), 1)
            baselines = {"source": length_stats(src, ref),
                         f"ratio {ratio:.3f}": length_stats([round(ratio * s) for s in src], ref)}
    header = f"{'system':<60} {'kind':<10} {'exact':>6} {'+-1':>6} {'+-2':>6} {'MAE':>6} {'bias':>6}"
    print(f"{args.gen_subset}: {next(iter(results.values()))['generated']['sentences']} sentences")
    print(header)
    rows = [(path, kind, stats) for path, r in results.items() for kind, stats in r.items()]
    rows += [("(no model)", name, stats) for name, stats in baselines.items()]
    for system, kind, s in rows:
        print(f"{system[-60:]:<60} {kind:<10} {s['exact']:>6.3f} {s['within_1']:>6.3f} {s['within_2']:>6.3f} "
              f"{s['mae']:>6.2f} {s['mean_error']:>+6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"subset": args.gen_subset, "checkpoints": results, "baselines": baselines}, f, indent=1)
    return results, baselines


if __name__ == "__main__":
    main()
