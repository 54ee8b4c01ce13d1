#!/usr/bin/env python
"""Export a model trained with dynamic block pruning (DEER ``--prune``) at ONE size, with physically smaller weights.

A DEER checkpoint trained with ``--prune`` decodes at any of its ``--prune-sizes`` by masking its weights
(``fairseq-generate ... --model-overrides "{'prune_size': 0.5}"``): the matrices keep their full shapes. This script
writes a checkpoint at one size whose backbone matrices are smaller (pruned FFN neurons removed, attention heads
compacted to per-head widths; see ``fairseq_nar_plugins/modules/pruning/pruned_export.py`` for exactly what is removed,
folded and kept) and that decodes with plain fairseq, no masks and no scores::

    python scripts/export_pruned.py --checkpoint work/deer/checkpoint_best.pt --size 0.5 --out work/deer/size0.5.pt
    fairseq-generate DATA --user-dir fairseq_nar_plugins --task translation_lev_ctc --path work/deer/size0.5.pt ...

The hypotheses are those of the masked model at that size (up to float rounding in the last bits of the logits).
The written checkpoint: the model state without pruning scores or buffers; ``cfg.model`` (and ``args``, if the
checkpoint has legacy args) with ``backbone_layer_shapes`` (JSON, one ``{"ffn", "qk_dims", "v_dims"}`` per layer),
``prune=False`` and ``prune_size=1.0``; no optimizer state (it cannot resume training: the optimizer's moments have
the old shapes). It is written to a temporary file beside ``--out`` and renamed, and never over ``--checkpoint``.

``--data`` overrides the data directory recorded in the checkpoint (the task's dictionaries are needed to rebuild
the model). The script prints parameter counts (stored elements) and file sizes before and after, and checks that
the exported backbone computes what the masked one does on random tokens (``--no-verify`` to skip).
"""
import argparse
import copy
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

import fairseq_nar_plugins  # noqa: E402,F401  (registers the models; safe checkpoint loading)
from fairseq_nar_plugins.modules.pruning.pruned_export import (  # noqa: E402
    export_model_state,
    fit_state_to_model,
    pruning_controller,
)

SCORE_KEY = re.compile(r"(^|\.)scores\.l\d+_(attn\d+|ffn)$")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="fairseq checkpoint of a model trained with --prune")
    p.add_argument("--size", required=True, type=float, help="model size to export, one of the checkpoint's "
                   "--prune-sizes (e.g. 0.5)")
    p.add_argument("--out", required=True, help="the exported checkpoint (must differ from --checkpoint)")
    p.add_argument("--data", default=None, help="data directory (dictionaries) if not the one recorded in the "
                   "checkpoint")
    p.add_argument("--no-verify", action="store_true", help="skip the masked-vs-compact check on random tokens")
    return p


def _fail(msg):
    sys.exit(f"ERROR: {msg}")


def _model_args(raw):
    """The model namespace / dict of a raw checkpoint, and where it lives."""
    cfg = raw.get("cfg")
    if cfg is not None and cfg.get("model") is not None:
        return cfg["model"]
    if raw.get("args") is not None:
        return raw["args"]
    _fail("the checkpoint has neither cfg.model nor args: not a fairseq training checkpoint")


def _get(ns, key, default=None):
    return ns.get(key, default) if isinstance(ns, dict) else getattr(ns, key, default)


def _with_export_args(ns, layer_shapes_json):
    """A copy of a model namespace / dict with the exported model's settings."""
    values = dict(backbone_layer_shapes=layer_shapes_json, prune=False, prune_size=1.0)
    if isinstance(ns, dict):
        return {**ns, **values}
    ns = copy.copy(ns)
    for k, v in values.items():
        setattr(ns, k, v)
    return ns


def _human(n_bytes):
    return f"{n_bytes / 2**20:.2f} MiB"


