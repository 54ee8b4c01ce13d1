"""MLAE autoregressive fine-tuning (§3.3, §3.4): ``mlae_seq2seq`` (Seq2seq style, the paper's choice) and
``mlae_unilm`` (UniLM style), for fairseq's ``translation`` task, ``label_smoothed_cross_entropy`` and beam search
(``fairseq-generate --beam 6 --lenpen 1.0``, the paper's decoding).

**Seq2seq style** (``mlae_seq2seq_*``): the MLAE encoder over the source; the MLAE decoder with *causal*
self-attention and a cross-attention block inserted into every layer, initialised as a copy of that layer's
(pretrained) self-attention ("we initialize each cross-attention layer by the weights of each self-attention
layer"; ``--cross-attention-init random`` for the ablation). Generation is incremental: each layer caches its keys
and values (fairseq's ``incremental_state``), so a step costs one position.

**UniLM style** (``mlae_unilm_*``; Dong et al. 2019, arXiv:1905.03197): no cross-attention; one decoder stack over
``[encoder states of the source ; target tokens]`` with UniLM's Seq2Seq mask (source rows see the source only, target
row ``t`` sees the source and targets ``<= t``; :func:`~fairseq_nar_plugins.modules.single_stack.seq2seq_masks.unilm_seq2seq_mask`),
positions continuing after the source, token type 1 on the target (BERT conventions). Generation caches each layer's
input at the source positions (they never depend on the target) and at the targets decoded so far.

**Scheduled masking** (both; §3.4, Algorithm 1; :mod:`~fairseq_nar_plugins.modules.nat.scheduled_masking`): in
training, a share ``m_t`` of each decoder input row (every token but the start symbol) is replaced by the
pretraining's ``[MASK]``, ``m_t`` decaying linearly from ``m_0`` to 0 at the last update: ``--mask-schedule 0.6:0``
(the paper's; ``T`` = ``--max-update``), ``--mask-schedule 0`` to switch it off, ``--mask-schedule-kind constant`` for
Table 7's ablation. Targets and validation are never masked.

Framing: sources get ``<s>`` prepended (the pretraining blocks were ``<s> ... </s>``); the decoder's start symbol
(fairseq's ``</s>`` at position 0) is read as ``<s>``. The mask symbol is never generated.
"""
import logging
from typing import Dict, Optional

import torch
from fairseq import utils
from fairseq.models import FairseqEncoderDecoderModel, FairseqIncrementalDecoder, register_model, \
    register_model_architecture
from torch import Tensor

from ...modules.backbone.bert_backbone import BertBackbone, BertLMHead
from ...modules.single_stack.deer_input import token_types
from ...modules.single_stack.levenshtein_editor import layer_with_memory
from ...modules.nat.scheduled_masking import MASK_SCHEDULE_KINDS, MaskSchedule, mask_decoder_input
from ...modules.single_stack.seq2seq_masks import causal_mask, unilm_seq2seq_mask
from .checkpoint import MLAECheckpoint
from .common import (
    MLAEEncoder,
    add_mlae_args,
    build_decoder_backbone,
    build_encoder_backbone,
    prepare_dictionaries,
    register_sizes,
)

logger = logging.getLogger(__name__)


