#!/usr/bin/env python
"""Convert a pretrained BERT / RoBERTa / XLM-R checkpoint into a fairseq dictionary + an initial plugin checkpoint.

Input (a local path, nothing is downloaded):

* a Hugging Face folder: config.json (model_type bert -- bert-base-cased, mBERT, BioBERT, MiniLM --, roberta or
  xlm-roberta) + model.safetensors or pytorch_model.bin + its tokenizer files;
* a fairseq RoBERTa / XLM-R release: model.pt with dict.txt beside it (or --dict), or the folder holding them.

Output (under --out-dir)::

    dict.txt      the vocabulary bridge: index i = embedding row i, fairseq's bos/pad/eos/unk = the checkpoint's
                  [CLS]/[PAD]/[SEP]/[UNK] (BERT) or <s>/<pad>/</s>/<unk>; give it to fairseq-preprocess as
                  --srcdict/--tgtdict together with --user-dir fairseq_nar_plugins
    backbone.pt   the backbone's weights (fairseq naming), its config, the masked-LM head if the checkpoint has one,
                  and the vocabulary: plain tensors, dicts and lists, loadable with torch.load(weights_only=True);
                  models take it (or the original checkpoint) with --pretrained-encoder PATH
    tokenizer files copied from the checkpoint (tokenizer.json, vocab.txt, sentencepiece.bpe.model, ...), so that
                  scripts/prepare_pretrained_text.py --checkpoint OUT_DIR tokenizes with the checkpoint's tokenizer

Example::

    python scripts/convert_pretrained.py /path/to/bert-base-cased --out-dir work/pretrained/bert-base-cased
"""
import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fairseq_nar_plugins.modules.pretrained.pretrained_import import (  # noqa: E402
    PretrainedCheckpointError,
    import_checkpoint,
    save_converted,
)
from fairseq_nar_plugins.modules.pretrained.pretrained_tokenizer import TOKENIZER_FILES  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="Hugging Face checkpoint folder (config.json + model.safetensors or "
                   "pytorch_model.bin), or a fairseq RoBERTa / XLM-R model.pt (or the folder holding it)")
    p.add_argument("--out-dir", required=True, help="folder to write dict.txt, backbone.pt and the tokenizer files "
                   "into (created if missing; existing files of the same names are overwritten)")
    p.add_argument("--dict", default=None, help="fairseq releases only: the dict.txt of the checkpoint, if it is "
                   "not beside model.pt")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        imported = import_checkpoint(args.checkpoint, args.dict)
    except (FileNotFoundError, PretrainedCheckpointError) as e:
        sys.exit(f"ERROR: {e}")
    dict_path, model_path = save_converted(imported, args.out_dir)
    src_dir = args.checkpoint if os.path.isdir(args.checkpoint) else os.path.dirname(os.path.abspath(args.checkpoint))
    copied = []
    for name in TOKENIZER_FILES:
        src = os.path.join(src_dir, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(args.out_dir, name))
            copied.append(name)
    cfg = imported.config
    d = imported.dictionary
    print(f"| {imported.source['format']} {cfg.family} checkpoint: {cfg.layers} layers, width {cfg.embed_dim}, "
          f"FFN {cfg.ffn_embed_dim}, {cfg.attention_heads} heads, {cfg.max_positions} positions, "
          f"masked-LM head {'yes' if imported.lm_head is not None else 'no'}")
    print(f"| vocabulary: {len(d)} rows; bos={d.bos()} {d[d.bos()]!r} pad={d.pad()} {d[d.pad()]!r} "
          f"eos={d.eos()} {d[d.eos()]!r} unk={d.unk()} {d[d.unk()]!r}"
          + (f" mask={d.mask_index} {d[d.mask_index]!r}" if d.mask_index is not None else ""))
    print(f"| wrote {dict_path}, {model_path}; tokenizer files: {', '.join(copied) or 'none found'}")


if __name__ == "__main__":
    main()
