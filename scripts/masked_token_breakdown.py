#!/usr/bin/env python
"""Held-out masked-token cross-entropy of masked_autoencoder_pretrain checkpoints, split by what BERT masking did.

fairseq's validation loss of the ``masked_autoencoder_pretrain`` task with ``--corruptions mask
--loss-positions corrupted`` (the ``word_ins`` figure of ``nat_loss``) mixes three kinds of selected positions:
those replaced by the mask symbol (80 %), by a random token (10 %) and left unchanged (10 %). A decoder that merely
copies its input already scores the unchanged ones well, so a drop of that figure does not by itself show that the
model predicts masked tokens from their context. This script reports, per checkpoint, the cross-entropy (bits per
token, base 2, averaged over tokens) of

* all selected positions, and separately of the ``[MASK]`` / random / unchanged ones,
* and for scale the same positions under the add-one-smoothed unigram distribution of the training split: a model
  that predicts from context must beat it at the ``[MASK]`` positions.

The held-out blocks and their noise are those fairseq-validate / fairseq-train use (the task's
``CorruptedBlockDataset`` noise depends on ``--seed``, the epoch (1) and the block only). The model must follow the
NAT interface of this plugin: ``forward(src_tokens, src_lengths, prev_output_tokens, tgt_tokens)`` returning a
``word_ins`` term with per-position logits (BnB with ``--length-mode lc``, and nat_loss models in general).

Example::

    python scripts/masked_token_breakdown.py work/cp/bin work/cp/imported/checkpoint_imported.pt \\
        work/cp/pretrain/checkpoint_last.pt --tokens-per-sample 128 --mask-symbol '[MASK]' --seed 1
"""
import argparse
import math
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

KINDS = ("[MASK]", "random", "unchanged")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="the fairseq-preprocess --only-source directory (dict.txt, train and valid splits)")
    p.add_argument("checkpoints", nargs="+", help="fairseq checkpoints of masked_autoencoder_pretrain models")
    p.add_argument("--valid-subset", default="valid", help="held-out split (default valid)")
    p.add_argument("--train-subset", default="train", help="split the unigram reference is counted on")
    p.add_argument("--tokens-per-sample", type=int, default=512, help="block length (as in training; default 512)")
    p.add_argument("--sample-break-mode", default="none", help="TokenBlockDataset mode (default none)")
    p.add_argument("--mask-prob", type=float, default=0.15, help="fraction of tokens selected (default 0.15)")
    p.add_argument("--mask-symbol", default="<mask>", help="the mask symbol ('[MASK]' for BERT vocabularies)")
    p.add_argument("--seed", type=int, default=1, help="noise seed (as in training; default 1)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per evaluation batch (default 4096)")
    return p


def unigram_bits(data, split, dictionary):
    """-log2 p(token) under the add-one-smoothed unigram distribution of ``split`` (a function of the id)."""
    from fairseq.data import data_utils

    lines = data_utils.load_indexed_dataset(os.path.join(data, split), dictionary)
    if lines is None:
        sys.exit(f"ERROR: split {split!r} not found in {data}")
    counts, total = Counter(), 0
    for i in range(len(lines)):
        ids = lines[i].tolist()
        counts.update(ids)
        total += len(ids)
    norm = total + len(dictionary)
    return lambda t: -math.log2((counts[t] + 1) / norm)


def breakdown(path, args, unigram_cache):
    import torch
    from fairseq import checkpoint_utils, utils

    overrides = dict(data=args.data, corruptions="mask", mask_prob=args.mask_prob, mask_symbol=args.mask_symbol,
                     loss_positions="corrupted", tokens_per_sample=args.tokens_per_sample,
                     sample_break_mode=args.sample_break_mode, seed=args.seed)
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides)
    model = models[0].eval()
    d = task.dictionary
    if "bits" not in unigram_cache:
        unigram_cache["bits"] = unigram_bits(args.data, args.train_subset, d)
    uni = unigram_cache["bits"]
    task.load_dataset(args.valid_subset, combine=False, epoch=1)
    itr = task.get_batch_iterator(
        task.dataset(args.valid_subset), max_tokens=args.max_tokens, required_batch_size_multiple=1,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()), seed=args.seed,
        epoch=1,
    ).next_epoch_itr(shuffle=False)
    bits, unibits, count = Counter(), Counter(), Counter()
    with torch.no_grad():
        for sample in itr:
            net = sample["net_input"]
            out = model(net["src_tokens"], net["src_lengths"], net["prev_output_tokens"], sample["target"])
            if "word_ins" not in out or "out" not in out["word_ins"] or out["word_ins"].get("ctc"):
                sys.exit(f"ERROR: {path}: the model's forward returns no per-position 'word_ins' logits")
            term = out["word_ins"]
            src = net["src_tokens"]
            if "positions" in term:  # the output layer at the scored positions only: out (N, V), tgt (N,)
                selected = term["positions"]
                tgt = sample["target"][:, : selected.size(1)]
                nll = torch.zeros(tgt.shape)
                nll[selected] = -torch.log_softmax(term["out"].float(), -1).gather(
                    -1, term["tgt"].unsqueeze(-1)).squeeze(-1).cpu() / math.log(2)
            else:
                tgt = term["tgt"]
                selected = tgt.ne(d.pad())
                lprobs = torch.log_softmax(term["out"].float(), -1)
                nll = -lprobs.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) / math.log(2)
            if src.shape != tgt.shape:
                sys.exit("ERROR: source and target blocks differ in shape; only --corruptions mask is supported")
            masked = src.eq(task.mask_idx)
            for kind, where in (("[MASK]", masked), ("unchanged", src.eq(tgt)),
                                ("random", src.ne(tgt) & ~masked)):
                where = where & selected
                bits[kind] += nll[where].sum().item()
                count[kind] += int(where.sum())
                unibits[kind] += sum(uni(t) for t in tgt[where].tolist())
    n = sum(count.values())
    if n == 0:
        sys.exit(f"ERROR: no masked token in {args.valid_subset}")
    parts = " | ".join(f"{k} {bits[k] / count[k]:.3f} (unigram {unibits[k] / count[k]:.3f}, n={count[k]})"
                       for k in KINDS if count[k])
    print(f"| {path}: masked tokens {sum(bits.values()) / n:.3f} bits (unigram {sum(unibits.values()) / n:.3f}, "
          f"n={n}) | {parts}", flush=True)


def main(argv=None):
    args = get_parser().parse_args(argv)
    import fairseq_nar_plugins  # noqa: F401  (registers the task and models; weights_only checkpoint loading)

    cache = {}
    for path in args.checkpoints:
        if not os.path.isfile(path):
            sys.exit(f"ERROR: checkpoint {path!r} not found")
        breakdown(path, args, cache)


if __name__ == "__main__":
    main()