class _ARDecoderBase(FairseqIncrementalDecoder):
    """What both AR decoders share: the backbone, the tied masked-LM head, the start symbol, the banned mask."""

    def __init__(self, dictionary, backbone: BertBackbone, mask_idx: int, lm_head_state=None):
        super().__init__(dictionary)
        self.backbone = backbone
        self.mask_idx = mask_idx
        self.lm_head = BertLMHead(backbone.cfg, backbone.embeddings.embed_tokens.weight)
        if lm_head_state:
            self.lm_head.load_state_dict(lm_head_state, strict=False)

    def start_as_bos(self, prev_output_tokens: Tensor) -> Tensor:
        """fairseq's start symbol ``</s>`` (position 0) read as ``<s>``, the symbol pretraining blocks start with."""
        tokens = prev_output_tokens.clone()
        first = tokens[:, 0]
        tokens[:, 0] = first.masked_fill(first.eq(self.dictionary.eos()), self.dictionary.bos())
        return tokens

    def output_layer(self, features: Tensor, generating: bool = False) -> Tensor:
        logits = self.lm_head(features)
        if generating:  # the mask is an input symbol only
            logits[..., self.mask_idx] = float("-inf")
        return logits

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, features_only=False, **kwargs):
        """Args:
            prev_output_tokens: ``(B, T)`` decoder inputs (start symbol first, right-padded); with
                ``incremental_state`` the whole prefix, of which only the last position is computed.
            encoder_out: the encoder's output dict.

        Returns:
            ``(logits (B, T, V) -- (B, 1, V) incrementally --, {"attn": None})``.
        """
        x = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        if not features_only:
            x = self.output_layer(x, generating=incremental_state is not None)
        return x, {"attn": None}

    def max_positions(self):
        return self.backbone.max_positions()


class MLAESeq2SeqDecoder(_ARDecoderBase):
    """Causal MLAE decoder with cross-attention (Seq2seq style)."""

    def extract_features(self, prev_output_tokens, encoder_out, incremental_state=None):
        """Final states ``(B, T, C)`` (``(B, 1, C)`` incrementally)."""
        tokens = self.start_as_bos(prev_output_tokens)
        if incremental_state is not None:  # one new position; earlier keys/values are in the layers' caches
            step = tokens.size(1) - 1
            tokens = tokens[:, -1:]
            positions = torch.full_like(tokens, step)
            padding = torch.zeros_like(tokens, dtype=torch.bool)
        else:
            positions = torch.arange(tokens.size(1), device=tokens.device)[None, :].expand_as(tokens)
            padding = tokens.eq(self.dictionary.pad())
        x = self.backbone.embeddings(tokens, padding, positions=positions)
        attn_mask = None if incremental_state is not None else \
            self.backbone._attention_mask(causal_mask(tokens.size(1), tokens.device), x)
        enc = encoder_out["encoder_out"].transpose(0, 1)
        enc_padding = encoder_out["encoder_padding_mask"]
        enc_padding = enc_padding if enc_padding.any() else None
        self_padding = padding if padding.any() else None
        x = x.transpose(0, 1)
        for layer in self.backbone.layers:
            x, _, _ = layer(x, enc, enc_padding, incremental_state=incremental_state, self_attn_mask=attn_mask,
                            self_attn_padding_mask=self_padding)
        return x.transpose(0, 1)


