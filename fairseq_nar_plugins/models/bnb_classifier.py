"""Sentence(-pair) classification with the BERT-NAR-BERT encoder (BnB's "understanding tasks"; shared/papers/000).

The model is the encoder of :mod:`.bnb` (a :class:`~fairseq_nar_plugins.modules.backbone.bert_backbone.BertBackbone`, built by
:func:`.bnb.build_backbone`) with fairseq-style classification heads, so that fairseq's own ``sentence_prediction``
task and criterion train and score it unchanged, exactly as they do RoBERTa:

* ``register_classification_head(name, num_classes, inner_dim)`` (the task calls it with ``--num-classes``);
* ``forward(src_tokens, features_only=True, classification_head_name=NAME)`` returns ``(logits, extra)``;
* a head reads the final state of the first position, which must be ``[CLS]`` (fairseq's ``<s>``, the ``bos`` of the
  vocabulary bridge): dropout, dense, tanh, dropout, projection (fairseq's ``RobertaClassificationHead``).

Initialisation (one of them, or random with the architecture's sizes):

* ``--pretrained-encoder PATH``: a BERT-family checkpoint, as for ``bnb`` (Hugging Face folder, fairseq RoBERTa /
  XLM-R ``model.pt``, or the output of ``scripts/convert_pretrained.py``);
* ``--bnb-checkpoint PATH``: the encoder of a trained or (continued-)pretrained ``bnb`` fairseq checkpoint (e.g.
  ``examples/pretraining/continue_pretraining_minilm.sh``'s ``pretrain/checkpoint_last.pt``), read with fairseq's
  ``checkpoint_utils.load_checkpoint_to_cpu``. Its ``encoder.backbone.*`` tensors are taken as they are (the
  classifier's encoder parameters have the same names), with strict name and shape checks; BnB's latent projection
  and decoder are dropped.

Input layout. fairseq's task builds ``[--init-token] input0 </s> [--separator-token] input1 </s>``; with the bridge
dictionary ``</s>`` is ``[SEP]``, so ``--init-token <bos>`` (101 for BERT, 0 for RoBERTa) and no separator gives BERT's
``[CLS] a [SEP] b [SEP]``, and ``--separator-token <eos>`` RoBERTa's ``<s> a </s> </s> b </s>``. Other values are
refused at build time (a RoBERTa recipe's ``--init-token 0`` is BERT's ``[PAD]``). ``--pair-token-types`` gives the
tokens after the first ``[SEP]`` token type 1, as BERT encodes sentence pairs (off by default: BnB's encoder is
pretrained with type 0 everywhere).

Example (``examples/bnb/glue_style.sh``)::

    fairseq-train DATA --user-dir fairseq_nar_plugins --task sentence_prediction --num-classes 2 \\
        --init-token 101 --criterion sentence_prediction --arch bnb_classifier_small \\
        --pretrained-encoder work/pretrained --optimizer adam --lr 1e-4 ...
"""
import argparse
import json
import logging
import os

import torch
from fairseq import checkpoint_utils, utils
from fairseq.models import FairseqEncoder, FairseqEncoderModel, register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaClassificationHead
from fairseq.modules.transformer_sentence_encoder import init_bert_params

from ..modules.backbone.backbone_args import add_dropout_args
from ..modules.backbone.bert_backbone import BertBackbone, BertBackboneConfig
from ..modules.pretrained.pretrained_import import PretrainedCheckpointError, add_pretrained_encoder_args
from .bnb import backbone_config, bnb_base, bnb_small, bnb_tiny, build_backbone

logger = logging.getLogger(__name__)

#: prefix of the BnB encoder's backbone parameters, in bnb checkpoints and in this model alike
BACKBONE_PREFIX = "encoder.backbone."


