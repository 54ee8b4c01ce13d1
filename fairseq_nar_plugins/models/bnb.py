"""BERT-NAR-BERT (BnB; shared/papers/000): a BERT encoder and a non-autoregressive BERT decoder joined by a latent z.

* Encoder: the BERT-family backbone (``modules.backbone.bert_backbone``); ``h`` ``(B, S, H)`` are its final states.
* Latent: ``z = W_E h + b``, one ``P``-dimensional vector per source token (``--latent-dim P``).
* Decoder: BERT layers with bidirectional self-attention and cross-attention to ``h`` (BERT2BERT style). It never
  sees target tokens: its input at position ``t`` is position + token-type embeddings plus the latent brought onto
  that position and mapped up to the decoder width (``P -> H``, GELU, as in the authors' code).

  How ``z`` reaches decoder positions (``modules.nat.source_copy``): with CTC the decoder has ``round(ratio * S)`` frames
  and frame ``j`` reads ``z`` of source token ``floor(j / ratio)`` (each source latent copied ``ratio`` times); with
  length classification the decoder has the (gold or predicted) target length ``T`` and position ``i`` reads ``z`` of
  source token ``round(i (S - 1) / (T - 1))``: a longer decoder repeats latents, a shorter one skips some, and the
  first and last positions always read the first and last source tokens.
* Output length (``--length-mode``): ``lc``, length classification from the mean-pooled latent (the paper) or
  encoder states (``--length-pooling encoder``), absolute or relative to the source (``--pred-length-offset``)
  (fairseq ``nat_loss`` "length" term; ``--iter-decode-with-beam`` decodes several lengths and keeps the best), or
  ``ctc`` over an upsampled decoder (``--task translation_lev_ctc --criterion ctc``; no length classifier is built).
  Positions: with CTC the decoder has ``round(ratio x S)`` frames, so sources are capped at ``floor(P / ratio)``
  tokens (``P`` the decoder's positions; ``max_positions()`` reports it, fairseq skips longer ones); predicted
  lengths are capped at ``P``.
* Output layer: BERT's masked-LM head (dense, GELU, LayerNorm, projection tied to the decoder's token embeddings).
* Initialisation: ``--pretrained-encoder PATH`` (and ``--pretrained-decoder``, default the same) from a BERT-family
  checkpoint, or random. Cross-attention starts random (BERT2BERT, BnB) or as a copy of self-attention
  (``--cross-attention-init self_attention``, MLAE).

Tasks: ``translation_lev`` / ``translation_lev_ctc`` for MT, QG and summarization; ``masked_autoencoder_pretrain``
for the additional pretraining (MLM 15 %, permutation LM 50 %), where the decoder length is the block length.
"""
import json
import logging

import torch
import torch.nn as nn
from fairseq import utils
from fairseq.models import FairseqDecoder, FairseqEncoder, FairseqEncoderDecoderModel, register_model, \
    register_model_architecture

from ..modules.backbone.backbone_args import add_dropout_args, require_positive, set_default, set_dropout_defaults, \
    set_encoder_sizes
from ..modules.backbone.bert_backbone import BertBackbone, BertBackboneConfig, BertLMHead
from ..modules.ctc.ctc_generation import CTCGenerationMixin, placeholder_rows
from ..modules.ctc.ctc_utils import strip_bos_eos
from ..modules.nat.length_predictor import LengthClassifier
from ..modules.pretrained.pretrained_import import build_pretrained_backbone
from ..modules.nat.source_copy import gather_source, ratio_copy_index, uniform_copy_index
from ..modules.pretrained.warm_start import add_init_from_checkpoint_arg, encoder_decoder_rename, init_from_checkpoint, \
    refuse_with_pretrained

logger = logging.getLogger(__name__)

LENGTH_MODES = ("lc", "ctc")
LENGTH_POOLINGS = ("latent", "encoder")
# translation_lev noises that keep prev_output_tokens as long as the target (length classification sizes the
# decoder by them and learns their lengths): random_delete would train on corrupted lengths
LC_NOISES = ("full_mask", "random_mask", "no_noise")
# length classification at generation: at most 2.5 x source + 10 tokens (German in an English WordPiece vocabulary
# takes ~1.75x the source's tokens; the same cap as the distillation recipes)
DEFAULT_MAX_LENGTH_RATIO = 2.5
DEFAULT_MAX_LENGTH_OFFSET = 10.0