@torch.no_grad()
def _verify(model, exported, size, vocab_size, pad):
    """Max |masked - compact| of the backbone's last hidden states on random tokens with padding."""
    controller = pruning_controller(model.backbone)
    controller.set_size(size)
    controller.refresh_thresholds(None)
    g = torch.Generator().manual_seed(0)
    length = min(16, model.backbone.max_positions())
    tokens = torch.randint(pad + 1, vocab_size, (3, length), generator=g)
    tokens[0, length // 2:] = pad
    model.eval()
    exported.eval()
    a = model.backbone(tokens)["hidden_states"]
    b = exported.backbone(tokens)["hidden_states"]
    return float((a - b).abs().max())


def main(argv=None):
    args = get_parser().parse_args(argv)
    src, out = os.path.abspath(args.checkpoint), os.path.abspath(args.out)
    if not os.path.isfile(src):
        _fail(f"--checkpoint {args.checkpoint}: no such file")
    if src == out or (os.path.exists(out) and os.path.samefile(src, out)):
        _fail(f"--out {args.out} is the input checkpoint: refusing to overwrite it; choose another --out")
    if not os.path.isdir(os.path.dirname(out)):
        _fail(f"--out {args.out}: folder {os.path.dirname(out)} does not exist")
    from fairseq import checkpoint_utils

    raw = torch.load(src, map_location="cpu")  # weights_only (the plugin allow-lists fairseq's objects)
    if not any(SCORE_KEY.search(k) for k in raw.get("model", {})):
        _fail(f"--checkpoint {args.checkpoint} has no pruning scores: it was not trained with dynamic block pruning "
              "(--prune), or it is already an export; nothing to compact")
    model_args = _model_args(raw)
    overrides = {"data": args.data} if args.data else None
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([src], arg_overrides=overrides)
    model = models[0]
    controller = pruning_controller(getattr(model, "backbone", model))
    if controller is None:
        _fail(f"--checkpoint {args.checkpoint}: the model rebuilt from it has no pruning controller")
    if not any(abs(args.size - s) < 1e-9 for s in controller.sizes):
        _fail(f"--size {args.size} is not one of the sizes {args.checkpoint} was trained with "
              f"(--prune-sizes {' '.join(str(s) for s in controller.sizes)})")
    model.eval()
    state, shapes, counts = export_model_state(model, args.size)
    shapes_json = json.dumps(shapes, separators=(",", ":"))
    new_model_args = _with_export_args(model_args, shapes_json)
    build_args = _with_export_args(copy.copy(models[0].args) if getattr(models[0], "args", None) is not None
                                   else model_args, shapes_json)
    exported = task.build_model(build_args)
    state, dropped = fit_state_to_model(state, exported)
    exported.load_state_dict(state, strict=True)
    # the model may have recorded things in its args while building (e.g. DEER's backbone_config)
    if not isinstance(new_model_args, dict):
        for k, v in vars(build_args).items():
            if not hasattr(new_model_args, k):
                setattr(new_model_args, k, v)
    if not args.no_verify:
        vocab = exported.backbone.cfg.vocab_size
        diff = _verify(model, exported, args.size, vocab, exported.backbone.cfg.padding_idx)
        print(f"check: max |masked - exported| backbone output on random tokens = {diff:.2e}")
        if diff > 1e-3:
            _fail(f"the exported backbone differs from the masked one by {diff:.3g}; nothing written")

    new = dict(raw)
    new["model"] = state
    new.pop("last_optimizer_state", None)
    if raw.get("cfg") is not None and raw["cfg"].get("model") is not None:
        new["cfg"] = dict(raw["cfg"])
        new["cfg"]["model"] = new_model_args
    if raw.get("args") is not None:
        new["args"] = _with_export_args(raw["args"], shapes_json)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out) + ".", suffix=".tmp", dir=os.path.dirname(out))
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(new, f)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

    after = sum(v.numel() for v in state.values())
    print(f"exported {args.checkpoint} at size {args.size} -> {args.out}")
    print(f"parameters (stored elements): {counts['params_before']:,} -> {after:,} "
          f"({after / counts['params_before']:.1%}); backbone {counts['backbone_before']:,} -> "
          f"{counts['backbone_after']:,} ({counts['backbone_after'] / counts['backbone_before']:.1%})")
    print(f"dropped pruning entries: {len(dropped) + len(controller.scores)} "
          f"({len(controller.scores)} score tensors{', ' + ', '.join(dropped) if dropped else ''})")
    print(f"file size: {_human(os.path.getsize(src))} -> {_human(os.path.getsize(out))} "
          "(the input also holds the optimizer state)")
    for i, s in enumerate(shapes):
        print(f"layer {i}: ffn {s['ffn']}, qk dims {s['qk_dims']}, v dims {s['v_dims']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