class BnBClassifierEncoder(FairseqEncoder):
    """The BnB encoder's backbone (no latent projection): token ids in, final states out."""

    def __init__(self, dictionary, backbone: BertBackbone, pair_token_types: bool = False):
        super().__init__(dictionary)
        self.backbone = backbone
        self.pair_token_types = pair_token_types
        if pair_token_types and backbone.cfg.type_vocab_size < 2:
            raise ValueError(f"--pair-token-types needs token-type embeddings with 2 rows, but this backbone has "
                             f"{backbone.cfg.type_vocab_size} (RoBERTa / XLM-R have none): drop the flag")

    def token_types(self, src_tokens):
        """``(B, T)`` segment ids: 0 up to and including the first ``</s>`` (``[SEP]``) of a row, 1 after it."""
        is_sep = src_tokens.eq(self.dictionary.eos()).long()
        after_first = (torch.cumsum(is_sep, dim=1) - is_sep).clamp(max=1)
        return after_first.masked_fill(src_tokens.eq(self.dictionary.pad()), 0)

    def forward(self, src_tokens, src_lengths=None, return_all_hiddens=False, **kwargs):
        """Args:
            src_tokens: ``(B, T)`` token ids, padded with ``pad`` on either side.

        Returns:
            ``(features, extra)``: ``features`` ``(B, T, C)`` the backbone's final states; ``extra`` a dict with
            ``padding_mask`` ``(B, T)`` (True at padding) and ``inner_states`` (list of ``L + 1`` tensors
            ``(B, T, C)``, embeddings then each layer, if ``return_all_hiddens``; else empty).
        """
        padding_mask = src_tokens.eq(self.dictionary.pad())
        token_types = self.token_types(src_tokens) if self.pair_token_types else None
        out = self.backbone(src_tokens, padding_mask=padding_mask, token_type_ids=token_types,
                            return_all_hiddens=return_all_hiddens)
        return out["hidden_states"], {"padding_mask": padding_mask, "inner_states": out["inner_states"]}

    def max_positions(self):
        return self.backbone.max_positions()