def backbone_config(args, prefix: str, dictionary, cross_attention: bool) -> BertBackboneConfig:
    """A random-init BERT-conventions config from ``--{prefix}-layers`` etc. and the task dictionary."""
    return BertBackboneConfig.bert(
        vocab_size=len(dictionary),
        embed_dim=getattr(args, f"{prefix}_embed_dim"),
        ffn_embed_dim=getattr(args, f"{prefix}_ffn_embed_dim"),
        layers=getattr(args, f"{prefix}_layers"),
        attention_heads=getattr(args, f"{prefix}_attention_heads"),
        num_positions=args.max_positions_table,
        padding_idx=dictionary.pad(),
        dropout=args.dropout,
        attention_dropout=args.attention_dropout,
        activation_dropout=args.activation_dropout,
        cross_attention=cross_attention,
        cross_attention_init=args.cross_attention_init,
        encoder_embed_dim=args.encoder_embed_dim if cross_attention else 0,
    )


def build_backbone(args, prefix, dictionary, path, cross_attention):
    """``(backbone, lm_head_state or None)``: from the checkpoint at ``path`` (its sizes win over the
    architecture's, with a log line), or random from the architecture.

    The backbone's exact config (sizes and a checkpoint's conventions: position offset, LayerNorm eps, token types,
    ...) is recorded as JSON in ``args.{prefix}_backbone_config``, which fairseq saves with the model; a trained
    model (``path`` unset at reload) rebuilds from it, so a RoBERTa / XLM-R-initialised model does not come back
    with BERT conventions."""
    overrides = dict(dropout=args.dropout, attention_dropout=args.attention_dropout,
                     activation_dropout=args.activation_dropout)
    key = f"{prefix}_backbone_config"
    if not path:
        saved = getattr(args, key, None)
        if saved:
            cfg = BertBackboneConfig.from_dict({**json.loads(saved), **overrides})
            if cfg.vocab_size != len(dictionary):
                raise ValueError(f"the model's {prefix} vocabulary has {cfg.vocab_size} rows but the task dictionary "
                                 f"has {len(dictionary)} symbols: use the data directory (and task flags such as "
                                 "--ctc-blank-symbol) the model was trained with")
        else:
            cfg = backbone_config(args, prefix, dictionary, cross_attention)
        backbone = BertBackbone(cfg)
        setattr(args, key, json.dumps(backbone.cfg.to_dict(), sort_keys=True))
        return backbone, None
    if cross_attention:
        overrides.update(cross_attention=True, cross_attention_init=args.cross_attention_init)
    backbone, imported = build_pretrained_backbone(path, dictionary=dictionary, **overrides)
    cfg = backbone.cfg
    for name, attr in (("embed_dim", "embed_dim"), ("layers", "layers"), ("ffn_embed_dim", "ffn_embed_dim"),
                       ("attention_heads", "attention_heads")):
        setattr(args, f"{prefix}_{name}", getattr(cfg, attr))
    logger.info(f"{prefix} initialised from {path}: {cfg.layers} layers, {cfg.embed_dim} dims "
                f"({imported.source.get('format', '?')})")
    setattr(args, key, json.dumps(cfg.to_dict(), sort_keys=True))
    return backbone, imported.lm_head


class BnBEncoder(FairseqEncoder):
    """BERT encoder plus the latent projection ``z = W_E h + b``."""

    def __init__(self, args, dictionary, backbone: BertBackbone):
        super().__init__(dictionary)
        self.backbone = backbone
        self.latent_proj = nn.Linear(backbone.embed_dim, args.latent_dim)
        nn.init.normal_(self.latent_proj.weight, std=0.02)
        nn.init.zeros_(self.latent_proj.bias)

    def forward(self, src_tokens, src_lengths=None, **kwargs):
        """Returns a dict of batch-first tensors: ``encoder_out`` ``(B, S, H)`` final states ``h``,
        ``encoder_padding_mask`` ``(B, S)`` (True at padding), ``latent`` ``(B, S, P)`` the latent ``z``."""
        padding_mask = src_tokens.eq(self.dictionary.pad())
        h = self.backbone(src_tokens, padding_mask=padding_mask)["hidden_states"]
        return {"encoder_out": h, "encoder_padding_mask": padding_mask, "latent": self.latent_proj(h)}

    def reorder_encoder_out(self, encoder_out, new_order):
        return {k: v.index_select(0, new_order) for k, v in encoder_out.items()}

    def max_positions(self):
        return self.backbone.max_positions()


