"""What every MLAE model shares: sizes, flags, the dictionaries' mask symbol, the backbones and the encoder.

Sizes (:data:`SIZES`; each model registers ``<model>_<size>`` for every one):

=========  ======  ======  =====  =====  =====  ===============================================================
size       enc. L  dec. L  width  heads  FFN    where
=========  ======  ======  =====  =====  =====  ===============================================================
``12_4``   12      4       768    12     3072   the paper's model (BERT-base encoder, a 4-layer decoder), §4.1
``8_8``    8       8       768    12     3072   the symmetric variant of §5.2.1 (better for NAR generation)
``9_4``    9       4       768    12     3072   the ~100M-parameter variant compared with BANG, §4.5
``small``  6       2       256    4      1024   CPU size
``mini``   3       2       256    4      1024   CPU demo size (examples/mlae/demo.sh): learns in CPU-minutes
``tiny``   2       1       64     2      128    test size
=========  ======  ======  =====  =====  =====  ===============================================================

Encoder and decoder are :class:`~fairseq_nar_plugins.modules.backbone.bert_backbone.BertBackbone` stacks of the same width
sharing one token-embedding table (the paper's single vocabulary), which is also the output projection of the
decoder's masked-LM head (:class:`~fairseq_nar_plugins.modules.backbone.bert_backbone.BertLMHead`). The decoder follows the
encoder's conventions (position offset, LayerNorm epsilon, token types), so that an encoder initialised from a
BERT-family checkpoint (``--pretrained-encoder``) gets a decoder that fits it.
"""
import dataclasses
import json
import logging
from typing import Optional, Tuple

import torch
from fairseq.models import FairseqEncoder
from torch import Tensor

from ...modules.backbone.backbone_args import add_dropout_args, set_dropout_defaults
from ...modules.backbone.bert_backbone import BertBackbone, BertBackboneConfig
from ...modules.pretrained.pretrained_import import PretrainedCheckpointError, import_checkpoint, load_imported_into
from ...tasks.masked_autoencoder_pretrain import MaskedAutoencoderPretrainTask
from ..bnb import build_backbone

logger = logging.getLogger(__name__)

#: name -> (encoder layers, decoder layers, width, attention heads, FFN width)
SIZES = {
    "12_4": (12, 4, 768, 12, 3072),
    "8_8": (8, 8, 768, 12, 3072),
    "9_4": (9, 4, 768, 12, 3072),
    "small": (6, 2, 256, 4, 1024),
    "mini": (3, 2, 256, 4, 1024),
    "tiny": (2, 1, 64, 2, 128),
}
SIZE_DOCS = {
    "12_4": "MLAE 12L-4L (paper §4.1, Table 8): 12-layer encoder, 4-layer decoder, 768 dims, 12 heads, FFN 3072.",
    "8_8": "MLAE 8L-8L (paper §5.2.1, the symmetric variant): 8 + 8 layers, 768 dims, 12 heads, FFN 3072.",
    "9_4": "MLAE 9L-4L (paper §4.5, ~100M parameters, vs BANG): 9 + 4 layers, 768 dims, 12 heads, FFN 3072.",
    "small": "CPU size: 6-layer encoder, 2-layer decoder, 256 dims, 4 heads, FFN 1024.",
    "mini": "CPU demo size: 3-layer encoder, 2-layer decoder, 256 dims, 4 heads, FFN 1024 (from random weights it "
            "learns Multi30k in 600 updates, where the 6-layer encoder of 'small' has not; docs/mlae.md).",
    "tiny": "Test size: 2-layer encoder, 1-layer decoder, 64 dims, 2 heads, FFN 128.",
}
DEFAULT_MASK_SYMBOL = "<mask>"
ENCODER_INPUTS = ("drop", "mask")