class MLAEUniLMDecoder(_ARDecoderBase):
    """One MLAE decoder stack over ``[source states ; target]`` with UniLM's Seq2Seq mask (UniLM style)."""

    def _types(self, src_padding, tgt_padding):
        return token_types(src_padding, tgt_padding, self.backbone.cfg.type_vocab_size)

    def extract_features(self, prev_output_tokens, encoder_out, incremental_state=None):
        """Final states at the target positions, ``(B, T, C)`` (``(B, 1, C)`` incrementally)."""
        if incremental_state is not None:
            return self._incremental_features(prev_output_tokens, encoder_out, incremental_state)
        tokens = self.start_as_bos(prev_output_tokens)
        src, src_padding = encoder_out["encoder_out"], encoder_out["encoder_padding_mask"]
        tgt_padding = tokens.eq(self.dictionary.pad())
        inputs = torch.cat([src, self.backbone.embeddings.embed_tokens(tokens)], 1)
        states = self.backbone(
            token_embeddings=inputs, padding_mask=torch.cat([src_padding, tgt_padding], 1),
            token_type_ids=self._types(src_padding, tgt_padding),
            self_attn_mask=unilm_seq2seq_mask(src_padding, tgt_padding),
        )["hidden_states"]
        return states[:, src.size(1):]

    def _incremental_features(self, prev_output_tokens, encoder_out, incremental_state):
        src, src_padding = encoder_out["encoder_out"], encoder_out["encoder_padding_mask"]
        cache: Dict[str, Optional[Tensor]] = self.get_incremental_state(incremental_state, "unilm") or {}
        layers = self.backbone.layers
        if "src_0" not in cache:  # the source part: its rows never see the target, so compute it once
            x = self.backbone.embeddings(token_embeddings=src, padding_mask=src_padding,
                                         token_type_ids=self._types(src_padding, src_padding[:, :0]))
            key_padding = src_padding if src_padding.any() else None
            for i, layer in enumerate(layers):
                cache[f"src_{i}"] = x
                cache[f"tgt_{i}"] = x[:, :0]
                x = layer(x.transpose(0, 1), encoder_padding_mask=key_padding).transpose(0, 1)
        step = prev_output_tokens.size(1) - 1
        tokens = self.start_as_bos(prev_output_tokens[:, :1]) if step == 0 else prev_output_tokens[:, -1:]
        no_padding = torch.zeros_like(tokens, dtype=torch.bool)
        positions = (~src_padding).sum(1, keepdim=True) + step  # continue after the source's real tokens
        types = self._types(src_padding, no_padding)
        x = self.backbone.embeddings(tokens, no_padding, None if types is None else types[:, -1:],
                                     positions=positions)
        key_padding = torch.cat([src_padding, torch.zeros((tokens.size(0), step + 1), dtype=torch.bool,
                                                          device=tokens.device)], 1)
        key_padding = key_padding if key_padding.any() else None
        for i, layer in enumerate(layers):
            cache[f"tgt_{i}"] = torch.cat([cache[f"tgt_{i}"], x], 1)
            memory = torch.cat([cache[f"src_{i}"], cache[f"tgt_{i}"]], 1)
            x = layer_with_memory(layer, x.transpose(0, 1), memory.transpose(0, 1), key_padding).transpose(0, 1)
        self.set_incremental_state(incremental_state, "unilm", cache)
        return x

    def reorder_incremental_state(self, incremental_state, new_order):
        cache = self.get_incremental_state(incremental_state, "unilm")
        if cache is not None:
            cache = {k: v.index_select(0, new_order) for k, v in cache.items()}
            self.set_incremental_state(incremental_state, "unilm", cache)