class BnBDecoder(FairseqDecoder):
    """Non-autoregressive BERT decoder fed with up-projected latents; masked-LM output head; length classifier."""

    def __init__(self, args, dictionary, backbone: BertBackbone, lm_head_state=None):
        super().__init__(dictionary)
        self.backbone = backbone
        self.length_mode = args.length_mode
        self.upsample_ratio = getattr(args, "upsample_ratio", 2.0)
        dim = backbone.embed_dim
        self.latent_up = nn.Sequential(nn.Linear(args.latent_dim, dim), nn.GELU())
        nn.init.normal_(self.latent_up[0].weight, std=0.02)
        nn.init.zeros_(self.latent_up[0].bias)
        self.lm_head = BertLMHead(backbone.cfg, backbone.embeddings.embed_tokens.weight)
        if lm_head_state:
            missing = self.lm_head.load_state_dict(lm_head_state, strict=False)
            logger.info(f"decoder output layer initialised from the checkpoint's masked-LM head "
                        f"(not in checkpoint: {missing.missing_keys or 'none'})")
        # the length classifier exists in length-classification mode only (in CTC mode it would be a parameter
        # without gradient, which fairseq's default DDP backend refuses)
        self.length = None
        self.length_pooling = getattr(args, "length_pooling", None) or "latent"  # before the flag: the latent
        if self.length_mode == "lc":
            pooled_dim = args.latent_dim if self.length_pooling == "latent" else args.encoder_embed_dim
            self.length = LengthClassifier(pooled_dim, args.max_length_classes, args.pred_length_offset)
        self.length_loss_factor = args.length_loss_factor
        # generation-time cap on predicted lengths (checkpoints saved before the flag existed get the default)
        self.max_length_ratio = getattr(args, "max_length_ratio", DEFAULT_MAX_LENGTH_RATIO)
        self.max_length_offset = getattr(args, "max_length_offset", DEFAULT_MAX_LENGTH_OFFSET)

    def positions_for(self, encoder_out, tgt_lengths=None):
        """``(index, padding_mask)`` ``(B, T)``: which source latent each decoder position reads."""
        src_lengths = (~encoder_out["encoder_padding_mask"]).sum(1)
        if self.length_mode == "ctc":
            return ratio_copy_index(src_lengths, self.upsample_ratio)
        return uniform_copy_index(src_lengths, tgt_lengths)

    def forward(self, encoder_out, tgt_lengths=None, normalize=False, **kwargs):
        """Logits (or log-probabilities) ``(B, T, V)`` and the decoder padding mask ``(B, T)``. ``tgt_lengths``
        ``(B,)`` is required for length classification (gold in training, predicted in generation)."""
        states, padding = self.features(encoder_out, tgt_lengths)
        logits = self.lm_head(states)
        return (utils.log_softmax(logits, -1) if normalize else logits), padding

    def features(self, encoder_out, tgt_lengths=None):
        """Final decoder states ``(B, T, C)`` (before the output layer) and the padding mask ``(B, T)``."""
        index, padding = self.positions_for(encoder_out, tgt_lengths)
        z = gather_source(encoder_out["latent"], encoder_out["encoder_padding_mask"], index, padding)
        states = self.backbone(
            token_embeddings=self.latent_up(z), padding_mask=padding,
            encoder_out=encoder_out["encoder_out"], encoder_padding_mask=encoder_out["encoder_padding_mask"],
        )["hidden_states"]
        return states, padding

    def forward_length(self, encoder_out):
        """Length logits ``(B, max_length_classes)`` from the mean-pooled latent ``z`` ``(B, S, P)`` or, with
        ``--length-pooling encoder``, the mean-pooled encoder states ``h`` ``(B, S, H)``."""
        states = encoder_out["latent"] if self.length_pooling == "latent" else encoder_out["encoder_out"]
        return self.length(states, encoder_out["encoder_padding_mask"])

    def max_positions(self):
        return self.backbone.max_positions()