# ------------------------------------------------------------------------------------------------------- flags
def add_mlae_args(parser, decoder: bool = True):
    """Sizes, initialisation and dropout flags of every MLAE model (``decoder=False``: the classifier)."""
    parser.add_argument("--encoder-layers", type=int, metavar="N", help="encoder layers (paper: 12)")
    parser.add_argument("--encoder-embed-dim", type=int, metavar="N", help="hidden size (paper: 768)")
    parser.add_argument("--encoder-ffn-embed-dim", type=int, metavar="N", help="encoder FFN width (paper: 3072)")
    parser.add_argument("--encoder-attention-heads", type=int, metavar="N", help="encoder attention heads "
                        "(paper: 12)")
    if decoder:
        parser.add_argument("--decoder-layers", type=int, metavar="N",
                            help="decoder layers (paper: 4; 8 for the symmetric 8L-8L variant)")
        parser.add_argument("--decoder-embed-dim", type=int, metavar="N",
                            help="decoder width; must equal --encoder-embed-dim (the decoder reads the encoder's "
                            "states as its input and shares its token embeddings)")
        parser.add_argument("--decoder-ffn-embed-dim", type=int, metavar="N",
                            help="decoder FFN width (default: the encoder's)")
        parser.add_argument("--decoder-attention-heads", type=int, metavar="N",
                            help="decoder attention heads (default: the encoder's)")
        parser.add_argument("--pretrained-decoder", type=str, metavar="PATH",
                            help="initialise the decoder from the first --decoder-layers layers (and the "
                            "embeddings and masked-LM head) of this BERT-family checkpoint (same formats as "
                            "--pretrained-encoder; usually the same file); default: random")
        parser.add_argument("--cross-attention-init", choices=("random", "self_attention"),
                            help="decoder cross-attention that has no pretrained weights: a copy of each layer's "
                            "self-attention (MLAE §3.3, the default) or random (BERT2BERT)")
        parser.add_argument("--share-all-embeddings", action="store_true",
                            help="one token-embedding table for encoder, decoder and output layer: always the "
                            "case for MLAE (one vocabulary); accepted so that generic recipes can pass it")
    parser.add_argument("--pretrained-encoder", type=str, metavar="PATH",
                        help="initialise the encoder (and the shared token embeddings) from a BERT-family "
                        "checkpoint: a Hugging Face folder, a fairseq RoBERTa/XLM-R model.pt, or the output of "
                        "scripts/convert_pretrained.py; its sizes replace the architecture's and the data must use "
                        "its dictionary. Default: random initialisation")
    parser.add_argument("--init-from-mlae", type=str, metavar="CKPT",
                        help="initialise from an MLAE pretraining checkpoint (a fairseq checkpoint of the model "
                        "'mlae'): its sizes win; every tensor is taken from it or is new (cross-attention, "
                        "length classifier, classification heads), as the log lists; a vocabulary or shape "
                        "mismatch stops with the tensor's name. Read only when the model is first built")
    parser.add_argument("--mlae-mask-symbol", type=str, metavar="SYM",
                        help=f"the mask symbol of pretraining (default {DEFAULT_MASK_SYMBOL!r}; taken from the "
                        "checkpoint with --init-from-mlae); added to the task dictionaries if absent, as the "
                        "pretraining task does")
    parser.add_argument("--max-positions-table", type=int, metavar="N",
                        help="rows of the position embedding tables for random initialisation (paper: 512)")
    add_dropout_args(parser)


def set_mlae_defaults(args, size: str):
    """Sizes of ``size`` (:data:`SIZES`) and the shared defaults, where the flags are unset (a flag always wins,
    0 included)."""
    enc_layers, dec_layers, dim, heads, ffn = SIZES[size]
    for name, value in (("encoder_layers", enc_layers), ("encoder_embed_dim", dim),
                        ("encoder_ffn_embed_dim", ffn), ("encoder_attention_heads", heads),
                        ("decoder_layers", dec_layers)):
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    for name, source in (("decoder_embed_dim", "encoder_embed_dim"), ("decoder_ffn_embed_dim",
                                                                       "encoder_ffn_embed_dim"),
                         ("decoder_attention_heads", "encoder_attention_heads")):
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(args, source))
    for name, default in (("pretrained_encoder", None), ("pretrained_decoder", None), ("init_from_mlae", None),
                          ("cross_attention_init", "self_attention"), ("mlae_mask_symbol", DEFAULT_MASK_SYMBOL),
                          ("max_positions_table", 512)):
        if getattr(args, name, None) is None:
            setattr(args, name, default)
    args.share_all_embeddings = True
    set_dropout_defaults(args)
    if getattr(args, "max_source_positions", None) is None:
        args.max_source_positions = args.max_positions_table
    if getattr(args, "max_target_positions", None) is None:
        args.max_target_positions = args.max_positions_table


# ------------------------------------------------------------------------------------------------ dictionaries
def prepare_dictionaries(task, symbol: str) -> int:
    """The mask id of a fine-tuning task's dictionaries, adding ``symbol`` to them as the pretraining task did
    (``masked_autoencoder_pretrain`` appends it to ``dict.txt``; ``translation`` / ``translation_lev`` do not), so
    that the embedding table has the pretraining's rows. Refuses separate source and target vocabularies (MLAE has
    one embedding table)."""
    src, tgt = task.source_dictionary, getattr(task, "target_dictionary", None)
    idx = MaskedAutoencoderPretrainTask.add_mask_symbol(src, symbol)
    if tgt is not None and tgt is not src:
        if MaskedAutoencoderPretrainTask.add_mask_symbol(tgt, symbol) != idx or tgt.symbols != src.symbols:
            raise ValueError("MLAE shares one vocabulary between source and target: binarize both sides with one "
                             "dictionary (fairseq-preprocess --joined-dictionary, or --srcdict and --tgtdict both "
                             "the pretraining dict.txt)")
    return idx