@register_model("bnb_classifier")
class BnBClassifierModel(FairseqEncoderModel):
    """BnB encoder + fairseq classification heads; see the module docstring."""

    def __init__(self, args, encoder: BnBClassifierEncoder):
        super().__init__(encoder)
        self.args = args
        self.classification_heads = torch.nn.ModuleDict()

    @staticmethod
    def add_args(parser):
        parser.add_argument("--encoder-layers", type=int, metavar="N", help="number of encoder BERT layers (random "
                            "initialisation; a checkpoint's own sizes win)")
        parser.add_argument("--encoder-embed-dim", type=int, metavar="N", help="encoder hidden size")
        parser.add_argument("--encoder-ffn-embed-dim", type=int, metavar="N", help="encoder FFN hidden size")
        parser.add_argument("--encoder-attention-heads", type=int, metavar="N", help="encoder attention heads")
        add_pretrained_encoder_args(parser)
        parser.add_argument("--bnb-checkpoint", type=str, metavar="PATH",
                            help="initialise the encoder from a bnb (BERT-NAR-BERT) fairseq checkpoint, e.g. the "
                            "checkpoint_last.pt of examples/pretraining/continue_pretraining_minilm.sh: its "
                            "encoder.backbone.* tensors (sizes and all) are loaded with strict name/shape checks; "
                            "the latent projection and decoder are dropped. The data must use the dictionary the "
                            "checkpoint was trained with. Not together with --pretrained-encoder")
        parser.add_argument("--pair-token-types", action="store_true",
                            help="give the tokens after the first [SEP] (</s>) of each row token type 1, as BERT "
                            "encodes sentence pairs (needs 2 token types: BERT checkpoints); default: type 0 "
                            "everywhere, as the BnB encoder is pretrained")
        parser.add_argument("--pooler-activation-fn", choices=utils.get_available_activation_fns(),
                            help="activation of the classification heads' dense layer (default tanh, as BERT's "
                            "pooler and RoBERTa's heads)")
        parser.add_argument("--pooler-dropout", type=float, metavar="D",
                            help="dropout before and after the classification heads' dense layer")
        parser.add_argument("--max-positions-table", type=int, metavar="N",
                            help="rows of the position embedding table for random initialisation")
        add_dropout_args(parser)

    @classmethod
    def build_model(cls, args, task):
        bnb_classifier_base(args)
        dictionary = task.source_dictionary
        check_input_layout(task, dictionary)
        if args.pretrained_encoder and args.bnb_checkpoint:
            raise ValueError("give either --pretrained-encoder (a BERT-family checkpoint) or --bnb-checkpoint (a bnb "
                             "fairseq checkpoint), not both")
        if args.bnb_checkpoint:
            backbone = backbone_from_bnb_checkpoint(args.bnb_checkpoint, dictionary, args)
        elif args.pretrained_encoder:
            backbone, _ = build_backbone(args, "encoder", dictionary, args.pretrained_encoder, False)
        else:  # random, or reloading a trained classifier from its recorded args.encoder_backbone_config
            backbone, _ = build_backbone(args, "encoder", dictionary, None, False)
        _record_sizes(args, backbone.cfg)
        # the checkpoints are only read when the model is first built: a trained model reloads its own weights, with
        # the backbone's exact conventions (position offset, LayerNorm eps, ...) kept in its config
        args.pretrained_encoder = args.bnb_checkpoint = None
        args.encoder_backbone_config = json.dumps(backbone.cfg.to_dict(), sort_keys=True)
        return cls(args, BnBClassifierEncoder(dictionary, backbone, args.pair_token_types))

    # --------------------------------------------------------------------------------------------------- heads
    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        """Add (or replace) head ``name``: ``[CLS]`` state ``(B, C)`` -> dropout, dense ``C -> inner_dim`` (default
        ``C``), activation, dropout, projection to ``num_classes`` logits; BERT's N(0, 0.02) initialisation."""
        if num_classes is None or num_classes < 1:
            raise ValueError(f"classification head {name!r} needs num_classes >= 1 (--num-classes), got "
                             f"{num_classes}")
        dim = self.encoder.backbone.embed_dim
        if name in self.classification_heads:
            old = self.classification_heads[name]
            if (old.out_proj.out_features, old.dense.out_features) != (num_classes, inner_dim or dim):
                logger.warning(f"re-registering head {name!r} with num_classes {num_classes} (was "
                               f"{old.out_proj.out_features}) and inner_dim {inner_dim or dim} (was "
                               f"{old.dense.out_features})")
        head = RobertaClassificationHead(input_dim=dim, inner_dim=inner_dim or dim, num_classes=num_classes,
                                         activation_fn=self.args.pooler_activation_fn,
                                         pooler_dropout=self.args.pooler_dropout)
        head.apply(init_bert_params)
        self.classification_heads[name] = head

    # ------------------------------------------------------------------------------------------------- forward
    def forward(self, src_tokens, features_only=False, return_all_hiddens=False, classification_head_name=None,
                **kwargs):
        """As RoBERTa's, as fairseq's ``sentence_prediction`` criterion calls it.

        Args:
            src_tokens: ``(B, T)`` token ids, ``[CLS]`` first (``--init-token``).
            classification_head_name: a registered head; without one, ``features_only`` must be True (this model has
                no masked-LM output layer).

        Returns:
            ``(x, extra)``: ``x`` the head's logits ``(B, num_classes)``, or the final states ``(B, T, C)`` without a
            head; ``extra`` as :meth:`BnBClassifierEncoder.forward` (``padding_mask``, ``inner_states``).
        """
        if classification_head_name is None and not features_only:
            raise ValueError("bnb_classifier has no masked-LM output layer: pass features_only=True or a "
                             "classification_head_name")
        x, extra = self.encoder(src_tokens, return_all_hiddens=return_all_hiddens)
        if classification_head_name is not None:
            if classification_head_name not in self.classification_heads:
                raise KeyError(f"no classification head {classification_head_name!r} (registered: "
                               f"{sorted(self.classification_heads)}); the sentence_prediction task registers "
                               "--classification-head-name")
            x = self.classification_heads[classification_head_name](x)
        return x, extra

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        logits = net_output[0].float()
        return utils.log_softmax(logits, dim=-1) if log_probs else utils.softmax(logits, dim=-1)

    def max_positions(self):
        return self.encoder.max_positions()

    @property
    def supported_targets(self):
        return {"self"}

    def upgrade_state_dict_named(self, state_dict, name):
        """Heads in a checkpoint that this model lacks are registered from their shapes (so a trained classifier
        reloads with all its heads); a head whose shapes differ from this model's (another --num-classes) is
        dropped with a warning and the model's fresh head kept, as RoBERTa does."""
        prefix = name + "." if name else ""
        super().upgrade_state_dict_named(state_dict, name)
        head_prefix = prefix + "classification_heads."
        names = {k[len(head_prefix):].split(".")[0] for k in state_dict if k.startswith(head_prefix)}
        for head in sorted(names):
            num_classes = state_dict[f"{head_prefix}{head}.out_proj.weight"].size(0)
            inner_dim = state_dict[f"{head_prefix}{head}.dense.weight"].size(0)
            if head not in self.classification_heads:
                self.register_classification_head(head, num_classes, inner_dim)
            current = self.classification_heads[head]
            if (current.out_proj.out_features, current.dense.out_features) != (num_classes, inner_dim):
                logger.warning(f"dropping classification head {head!r} of the checkpoint ({num_classes} classes, "
                               f"inner dim {inner_dim}): this model's has {current.out_proj.out_features} classes, "
                               f"inner dim {current.dense.out_features}")
                for k in [k for k in state_dict if k.startswith(f"{head_prefix}{head}.")]:
                    del state_dict[k]
        for k, v in self.classification_heads.state_dict().items():  # heads new in this model keep their init
            state_dict.setdefault(head_prefix + k, v)