@register_model("bnb")
class BnBModel(CTCGenerationMixin, FairseqEncoderDecoderModel):
    """BERT-NAR-BERT; see the module docstring."""

    def __init__(self, args, encoder, decoder):
        super().__init__(encoder, decoder)
        self.args = args
        d = decoder.dictionary
        self.bos, self.eos, self.pad, self.unk = d.bos(), d.eos(), d.pad(), d.unk()
        self.blank = getattr(args, "ctc_blank_idx", self.unk)

    @staticmethod
    def add_args(parser):
        for side in ("encoder", "decoder"):
            parser.add_argument(f"--{side}-layers", type=int, metavar="N", help=f"number of {side} BERT layers")
            parser.add_argument(f"--{side}-embed-dim", type=int, metavar="N", help=f"{side} hidden size")
            parser.add_argument(f"--{side}-ffn-embed-dim", type=int, metavar="N", help=f"{side} FFN hidden size")
            parser.add_argument(f"--{side}-attention-heads", type=int, metavar="N", help=f"{side} attention heads")
        parser.add_argument("--latent-dim", type=int, metavar="P",
                            help="size P of the latent z = W_E h + b (one vector per source token)")
        parser.add_argument("--length-mode", choices=LENGTH_MODES,
                            help="output length: 'lc' length classification from z (task translation_lev, "
                            "criterion nat_loss) or 'ctc' (task translation_lev_ctc, criterion ctc)")
        parser.add_argument("--max-length-classes", type=int, metavar="N",
                            help="length classes of the length classifier (longest predictable target)")
        parser.add_argument("--pred-length-offset", action="store_true",
                            help="classify len(target) - len(source) + max-length-classes / 2 instead of "
                            "len(target)")
        parser.add_argument("--length-pooling", choices=LENGTH_POOLINGS,
                            help="what the length classifier mean-pools over the source: 'latent' (the P-dim z, "
                            "the paper's p(l|z), default) or 'encoder' (the encoder's final states h)")
        parser.add_argument("--length-loss-factor", type=float, help="weight of the length classification loss")
        parser.add_argument("--max-length-ratio", type=float, metavar="A",
                            help="length classification at generation: predicted lengths (with <s> and </s>) are "
                            f"at most A x source length + --max-length-offset (default {DEFAULT_MAX_LENGTH_RATIO}; "
                            "change it at generation with --model-overrides \"{'max_length_ratio': A}\")")
        parser.add_argument("--max-length-offset", type=float, metavar="B",
                            help=f"the B of --max-length-ratio (default {DEFAULT_MAX_LENGTH_OFFSET})")
        parser.add_argument("--pretrained-encoder", type=str, metavar="PATH",
                            help="initialise the encoder from a BERT-family checkpoint: a Hugging Face folder, a "
                            "fairseq RoBERTa/XLM-R model.pt, or the output of scripts/convert_pretrained.py; its "
                            "sizes replace the architecture's and the data must use its dictionary")
        parser.add_argument("--pretrained-decoder", type=str, metavar="PATH",
                            help="initialise the decoder's self-attention/FFN/embeddings from this checkpoint "
                            "(default: the --pretrained-encoder checkpoint, as BnB does)")
        add_init_from_checkpoint_arg(
            parser, "its encoder layers initialise the encoder's, its decoder layers (self-attention, "
            "cross-attention, FFN) the decoder's, its embeddings and output layer the word embeddings and LM head; "
            "positions, latent projection and length classifier keep their initialisation (instead of "
            "--pretrained-encoder)")
        parser.add_argument("--cross-attention-init", choices=("random", "self_attention"),
                            help="decoder cross-attention: 'random' (BERT2BERT, BnB) or a copy of each layer's "
                            "self-attention (MLAE)")
        parser.add_argument("--share-all-embeddings", action="store_true",
                            help="one word-embedding table for encoder, decoder and output layer (BERT2BERT's "
                            "shared embeddings; needs a joined dictionary)")
        parser.add_argument("--max-positions-table", type=int, metavar="N",
                            help="rows of the position embedding table for random initialisation")
        add_dropout_args(parser)

    @classmethod
    def build_model(cls, args, task):
        bnb_base(args)
        # the training noise (a reloaded model's args are its training args): LC sizes the decoder by
        # prev_output_tokens and learns their lengths
        noise = getattr(args, "noise", None)
        if args.length_mode == "lc" and noise is not None and noise not in LC_NOISES:
            raise ValueError(f"bnb with --length-mode lc learns the lengths of prev_output_tokens: --noise {noise} "
                             f"makes them shorter than the targets; use --noise {' / '.join(LC_NOISES)}")
        if args.length_mode == "ctc":
            if not hasattr(task, "upsample_ratio"):
                raise ValueError("bnb with --length-mode ctc needs --task translation_lev_ctc")
            args.upsample_ratio = task.upsample_ratio
            args.ctc_blank_idx = task.blank_idx
        refuse_with_pretrained(args)
        if task.source_dictionary != task.target_dictionary and args.pretrained_encoder:
            logger.warning("source and target dictionaries differ; the pretrained checkpoint must fit both")
        enc_backbone, _ = build_backbone(args, "encoder", task.source_dictionary, args.pretrained_encoder, False)
        dec_path = args.pretrained_decoder or args.pretrained_encoder
        dec_backbone, lm_head = build_backbone(args, "decoder", task.target_dictionary, dec_path, True)
        if getattr(args, "share_all_embeddings", False):
            if task.source_dictionary != task.target_dictionary:
                raise ValueError("--share-all-embeddings needs a joined dictionary (fairseq-preprocess "
                                 "--joined-dictionary, or the same pretrained dict.txt for both sides)")
            if enc_backbone.embed_dim != dec_backbone.embed_dim:
                raise ValueError("--share-all-embeddings needs --encoder-embed-dim == --decoder-embed-dim")
            dec_backbone.embeddings.embed_tokens = enc_backbone.embeddings.embed_tokens
        encoder = BnBEncoder(args, task.source_dictionary, enc_backbone)
        decoder = BnBDecoder(args, task.target_dictionary, dec_backbone, lm_head)
        # the checkpoint is only read when the model is first built: a trained model reloads its own weights
        args.pretrained_encoder = args.pretrained_decoder = None
        # what fits the position tables: with CTC the decoder has round(ratio x S) frames, so S <= P / ratio
        src_limit = enc_backbone.max_positions()
        if args.length_mode == "ctc":
            src_limit = min(src_limit, int(dec_backbone.max_positions() // args.upsample_ratio))
        args.max_source_positions = min(args.max_source_positions, src_limit)
        args.max_target_positions = min(args.max_target_positions, dec_backbone.max_positions())
        model = cls(args, encoder, decoder)
        init_from_checkpoint(model, args, rename=encoder_decoder_rename(
            len(enc_backbone.layers), len(dec_backbone.layers), output=["decoder.lm_head.weight"]))
        return model

    def max_positions(self):
        """``(source, target)`` lengths the model takes (``--max-source-positions`` / ``--max-target-positions``
        capped by the position tables; with CTC the source by ``floor(P / --upsample-ratio)``)."""
        return (self.args.max_source_positions, self.args.max_target_positions)

    def upgrade_state_dict_named(self, state_dict, name):
        """Checkpoints of CTC mode saved before the length classifier was built in LC mode only carry its unused
        weights: drop them."""
        super().upgrade_state_dict_named(state_dict, name)
        if self.decoder.length is None:
            prefix = f"{name}." if name else ""
            for key in [k for k in state_dict if k.startswith(f"{prefix}decoder.length.")]:
                del state_dict[key]

    @property
    def allow_length_beam(self):
        return self.decoder.length_mode == "lc"

    @property
    def allow_ensemble(self):
        return False

    # ---------------------------------------------------------------------------------------------- training
    def forward(self, src_tokens, src_lengths, prev_output_tokens, tgt_tokens, **kwargs):
        """Loss terms for ``nat_loss`` / ``ctc``: ``word_ins`` (CE over target positions, or CTC over frames)
        and, with length classification, ``length``. In length classification ``word_ins`` holds the output layer at
        the scored positions only (``tgt`` not pad): ``out`` ``(N, V)``, ``tgt`` ``(N,)``, ``mask`` ``(N,)`` all
        True, ``positions`` ``(B, T)`` where they are."""
        encoder_out = self.encoder(src_tokens, src_lengths)
        if self.decoder.length_mode == "ctc":
            logits, padding = self.decoder(encoder_out)
            return {"word_ins": {"ctc": True, "out": logits, "out_mask": ~padding,
                                 "tgt": strip_bos_eos(tgt_tokens, self.bos, self.eos, self.pad),
                                 "blank": self.blank, "nll_loss": True}}
        # decoder length: the (right-padded) prev_output_tokens row when given (translation_lev with full_mask
        # noise, masked_autoencoder_pretrain), else the target's; targets may have pad inside (loss on masked
        # positions only), so positions are taken as they are
        shape_source = prev_output_tokens if prev_output_tokens is not None else tgt_tokens
        tgt_lengths = shape_source.ne(self.pad).sum(1)
        states, padding = self.decoder.features(encoder_out, tgt_lengths=tgt_lengths)
        tgt = tgt_tokens[:, : states.size(1)]
        scored = tgt.ne(self.pad)
        # the output layer only where the loss is (with --loss-positions corrupted: the corrupted positions only)
        logits = self.decoder.lm_head(states[scored])  # (N, V)
        length_out = self.decoder.forward_length(encoder_out)
        src_lengths = (~encoder_out["encoder_padding_mask"]).sum(1)
        return {
            "word_ins": {"out": logits, "tgt": tgt[scored], "mask": scored.new_ones(logits.size(0)),
                         "positions": scored, "ls": getattr(self.args, "label_smoothing", 0.0), "nll_loss": True},
            "length": {"out": length_out, "tgt": self.decoder.length.target(tgt_lengths, src_lengths),
                       "factor": self.decoder.length_loss_factor},
        }

    # -------------------------------------------------------------------------------------------- generation
    def forward_encoder(self, encoder_inputs):
        return self.encoder(*encoder_inputs)

    def ctc_frame_lprobs(self, encoder_out):
        return self.decoder(encoder_out, normalize=True)

    def ctc_frame_padding_mask(self, encoder_out):
        return self.decoder.positions_for(encoder_out)[1]

    def initialize_output_tokens(self, encoder_out, src_tokens):
        if self.decoder.length_mode == "ctc":
            return super().initialize_output_tokens(encoder_out, src_tokens)
        src_lengths = (~encoder_out["encoder_padding_mask"]).sum(1)
        lengths = self.decoder.length.predict(self.decoder.forward_length(encoder_out), src_lengths,
                                              max_ratio=self.decoder.max_length_ratio,
                                              max_offset=self.decoder.max_length_offset,
                                              max_length=self.decoder.max_positions())
        return placeholder_rows(lengths, src_tokens, self.bos, self.eos, self.pad, self.unk,
                                 encoder_out["encoder_out"].dtype)

    def regenerate_length_beam(self, decoder_out, beam_size):
        """``beam_size`` rows per sentence of lengths ``L - beam_size // 2, ...`` around its ``L``, within
        ``[2, P]`` (``P`` the decoder's positions)."""
        lengths = decoder_out.output_tokens.ne(self.pad).sum(1)
        offsets = torch.arange(beam_size, device=lengths.device) - beam_size // 2
        lengths = (lengths[:, None] + offsets[None, :]).view(-1).clamp(2, self.decoder.max_positions())
        rows = placeholder_rows(lengths, decoder_out.output_tokens, self.bos, self.eos, self.pad, self.unk,
                                decoder_out.output_scores.dtype)
        return decoder_out._replace(output_tokens=rows.output_tokens, output_scores=rows.output_scores)

    def forward_decoder(self, decoder_out, encoder_out, decoding_format=None, **kwargs):
        if self.decoder.length_mode == "ctc":
            return super().forward_decoder(decoder_out, encoder_out, decoding_format=decoding_format, **kwargs)
        output_tokens = decoder_out.output_tokens
        lengths = output_tokens.ne(self.pad).sum(1)
        lprobs, _ = self.decoder(encoder_out, tgt_lengths=lengths, normalize=True)
        lprobs = lprobs[:, : output_tokens.size(1)]
        # <s> and </s> stay where the length put them; every other position takes its most likely token
        lprobs[:, :, [self.bos, self.eos, self.pad]] = float("-inf")
        scores, tokens = lprobs.max(-1)
        fill = output_tokens.ne(self.pad) & output_tokens.ne(self.bos) & output_tokens.ne(self.eos)
        output_tokens = output_tokens.masked_scatter(fill, tokens[fill])
        # <s> and </s> get the mean score of the row's words: the generator ranks a length beam by the mean over
        # non-pad positions, and zeros there would favour short rows (fairseq's CMLM convention)
        scores = scores.masked_fill(~fill, 0.0)
        word_mean = scores.sum(1) / fill.sum(1).clamp(min=1)
        output_scores = torch.where(fill, scores, word_mean[:, None]).masked_fill(output_tokens.eq(self.pad), 0.0)
        history = decoder_out.history
        if history is not None:
            history.append(output_tokens.clone())
        return decoder_out._replace(output_tokens=output_tokens, output_scores=output_scores, attn=None,
                                    history=history)


@register_model_architecture("bnb", "bnb_base")
def bnb_base(args):
    """BERT-base encoder and decoder: 12 layers, 768 dims, 12 heads, FFN 3072; latent P = 8 (authors' code)."""
    set_encoder_sizes(args, layers=12, dim=768, heads=12, ffn=3072)
    for name in ("layers", "embed_dim", "ffn_embed_dim", "attention_heads"):
        set_default(args, f"decoder_{name}", getattr(args, f"encoder_{name}"))
    set_default(args, "latent_dim", 8)
    set_default(args, "length_mode", "lc")
    set_default(args, "length_pooling", "latent")
    set_default(args, "max_length_classes", 256)
    set_default(args, "max_length_ratio", DEFAULT_MAX_LENGTH_RATIO)
    set_default(args, "max_length_offset", DEFAULT_MAX_LENGTH_OFFSET)
    set_default(args, "pred_length_offset", False)
    set_default(args, "length_loss_factor", 0.1)
    set_default(args, "pretrained_encoder", None)
    set_default(args, "pretrained_decoder", None)
    set_default(args, "cross_attention_init", "random")
    set_default(args, "init_from_checkpoint", None)
    set_default(args, "max_positions_table", 512)
    set_dropout_defaults(args)
    set_default(args, "max_source_positions", args.max_positions_table)
    set_default(args, "max_target_positions", args.max_positions_table)
    require_positive(args, "decoder_layers", "decoder_embed_dim", "decoder_ffn_embed_dim", "decoder_attention_heads",
                     "latent_dim", "max_length_classes", "max_positions_table", "max_source_positions",
                     "max_target_positions")
    if args.max_length_ratio < 0:
        raise ValueError(f"--max-length-ratio {args.max_length_ratio}: must be >= 0 (0: at most --max-length-offset "
                         "tokens)")


def _bnb_sizes(args, layers, dim, heads, ffn):
    """Encoder sizes (the decoder follows them unless set); flags still win."""
    set_encoder_sizes(args, layers, dim, heads, ffn)
    bnb_base(args)


@register_model_architecture("bnb", "bnb_small")
def bnb_small(args):
    """MiniLM-L6-H384 sizes (6 layers, 384 dims, 12 heads, FFN 1536): the offline MiniLM checkpoint fits it."""
    _bnb_sizes(args, layers=6, dim=384, heads=12, ffn=1536)


@register_model_architecture("bnb", "bnb_tiny")
def bnb_tiny(args):
    """Test size: 2 layers, 64 dims, 2 heads, FFN 128."""
    _bnb_sizes(args, layers=2, dim=64, heads=2, ffn=128)