# --------------------------------------------------------------------------------------------------- backbones
def _dropout(args) -> dict:
    return dict(dropout=args.dropout, attention_dropout=args.attention_dropout,
                activation_dropout=args.activation_dropout)


def build_encoder_backbone(args, dictionary) -> Tuple[BertBackbone, Optional[dict]]:
    """``(backbone, lm_head_state or None)``: from ``--pretrained-encoder`` (its sizes written back to ``args``), from
    the config recorded in ``args.encoder_backbone_config`` (reloads, ``--init-from-mlae``), or random."""
    return build_backbone(args, "encoder", dictionary, args.pretrained_encoder, False)


def build_decoder_backbone(args, dictionary, encoder_cfg: BertBackboneConfig, cross_attention: bool
                           ) -> Tuple[BertBackbone, Optional[dict]]:
    """The decoder stack: the recorded ``args.decoder_backbone_config`` (reloads, ``--init-from-mlae``), or the
    encoder's conventions with the decoder's depth (and heads / FFN when the encoder is random), with or without
    cross-attention; ``--pretrained-decoder`` then loads its first layers. The config is recorded in
    ``args.decoder_backbone_config``. Returns ``(backbone, lm_head_state or None)``."""
    saved = getattr(args, "decoder_backbone_config", None)
    if saved and not args.pretrained_decoder:
        cfg = BertBackboneConfig.from_dict({**json.loads(saved), **_dropout(args)})
        if cfg.cross_attention != cross_attention:
            raise ValueError(f"the recorded decoder config has cross_attention={cfg.cross_attention}, this model "
                             f"needs {cross_attention}")
        if cfg.vocab_size != len(dictionary):
            raise ValueError(f"the model's decoder vocabulary has {cfg.vocab_size} rows but the task dictionary has "
                             f"{len(dictionary)} symbols: use the data directory the model was trained with")
    else:
        if args.pretrained_encoder:  # the checkpoint's width replaces the architecture's, for both stacks
            args.decoder_embed_dim = encoder_cfg.embed_dim
        elif args.decoder_embed_dim != encoder_cfg.embed_dim:
            raise ValueError(f"--decoder-embed-dim {args.decoder_embed_dim} differs from the encoder's width "
                             f"{encoder_cfg.embed_dim}: MLAE's decoder reads the encoder's states as its input; use "
                             "one width")
        sizes = dict(layers=args.decoder_layers)
        if not args.pretrained_encoder:
            sizes.update(attention_heads=args.decoder_attention_heads, ffn_embed_dim=args.decoder_ffn_embed_dim)
        cfg = dataclasses.replace(encoder_cfg, **sizes, **_dropout(args), cross_attention=cross_attention,
                                  cross_attention_init=args.cross_attention_init,
                                  encoder_embed_dim=encoder_cfg.embed_dim if cross_attention else 0)
    backbone = BertBackbone(cfg)
    lm_head = None
    if args.pretrained_decoder:
        lm_head = load_first_layers(backbone, args.pretrained_decoder, dictionary)
    args.decoder_layers, args.decoder_attention_heads, args.decoder_ffn_embed_dim = cfg.layers, \
        cfg.attention_heads, cfg.ffn_embed_dim
    args.decoder_backbone_config = json.dumps(backbone.cfg.to_dict(), sort_keys=True)
    return backbone, lm_head


def load_first_layers(backbone: BertBackbone, path: str, dictionary) -> Optional[dict]:
    """Load the embeddings and the first ``backbone.cfg.layers`` layers of the BERT-family checkpoint at ``path``
    into ``backbone`` (cross-attention, if any, then initialised by ``cfg.cross_attention_init``); returns the
    checkpoint's masked-LM head state (or None)."""
    imported = import_checkpoint(path)
    n = backbone.cfg.layers
    if imported.config.layers < n:
        raise PretrainedCheckpointError(f"--pretrained-decoder {path} has {imported.config.layers} layers, fewer "
                                        f"than the {n} decoder layers (--decoder-layers)")
    imported.state_dict = {k: v for k, v in imported.state_dict.items()
                           if not k.startswith("layers.") or int(k.split(".")[1]) < n}
    load_imported_into(backbone, imported, dictionary)
    logger.info(f"decoder initialised from the embeddings and first {n} of the {imported.config.layers} layers of "
                f"{path}")
    return imported.lm_head