# ------------------------------------------------------------------------------------------------------ helpers
def check_input_layout(task, dictionary):
    """Refuse ``--init-token`` / ``--separator-token`` values that do not give ``[CLS] ... [SEP]`` rows (see the
    module docstring). Tasks without these options (built outside sentence_prediction) are not checked."""
    cfg = getattr(task, "cfg", None)
    if cfg is None or not hasattr(cfg, "init_token"):
        return
    bos, eos = dictionary.bos(), dictionary.eos()
    init, sep = cfg.init_token, getattr(cfg, "separator_token", None)
    if init != bos:
        what = "is not set" if init is None else f"is {init} ({_symbol(dictionary, init)})"
        raise ValueError(f"--init-token {what}, but bnb_classifier classifies from the first position, which must "
                         f"be the dictionary's bos {_symbol(dictionary, bos)}: pass --init-token {bos}")
    if sep is not None and sep != eos:
        raise ValueError(f"--separator-token is {sep} ({_symbol(dictionary, sep)}), but the dictionary's separator "
                         f"is its eos {_symbol(dictionary, eos)}: pass --separator-token {eos} (RoBERTa's double "
                         f"separator) or leave it out (BERT's [CLS] a [SEP] b [SEP])")


def _symbol(dictionary, index):
    return repr(dictionary[index]) if 0 <= index < len(dictionary) else "outside the dictionary"


def _record_sizes(args, cfg: BertBackboneConfig):
    for name in ("layers", "embed_dim", "ffn_embed_dim", "attention_heads"):
        setattr(args, f"encoder_{name}", getattr(cfg, name))