class _MLAEARModel(FairseqEncoderDecoderModel):
    """Shared by both styles: building, scheduled masking, the update counter."""

    decoder_class = None
    cross_attention = True

    def __init__(self, args, encoder, decoder, mask_idx):
        super().__init__(encoder, decoder)
        self.args = args
        self.mask_idx = mask_idx
        self.pad = decoder.dictionary.pad()
        self.num_updates = 0
        max_update = getattr(args, "max_update", None)  # fairseq's 0 / None: no limit
        try:
            self.mask_schedule = MaskSchedule(args.mask_schedule, args.mask_schedule_kind,
                                              0 if max_update is None else max_update)
            self.schedule_error = None
        except ValueError as e:  # e.g. a model rebuilt for generation without --max-update: only training needs it
            self.mask_schedule, self.schedule_error = None, e

    @staticmethod
    def add_args(parser):
        add_mlae_args(parser)
        parser.add_argument("--mask-schedule", type=str, metavar="M0:M1[@T]",
                            help="scheduled masking of the decoder input (MLAE §3.4): ratio M0 at update 0 to M1 at "
                            "update T (default T = --max-update; k/m suffixes), e.g. 0.6:0 (the paper's) or "
                            "0.6:0@30k; one number for a constant ratio; 0 switches it off")
        parser.add_argument("--mask-schedule-kind", choices=MASK_SCHEDULE_KINDS,
                            help="'linear' (Algorithm 1, the default) or 'constant' (M0 throughout, Table 7's "
                            "ablation)")

    @classmethod
    def build_model(cls, args, task):
        cls.architecture_defaults(args)
        checkpoint = MLAECheckpoint(args.init_from_mlae) if args.init_from_mlae else None
        if checkpoint:
            checkpoint.configure(args, decoder_cross_attention=cls.cross_attention)
        mask_idx = prepare_dictionaries(task, args.mlae_mask_symbol)
        dictionary = task.target_dictionary
        if checkpoint:
            checkpoint.check_vocabulary(dictionary)
        enc_backbone, lm_head = build_encoder_backbone(args, dictionary)
        dec_backbone, dec_lm_head = build_decoder_backbone(args, dictionary, enc_backbone.cfg, cls.cross_attention)
        dec_backbone.embeddings.embed_tokens = enc_backbone.embeddings.embed_tokens
        decoder = cls.decoder_class(dictionary, dec_backbone, mask_idx, dec_lm_head or lm_head)
        model = cls(args, MLAEEncoder(dictionary, enc_backbone), decoder, mask_idx)
        if checkpoint:
            checkpoint.load_into(model, args.cross_attention_init)
        args.pretrained_encoder = args.pretrained_decoder = args.init_from_mlae = None
        return model

    @classmethod
    def architecture_defaults(cls, args):
        raise NotImplementedError

    def set_num_updates(self, num_updates):
        self.num_updates = num_updates
        super().set_num_updates(num_updates)

    def mask_ratio(self) -> float:
        """``m_t`` at the current update."""
        if self.mask_schedule is None:
            raise self.schedule_error
        return self.mask_schedule(self.num_updates)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, **kwargs):
        """Training / validation: ``(logits (B, T, V), extra)``; in training, decoder inputs scheduled-masked."""
        if self.training:
            ratio = self.mask_ratio()
            if ratio > 0:
                maskable = prev_output_tokens.ne(self.pad)
                maskable[:, 0] = False  # never the start symbol
                prev_output_tokens, _ = mask_decoder_input(prev_output_tokens, ratio, maskable, self.mask_idx)
        encoder_out = self.encoder(src_tokens, src_lengths)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out)

    def max_positions(self):
        return (self.encoder.max_positions(), self.decoder.max_positions())


@register_model("mlae_seq2seq")
class MLAESeq2SeqModel(_MLAEARModel):
    """MLAE, Seq2seq-style AR fine-tuning; see the module docstring."""

    decoder_class = MLAESeq2SeqDecoder
    cross_attention = True

    @classmethod
    def architecture_defaults(cls, args):
        mlae_seq2seq_12_4(args)


@register_model("mlae_unilm")
class MLAEUniLMModel(_MLAEARModel):
    """MLAE, UniLM-style AR fine-tuning; see the module docstring."""

    decoder_class = MLAEUniLMDecoder
    cross_attention = False

    @classmethod
    def architecture_defaults(cls, args):
        mlae_unilm_12_4(args)

    def max_positions(self):
        # source and target share the decoder's position table
        limit = self.decoder.max_positions() // 2
        return (min(self.encoder.max_positions(), limit), limit)


def mlae_ar_defaults(args):
    if getattr(args, "mask_schedule", None) is None:
        args.mask_schedule = "0.6:0"
    if getattr(args, "mask_schedule_kind", None) is None:
        args.mask_schedule_kind = "linear"


SEQ2SEQ_ARCHS = register_sizes("mlae_seq2seq", register_model_architecture, mlae_ar_defaults,
                               " Seq2seq-style AR fine-tuning.")
UNILM_ARCHS = register_sizes("mlae_unilm", register_model_architecture, mlae_ar_defaults,
                             " UniLM-style AR fine-tuning.")
mlae_seq2seq_12_4 = SEQ2SEQ_ARCHS["12_4"]
mlae_unilm_12_4 = UNILM_ARCHS["12_4"]