# ----------------------------------------------------------------------------------------------------- helpers
def prepend_bos(tokens: Tensor, bos: int, pad: int) -> Tensor:
    """Rows framed as the pretraining blocks were: ``<s>`` before the first real token of every row that does not
    start with it (fairseq's ``translation`` task gives sources without ``<s>``; ``translation_lev`` prepends it).

    Args:
        tokens: ``(B, S)`` token ids, padded with ``pad`` on either side.

    Returns:
        ``tokens`` itself if every row starts with ``<s>``; otherwise a new right-padded ``(B, S')`` tensor.
    """
    real = tokens.ne(pad)
    first = real.to(torch.int8).argmax(1)
    need = tokens.gather(1, first[:, None]).squeeze(1).ne(bos) & real.any(1)
    if not bool(need.any()):
        return tokens
    shift = need.long()
    new_pos = real.long().cumsum(1) - 1 + shift[:, None]
    out = tokens.new_full((tokens.size(0), int((real.sum(1) + shift).max())), pad)
    rows = torch.arange(tokens.size(0), device=tokens.device)[:, None].expand_as(tokens)
    out[rows[real], new_pos[real]] = tokens[real]
    out[need, 0] = bos
    return out


def compact_visible(tokens: Tensor, visible: Tensor, pad: int):
    """The visible tokens of each row, moved to the front, with their original positions (MLAE's encoder input:
    "the unmasked tokens are first processed", at the positions they hold in the block).

    Args:
        tokens: ``(B, T)`` blocks (any padding side).
        visible: ``(B, T)`` bool, True at the tokens the encoder reads (padding is never visible).

    Returns:
        ``(tokens (B, S), positions (B, S), padding_mask (B, S), index (B, T))``: the visible tokens right-padded;
        their 0-based original positions (rank among the row's real tokens); True at padding; and for every block
        position the slot of the compact row holding it (meaningful at visible positions only).
    """
    real = tokens.ne(pad)
    visible = visible & real
    original = real.long().cumsum(1) - 1
    width = max(int(visible.sum(1).max()), 1)
    order = torch.sort((~visible).to(torch.int8), dim=1, stable=True).indices[:, :width]
    kept = visible.gather(1, order)
    out = tokens.gather(1, order).masked_fill(~kept, pad)
    positions = original.gather(1, order).masked_fill(~kept, 0)
    index = (visible.long().cumsum(1) - 1).clamp(min=0)
    return out, positions, ~kept, index


class MLAEEncoder(FairseqEncoder):
    """The MLAE encoder: a BERT-family stack over the source.

    In pretraining it reads the visible tokens only, at their original positions (``positions``); in fine-tuning
    the whole source, framed ``<s> ... </s>`` as the pretraining blocks (``frame_source``)."""

    def __init__(self, dictionary, backbone: BertBackbone, frame_source: bool = True):
        super().__init__(dictionary)
        self.backbone = backbone
        self.frame_source = frame_source

    def forward(self, src_tokens, src_lengths=None, positions: Optional[Tensor] = None, **kwargs):
        """Args:
            src_tokens: ``(B, S)`` token ids, padded on either side.
            positions: ``(B, S)`` explicit 0-based positions (pretraining's compacted visible tokens); default: each
                real token's rank in its row.

        Returns:
            dict of batch-first tensors: ``encoder_out`` ``(B, S', C)`` final states, ``encoder_padding_mask``
            ``(B, S')`` (True at padding), ``src_tokens`` ``(B, S')`` the tokens read (``S' = S + 1`` when ``<s>``
            was prepended).
        """
        pad = self.dictionary.pad()
        if self.frame_source and positions is None:
            src_tokens = prepend_bos(src_tokens, self.dictionary.bos(), pad)
        padding_mask = src_tokens.eq(pad)
        states = self.backbone(src_tokens, padding_mask=padding_mask, positions=positions)["hidden_states"]
        return {"encoder_out": states, "encoder_padding_mask": padding_mask, "src_tokens": src_tokens}

    def reorder_encoder_out(self, encoder_out, new_order):
        return {k: (v.index_select(0, new_order) if torch.is_tensor(v) else v) for k, v in encoder_out.items()}

    def max_positions(self):
        # one position is kept for the <s> prepended to sources that lack it
        return self.backbone.max_positions() - (1 if self.frame_source else 0)


def source_lengths(encoder_out) -> Tensor:
    """``(B,)`` real tokens of each encoded row (``<s>`` and ``</s>`` included)."""
    return (~encoder_out["encoder_padding_mask"]).sum(1)


def register_sizes(model_name: str, register, extra_defaults, doc_suffix: str = ""):
    """Register ``<model_name>_<size>`` for every size of :data:`SIZES` with fairseq's
    ``register_model_architecture`` (``register``), each setting its sizes, then ``extra_defaults(args)``."""
    archs = {}
    for size in SIZES:
        def arch(args, size=size):
            set_mlae_defaults(args, size)
            extra_defaults(args)

        arch.__doc__ = SIZE_DOCS[size] + doc_suffix
        arch.__name__ = f"{model_name}_{size}"
        archs[size] = register(model_name, f"{model_name}_{size}")(arch)
    return archs
