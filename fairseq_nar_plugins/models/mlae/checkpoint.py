"""Loading an MLAE pretraining checkpoint into a fine-tuning model (``--init-from-mlae CKPT``).

A pretraining checkpoint (model ``mlae``) holds ``encoder.backbone.*``, ``decoder.backbone.*`` (with or without
cross-attention) and ``decoder.lm_head.*``, and records both backbones' exact configs
(``encoder_backbone_config`` / ``decoder_backbone_config``) and its mask symbol (``mlae_mask_symbol``). Every
fine-tuning model names its parameters the same way, so loading is by name:

1. :meth:`MLAECheckpoint.configure` writes the checkpoint's backbone configs (its sizes win over the architecture's)
   into the fine-tuning model's args, with the decoder's cross-attention switched on or off as that model needs
   (``mlae_cmlm`` / ``mlae_seq2seq``: on; ``mlae_unilm``: off; ``mlae_classifier``: no decoder);
2. the model is built from those configs;
3. :meth:`MLAECheckpoint.load_into` takes every tensor of the model that the checkpoint has (shapes must agree; the
   token embeddings' rows must be the task dictionary's size), and lists the model's *new* tensors (cross-attention
   when pretraining had none, the length classifier, classification heads) and the checkpoint's *unused* ones
   (the decoder for the classifier, cross-attention for UniLM-style). New cross-attention becomes a copy of each
   layer's just-loaded self-attention (``--cross-attention-init self_attention``, MLAE §3.3) or stays random.
"""
import json
import logging
import os
import re
from typing import Dict, List, Optional

import torch
from fairseq import checkpoint_utils

from ...modules.pretrained.pretrained_import import PretrainedCheckpointError
from ..bnb_classifier import _checkpoint_model_args

logger = logging.getLogger(__name__)

EMBEDDINGS = "encoder.backbone.embeddings.embed_tokens.weight"
SIZE_FIELDS = ("layers", "embed_dim", "ffn_embed_dim", "attention_heads")


def summarize(names: List[str]) -> List[str]:
    """Tensor names with layer numbers folded (``decoder.backbone.layers.*.encoder_attn.k_proj.weight``), sorted."""
    return sorted({re.sub(r"\.layers\.\d+\.", ".layers.*.", n) for n in names})


class MLAECheckpoint:
    """A pretraining checkpoint read for ``--init-from-mlae`` (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--init-from-mlae {path!r} does not exist")
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
        self.weights: Dict[str, torch.Tensor] = state.get("model") or {}
        self.model_args = _checkpoint_model_args(state)
        if not self.model_args.get("encoder_backbone_config") or EMBEDDINGS not in self.weights:
            raise PretrainedCheckpointError(
                f"--init-from-mlae {path}: not an MLAE checkpoint (no encoder_backbone_config in its model config or "
                f"no {EMBEDDINGS}; arch {self.model_args.get('arch', '?')!r}); a BERT-family checkpoint goes to "
                "--pretrained-encoder")

    @property
    def has_decoder(self) -> bool:
        return bool(self.model_args.get("decoder_backbone_config"))

    def configure(self, args, decoder_cross_attention: Optional[bool]):
        """Write the checkpoint's backbone configs and mask symbol into ``args``. ``decoder_cross_attention``: the
        fine-tuning model's decoder has cross-attention (True), has none (False), or there is no decoder (None)."""
        if getattr(args, "pretrained_encoder", None) or getattr(args, "pretrained_decoder", None):
            raise ValueError("give either --init-from-mlae or --pretrained-encoder/--pretrained-decoder, not both")
        encoder = json.loads(self.model_args["encoder_backbone_config"])
        args.encoder_backbone_config = json.dumps(encoder, sort_keys=True)
        for name in SIZE_FIELDS:
            setattr(args, f"encoder_{name}", encoder[name])
        if decoder_cross_attention is not None:
            if not self.has_decoder:
                raise PretrainedCheckpointError(f"--init-from-mlae {self.path}: the checkpoint has no decoder "
                                                "(decoder_backbone_config); is it a classifier checkpoint?")
            decoder = json.loads(self.model_args["decoder_backbone_config"])
            decoder.update(cross_attention=decoder_cross_attention, cross_attention_init=args.cross_attention_init,
                           encoder_embed_dim=encoder["embed_dim"] if decoder_cross_attention else 0)
            args.decoder_backbone_config = json.dumps(decoder, sort_keys=True)
            for name in SIZE_FIELDS:
                setattr(args, f"decoder_{name}", decoder[name])
        args.mlae_mask_symbol = self.model_args.get("mlae_mask_symbol") or args.mlae_mask_symbol

    def check_vocabulary(self, dictionary):
        rows = self.weights[EMBEDDINGS].shape[0]
        if rows != len(dictionary):
            raise PretrainedCheckpointError(
                f"--init-from-mlae {self.path}: its token embeddings ({EMBEDDINGS}) have {rows} rows but the task "
                f"dictionary has {len(dictionary)} symbols (mask symbol included): binarize the fine-tuning data "
                "with the pretraining dict.txt (fairseq-preprocess --srcdict/--tgtdict DICT, or --joined-dictionary "
                "--srcdict DICT)")

    def load_into(self, model, cross_attention_init: str = "self_attention") -> Dict[str, List[str]]:
        """Copy the checkpoint's tensors into ``model`` by name (see the module docstring).

        Returns ``{"taken": [...], "new": [...], "unused": [...]}`` (tensor names), also logged."""
        target = model.state_dict()
        taken, new = [], []
        for key, value in target.items():
            found = self.weights.get(key)
            if found is None:
                new.append(key)
                continue
            if tuple(found.shape) != tuple(value.shape):
                raise PretrainedCheckpointError(
                    f"--init-from-mlae {self.path}: tensor {key} has shape {tuple(found.shape)} in the checkpoint but "
                    f"{tuple(value.shape)} in the model")
            taken.append(key)
        torch.nn.Module.load_state_dict(model, {k: self.weights[k] for k in taken}, strict=False)
        cross = [k for k in new if ".encoder_attn" in k]
        decoder = getattr(model, "decoder", None)
        if cross and cross_attention_init == "self_attention":
            decoder.backbone.init_cross_attention("self_attention")
        unused = [k for k in self.weights if k not in target]
        how = {"self_attention": "copied from each layer's self-attention", "random": "random"}[cross_attention_init]
        logger.info(f"initialised from MLAE checkpoint {self.path} ({self.model_args.get('arch', '?')}): "
                    f"{len(taken)} tensors taken; new: "
                    f"{summarize(new) or 'none'}{f' (cross-attention {how})' if cross else ''}; "
                    f"not used: {summarize(unused) or 'none'}")
        return {"taken": taken, "new": new, "unused": unused}