def backbone_from_bnb_checkpoint(path: str, dictionary, args) -> BertBackbone:
    """The encoder backbone of the bnb (or bnb_classifier) fairseq checkpoint at ``path``, built as fairseq rebuilds
    that model (its recorded sizes, this model's dropout), with every ``encoder.backbone.*`` tensor checked by name
    and shape. ``dictionary``: the task's, whose size must be the checkpoint's embedding rows."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--bnb-checkpoint {path!r} does not exist")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    weights = state.get("model") or {}
    found = {k[len(BACKBONE_PREFIX):]: v for k, v in weights.items() if k.startswith(BACKBONE_PREFIX)}
    if not found:
        raise PretrainedCheckpointError(
            f"--bnb-checkpoint {path}: no BnB encoder tensors ({BACKBONE_PREFIX}*) among its {len(weights)} "
            "tensors; is it a bnb checkpoint? (a BERT-family checkpoint goes to --pretrained-encoder)")
    ckpt_args = _checkpoint_model_args(state)
    if ckpt_args.get("encoder_backbone_config"):  # a bnb_classifier checkpoint records its exact backbone
        cfg = BertBackboneConfig.from_dict(json.loads(ckpt_args["encoder_backbone_config"]))
    else:
        missing = [k for k in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                               "encoder_attention_heads") if ckpt_args.get(k) is None]
        if missing:
            raise PretrainedCheckpointError(f"--bnb-checkpoint {path}: its model config does not record {missing}")
        ns = argparse.Namespace(**ckpt_args)
        ns.max_positions_table = ckpt_args.get("max_positions_table") or 512
        ns.cross_attention_init = ckpt_args.get("cross_attention_init") or "random"
        for key in ("dropout", "attention_dropout", "activation_dropout"):
            setattr(ns, key, getattr(args, key))
        cfg = backbone_config(ns, "encoder", dictionary, cross_attention=False)
    rows = found.get("embeddings.embed_tokens.weight")
    if rows is not None and rows.shape[0] != len(dictionary):
        raise PretrainedCheckpointError(
            f"--bnb-checkpoint {path}: its token embeddings ({BACKBONE_PREFIX}embeddings.embed_tokens.weight) "
            f"have {rows.shape[0]} rows but the task dictionary has {len(dictionary)} symbols: binarize the "
            "data with the dictionary the checkpoint was trained with (the dict.txt of "
            "scripts/convert_pretrained.py)")
    cfg.dropout, cfg.attention_dropout, cfg.activation_dropout = args.dropout, args.attention_dropout, \
        args.activation_dropout
    if cfg.padding_idx != dictionary.pad():
        raise PretrainedCheckpointError(f"--bnb-checkpoint {path}: its padding index is {cfg.padding_idx} but the "
                                        f"task dictionary's pad is {dictionary.pad()}")
    backbone = BertBackbone(cfg)
    target = backbone.state_dict()
    missing = sorted(set(target) - set(found))
    unexpected = sorted(set(found) - set(target))
    if missing or unexpected:
        raise PretrainedCheckpointError(
            f"--bnb-checkpoint {path}: its encoder does not fit a {cfg.layers}-layer, {cfg.embed_dim}-dim BnB "
            f"encoder: missing {[BACKBONE_PREFIX + k for k in missing[:8]]}, unexpected "
            f"{[BACKBONE_PREFIX + k for k in unexpected[:8]]}")
    for key, value in target.items():
        if tuple(found[key].shape) != tuple(value.shape):
            raise PretrainedCheckpointError(
                f"--bnb-checkpoint {path}: tensor {BACKBONE_PREFIX}{key} has shape {tuple(found[key].shape)} but "
                f"the encoder's has shape {tuple(value.shape)}")
    backbone.load_state_dict(found, strict=True)
    dropped = sorted({".".join(k.split(".")[:2]) for k in weights if not k.startswith(BACKBONE_PREFIX)})
    logger.info(f"encoder initialised from bnb checkpoint {path} ({ckpt_args.get('arch', '?')}): {cfg.layers} "
                f"layers, {cfg.embed_dim} dims; not used: {dropped or 'nothing'}")
    return backbone


def _checkpoint_model_args(state) -> dict:
    """The model section of a fairseq checkpoint's config (``cfg.model`` or legacy ``args``) as a plain dict."""
    model_cfg = None
    cfg = state.get("cfg")
    if cfg is not None:
        model_cfg = cfg.get("model") if hasattr(cfg, "get") else getattr(cfg, "model", None)
    if model_cfg is None:
        model_cfg = state.get("args")
    if model_cfg is None:
        return {}
    if isinstance(model_cfg, argparse.Namespace):
        return dict(vars(model_cfg))
    try:
        from omegaconf import OmegaConf

        return dict(OmegaConf.to_container(model_cfg, resolve=True))
    except Exception:
        return dict(model_cfg.items())


# ------------------------------------------------------------------------------------------------ architectures
def _classifier_defaults(args):
    args.pretrained_encoder = getattr(args, "pretrained_encoder", None)
    args.bnb_checkpoint = getattr(args, "bnb_checkpoint", None)
    args.pair_token_types = getattr(args, "pair_token_types", False)
    args.pooler_activation_fn = getattr(args, "pooler_activation_fn", None) or "tanh"
    if getattr(args, "pooler_dropout", None) is None:
        args.pooler_dropout = 0.1  # BERT's classifier dropout (hidden_dropout_prob)


@register_model_architecture("bnb_classifier", "bnb_classifier_base")
def bnb_classifier_base(args):
    """BERT-base encoder sizes (those of ``bnb_base``)."""
    bnb_base(args)
    _classifier_defaults(args)


@register_model_architecture("bnb_classifier", "bnb_classifier_small")
def bnb_classifier_small(args):
    """MiniLM-L6-H384 encoder sizes (those of ``bnb_small``)."""
    bnb_small(args)
    _classifier_defaults(args)


@register_model_architecture("bnb_classifier", "bnb_classifier_tiny")
def bnb_classifier_tiny(args):
    """Test sizes (those of ``bnb_tiny``)."""
    bnb_tiny(args)
    _classifier_defaults(args)
