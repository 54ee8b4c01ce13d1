"""A BERT-family backbone (BERT, RoBERTa, XLM-R) built from fairseq's transformer layers.

The network is exactly the one of BERT (Devlin et al., 2019) and of its RoBERTa / XLM-R re-trainings, so that
pretrained checkpoints load into it without any change of behaviour (see :mod:`.pretrained.pretrained_import`):

* embeddings: token + learned absolute position (+ token type, BERT only) embeddings, summed, then LayerNorm and
  dropout, with no ``sqrt(d)`` scaling;
* ``layers`` post-LN transformer layers (fairseq's legacy args-based ``TransformerEncoderLayer``, or
  ``TransformerDecoderLayer`` when cross-attention is added): self-attention -> dropout -> residual -> LayerNorm,
  [cross-attention -> dropout -> residual -> LayerNorm,] FFN with exact (erf) GELU -> dropout -> residual ->
  LayerNorm. Every LayerNorm uses the checkpoint's epsilon (1e-12 for BERT, 1e-5 for RoBERTa / XLM-R); fairseq's
  layers hard-code 1e-5, so the LayerNorms are rebuilt after construction;
* no final LayerNorm and no pooler.

Positions. A real token's position is its rank among the real (non-pad) tokens of its row, plus
``position_offset``: 0 for BERT (positions 0, 1, ...), ``padding_idx + 1`` for RoBERTa / XLM-R (fairseq's
``make_positions``; HF's ``create_position_ids_from_input_ids``). Positions therefore do not depend on which side a
batch is padded: with right padding this is exactly what BERT, RoBERTa and XLM-R compute; with left padding (fairseq's
default for sources) BERT as implemented by Hugging Face would shift the positions of a padded row, which this module
does not do.

Encoder or decoder. With ``cross_attention=False`` (the default) the stack is a bidirectional encoder. With
``cross_attention=True`` every layer gets an encoder-decoder attention block between self-attention and FFN, as in
BERT2BERT (Rothe et al., 2020, "Leveraging pre-trained checkpoints for sequence generation tasks", TACL 8), which
BERT-NAR-BERT adopts for its decoder (shared/papers/000, section 2.1: "the cross-attention mechanism is adopted from
BERT2BERT"); the self-attention stays bidirectional (BnB: "the attention masks are the normal masks that give access
to all future tokens"). Cross-attention has no counterpart in a BERT checkpoint; ``cross_attention_init`` says how it
starts (see :meth:`BertBackbone.init_cross_attention`):

* ``"random"``: BERT2BERT / BnB: initialised randomly with BERT's initialiser, N(0, 0.02) weights, zero biases,
  LayerNorm weight 1 and bias 0;
* ``"self_attention"``: MLAE (shared/papers/003, sections 3.3 and 5.1.2: "we initialize each cross-attention layer
  by the weights of each self-attention layer", better than random by 0.43 ROUGE-2 on XSum): each layer's
  cross-attention projections and LayerNorm are copies of its (pretrained) self-attention's.

DEER (shared/papers/002) uses the encoder stack alone, with task-specific self-attention masks
(``self_attn_mask`` below) and no extra parameters.

Physically pruned layers. With ``layer_shapes`` set (written by ``scripts/export_pruned.py`` from a model trained
with dynamic block pruning, see :mod:`.pruning.pruned_export`) each layer has its own FFN width and a
:class:`~.compact_attention.CompactSelfAttention` whose heads have their own q/k and v widths (same parameter names,
smaller shapes); ``None`` (the default) is the uniform stack above.

Parameter names follow fairseq (``layers.N.self_attn.q_proj.weight``, ``layers.N.fc1.weight``, ...); the embeddings
live under ``embeddings.`` (``embed_tokens``, ``embed_positions``, ``embed_token_types``, ``layernorm_embedding``).
"""
import argparse
import copy
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils
from fairseq.modules import LayerNorm, TransformerDecoderLayer, TransformerEncoderLayer
from fairseq.modules.fairseq_dropout import FairseqDropout
from fairseq.modules.transformer_sentence_encoder import init_bert_params
from torch import Tensor

from .compact_attention import CompactTransformerDecoderLayer, CompactTransformerEncoderLayer

CROSS_ATTENTION_INITS = ("random", "self_attention")


@dataclass
class BertBackboneConfig:
    """Sizes and behaviour of a :class:`BertBackbone`. Stored as a plain dict (:meth:`to_dict`) in converted
    checkpoints, so every field is an int, float, str or bool, or (``layer_shapes``) a JSON-serialisable list."""

    vocab_size: int = 30522
    embed_dim: int = 768
    ffn_embed_dim: int = 3072
    layers: int = 12
    attention_heads: int = 12
    #: rows of the position embedding table (BERT 512; RoBERTa / XLM-R 514 = 512 + padding_idx + 1)
    num_positions: int = 512
    #: position of the first real token: 0 for BERT, padding_idx + 1 for RoBERTa / XLM-R
    position_offset: int = 0
    #: rows of the token-type (segment) table: 2 for BERT, 1 for Hugging Face RoBERTa / XLM-R, 0 for none (fairseq)
    type_vocab_size: int = 2
    padding_idx: int = 0
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    #: fairseq activation name: "gelu" is the exact erf GELU (HF "gelu"); "gelu_accurate" is the tanh approximation
    activation_fn: str = "gelu"
    #: add encoder-decoder attention to every layer (BERT2BERT-style decoder)
    cross_attention: bool = False
    #: "random" (BERT2BERT, BnB) or "self_attention" (MLAE): see BertBackbone.init_cross_attention
    cross_attention_init: str = "random"
    #: width of the states the cross-attention reads (0: same as embed_dim)
    encoder_embed_dim: int = 0
    #: where the weights came from ("bert", "roberta", "xlm-roberta", "random"); informational
    family: str = "random"
    #: None (default): every layer has ``attention_heads`` heads of ``embed_dim // attention_heads`` dims and an FFN
    #: of ``ffn_embed_dim``. Otherwise one dict per layer, ``{"ffn": int, "qk_dims": [int] * attention_heads,
    #: "v_dims": [int] * attention_heads}`` (a JSON string of that list is accepted too): the physically smaller
    #: layers of a pruned model exported at one size (see :mod:`.pruning.pruned_export`). The self-attention of such layers
    #: is a :class:`~.compact_attention.CompactSelfAttention` (head ``h`` has ``qk_dims[h]`` query/key and
    #: ``v_dims[h]`` value dims; 0 and 0 = head removed); cross-attention, if any, stays uniform.
    layer_shapes: Optional[List[Dict[str, Any]]] = None

    def __post_init__(self):
        if isinstance(self.layer_shapes, str):
            try:
                self.layer_shapes = json.loads(self.layer_shapes)
            except json.JSONDecodeError as e:
                raise ValueError(f"layer_shapes (--backbone-layer-shapes) is not valid JSON: {e}") from None
        if self.layer_shapes is not None:
            self.layer_shapes = [
                {"ffn": int(s["ffn"]), "qk_dims": [int(d) for d in s["qk_dims"]],
                 "v_dims": [int(d) for d in s["v_dims"]]} if isinstance(s, dict) and
                {"ffn", "qk_dims", "v_dims"} <= set(s) else s
                for s in self.layer_shapes
            ]

    @classmethod
    def bert(cls, **overrides) -> "BertBackboneConfig":
        """BERT conventions: positions from 0, 2 token types, [PAD] = 0, LayerNorm eps 1e-12."""
        return cls(**{**dict(position_offset=0, type_vocab_size=2, padding_idx=0, layer_norm_eps=1e-12,
                             num_positions=512, family="bert"), **overrides})

    @classmethod
    def roberta(cls, **overrides) -> "BertBackboneConfig":
        """RoBERTa / XLM-R conventions: <pad> = 1, positions from 2, no token types, LayerNorm eps 1e-5."""
        padding_idx = overrides.get("padding_idx", 1)
        return cls(**{**dict(position_offset=padding_idx + 1, type_vocab_size=0, padding_idx=padding_idx,
                             layer_norm_eps=1e-5, num_positions=512 + padding_idx + 1, vocab_size=50265,
                             family="roberta"), **overrides})

    @property
    def max_positions(self) -> int:
        """Longest sequence (in tokens, specials included) the position table covers."""
        return self.num_positions - self.position_offset

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "BertBackboneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown BertBackboneConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    def validate(self):
        if self.embed_dim % self.attention_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of attention_heads {self.attention_heads}")
        if self.cross_attention_init not in CROSS_ATTENTION_INITS:
            raise ValueError(f"cross_attention_init must be one of {CROSS_ATTENTION_INITS}, "
                             f"got {self.cross_attention_init!r}")
        if self.max_positions < 1:
            raise ValueError(f"num_positions {self.num_positions} leaves no position after offset "
                             f"{self.position_offset}")
        if not 0 <= self.padding_idx < self.vocab_size:
            raise ValueError(f"padding_idx {self.padding_idx} outside the vocabulary of {self.vocab_size}")
        utils.get_activation_fn(self.activation_fn)  # raises on an unknown name
        if self.layer_shapes is not None:
            self._validate_layer_shapes()

    def _validate_layer_shapes(self):
        shapes = self.layer_shapes
        if not isinstance(shapes, list) or len(shapes) != self.layers:
            raise ValueError(f"layer_shapes must list one shape per layer ({self.layers}), got "
                             f"{len(shapes) if isinstance(shapes, list) else type(shapes).__name__}")
        for i, s in enumerate(shapes):
            if not isinstance(s, dict) or set(s) != {"ffn", "qk_dims", "v_dims"}:
                raise ValueError(f"layer_shapes[{i}] must be a dict with exactly the keys ffn, qk_dims, v_dims; "
                                 f"got {s!r}")
            if s["ffn"] < 0:
                raise ValueError(f"layer_shapes[{i}]['ffn'] = {s['ffn']} is negative")
            for key in ("qk_dims", "v_dims"):
                if len(s[key]) != self.attention_heads or any(d < 0 for d in s[key]):
                    raise ValueError(f"layer_shapes[{i}]['{key}'] must list {self.attention_heads} non-negative "
                                     f"widths (one per original head), got {s[key]}")
            for h, (q, v) in enumerate(zip(s["qk_dims"], s["v_dims"])):
                if v == 0 and q != 0:
                    raise ValueError(f"layer_shapes[{i}]: head {h} has v_dims 0 but qk_dims {q} (a head without "
                                     "values contributes nothing; its qk width must be 0 too)")

    @property
    def attention_scaling(self) -> float:
        """fairseq's query scaling, ``(embed_dim // attention_heads) ** -0.5``; compact layers keep it."""
        return (self.embed_dim // self.attention_heads) ** -0.5

    def layer_shape(self, i: int) -> Dict[str, Any]:
        """Shape of layer ``i`` in the ``layer_shapes`` format (the uniform one when ``layer_shapes`` is None)."""
        if self.layer_shapes is not None:
            return self.layer_shapes[i]
        head = self.embed_dim // self.attention_heads
        return {"ffn": self.ffn_embed_dim, "qk_dims": [head] * self.attention_heads,
                "v_dims": [head] * self.attention_heads}


def parameter_shapes(cfg: BertBackboneConfig) -> Dict[str, tuple]:
    """Name -> shape of every parameter of ``BertBackbone(cfg)``, without building it (checkpoint checks of
    large models stay cheap)."""
    c, f, enc = cfg.embed_dim, cfg.ffn_embed_dim, cfg.encoder_embed_dim or cfg.embed_dim
    shapes = {"embeddings.embed_tokens.weight": (cfg.vocab_size, c),
              "embeddings.embed_positions.weight": (cfg.num_positions, c)}
    if cfg.type_vocab_size > 0:
        shapes["embeddings.embed_token_types.weight"] = (cfg.type_vocab_size, c)
    shapes.update({"embeddings.layernorm_embedding.weight": (c,), "embeddings.layernorm_embedding.bias": (c,)})
    attention = {"self_attn": (c, c)}
    if cfg.cross_attention:
        attention["encoder_attn"] = (c, enc)
    for i in range(cfg.layers):
        p = f"layers.{i}."
        if cfg.layer_shapes is not None:
            f = cfg.layer_shapes[i]["ffn"]
        for name, (width, kv_width) in attention.items():
            if name == "self_attn" and cfg.layer_shapes is not None:
                qk, v = sum(cfg.layer_shapes[i]["qk_dims"]), sum(cfg.layer_shapes[i]["v_dims"])
                projections = {"k_proj": ((qk, c), (qk,)), "v_proj": ((v, c), (v,)), "q_proj": ((qk, c), (qk,)),
                               "out_proj": ((c, v), (c,))}
            else:
                projections = {proj: ((c, in_dim), (c,)) for proj, in_dim in
                               (("k_proj", kv_width), ("v_proj", kv_width), ("q_proj", width), ("out_proj", width))}
            for proj, (weight, bias) in projections.items():
                shapes[f"{p}{name}.{proj}.weight"] = weight
                shapes[f"{p}{name}.{proj}.bias"] = bias
            shapes[f"{p}{name}_layer_norm.weight"] = (c,)
            shapes[f"{p}{name}_layer_norm.bias"] = (c,)
        shapes.update({f"{p}fc1.weight": (f, c), f"{p}fc1.bias": (f,), f"{p}fc2.weight": (c, f), f"{p}fc2.bias": (c,),
                       f"{p}final_layer_norm.weight": (c,), f"{p}final_layer_norm.bias": (c,)})
    return shapes


def _fairseq_layer_args(cfg: BertBackboneConfig) -> argparse.Namespace:
    """The flat legacy namespace fairseq's args-based layers read (converted by ``TransformerConfig.from_namespace``,
    which builds fresh sub-configs: no shared fairseq dataclass is mutated)."""
    sizes = dict(embed_dim=cfg.embed_dim, ffn_embed_dim=cfg.ffn_embed_dim, attention_heads=cfg.attention_heads,
                 normalize_before=False)
    ns = argparse.Namespace(
        dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
        relu_dropout=0.0, activation_fn=cfg.activation_fn, cross_self_attention=False, export=False,
        quant_noise_pq=0.0, quant_noise_pq_block_size=8,
    )
    for side in ("encoder", "decoder"):
        for key, value in sizes.items():
            setattr(ns, f"{side}_{key}", value)
    if cfg.cross_attention:  # decoder layers read the width of the attended states from the encoder_* sizes
        ns.encoder_embed_dim = cfg.encoder_embed_dim or cfg.embed_dim
    return ns


class BertEmbeddings(nn.Module):
    """Token + position (+ token type) embeddings, LayerNorm, dropout."""

    def __init__(self, cfg: BertBackboneConfig):
        super().__init__()
        self.padding_idx = cfg.padding_idx
        self.position_offset = cfg.position_offset
        self.max_positions = cfg.max_positions
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.padding_idx)
        # RoBERTa / XLM-R give padding tokens the position padding_idx (= offset - 1), whose row gets no gradient
        self.embed_positions = nn.Embedding(
            cfg.num_positions, cfg.embed_dim, padding_idx=cfg.position_offset - 1 if cfg.position_offset else None
        )
        self.embed_token_types = (
            nn.Embedding(cfg.type_vocab_size, cfg.embed_dim) if cfg.type_vocab_size > 0 else None
        )
        self.layernorm_embedding = LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.dropout_module = FairseqDropout(cfg.dropout, module_name=self.__class__.__name__)

    def positions(self, padding_mask: Tensor) -> Tensor:
        """Position ids ``(B, T)``: ``offset + rank among the row's real tokens``; padding gets ``offset - 1``
        (RoBERTa's padding position) or 0 (BERT)."""
        real = (~padding_mask).long()
        # a row can only be too long when the batch is wider than the table (no host sync otherwise)
        longest = int(real.sum(1).max()) if real.numel() and real.size(1) > self.max_positions else 0
        return self._position_ids(torch.cumsum(real, dim=1) - 1, padding_mask, longest,
                                  f"a sequence of {longest} tokens is longer than")

    def explicit_positions(self, positions: Tensor, padding_mask: Tensor) -> Tensor:
        """Position ids ``(B, T)`` from 0-based ``positions``: ``offset + position``, padding as in
        :meth:`positions`; refuses positions outside the table."""
        real = ~padding_mask
        if bool((positions[real] < 0).any()):
            raise ValueError("explicit positions must be >= 0")
        longest = int(positions[real].max()) + 1 if bool(real.any()) else 0
        return self._position_ids(positions, padding_mask, longest, f"position {longest - 1} is outside")

    def _position_ids(self, positions: Tensor, padding_mask: Tensor, longest: int, what: str) -> Tensor:
        """``offset + positions`` ``(B, T)``, the padding position at padding; refuses ``longest`` positions beyond
        the table (``what`` begins the message)."""
        if longest > self.max_positions:
            raise ValueError(
                f"{what} the {self.max_positions} positions of the position embeddings "
                f"(embeddings.embed_positions.weight has {self.embed_positions.num_embeddings} rows, offset "
                f"{self.position_offset}); truncate inputs (e.g. --max-source-positions)"
            )
        pad_position = max(self.position_offset - 1, 0)
        return torch.where(padding_mask, torch.full_like(positions, pad_position), positions + self.position_offset)

    def forward(
        self,
        tokens: Optional[Tensor] = None,
        padding_mask: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        token_embeddings: Optional[Tensor] = None,
        positions: Optional[Tensor] = None,
    ) -> Tensor:
        """Args:
            tokens: token ids ``(B, T)``; or None when ``token_embeddings`` are given instead.
            padding_mask: ``(B, T)`` bool, True at padding (default: ``tokens == padding_idx``, or no padding).
            token_type_ids: segment ids ``(B, T)`` (default: all 0); only with token-type embeddings.
            token_embeddings: ``(B, T, C)`` vectors used in place of the token embedding lookup (e.g. BnB's decoder
                input, an up-projected latent); position and token-type embeddings are still added.
            positions: explicit 0-based positions ``(B, T)`` (long) of the tokens, to which ``position_offset`` is
                added; values at padding are ignored. Default None: each real token's rank among the real tokens of
                its row (:meth:`positions`). For inputs that are a subset of a longer sequence (MLAE's visible
                tokens at their original positions) or one step of incremental decoding.

        Returns:
            ``(B, T, C)`` embedded inputs (after LayerNorm and dropout).
        """
        if (tokens is None) == (token_embeddings is None):
            raise ValueError("pass exactly one of tokens and token_embeddings")
        x = self.embed_tokens(tokens) if tokens is not None else token_embeddings
        if padding_mask is None:
            padding_mask = tokens.eq(self.padding_idx) if tokens is not None else \
                x.new_zeros(x.shape[:2], dtype=torch.bool)
        x = x + self.embed_positions(self.positions(padding_mask) if positions is None
                                     else self.explicit_positions(positions, padding_mask))
        if self.embed_token_types is not None:
            if token_type_ids is None:
                token_type_ids = padding_mask.new_zeros(padding_mask.shape, dtype=torch.long)
            x = x + self.embed_token_types(token_type_ids)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given, but this backbone has no token-type embeddings")
        x = self.layernorm_embedding(x)
        return self.dropout_module(x)


class BertBackbone(nn.Module):
    """BERT / RoBERTa / XLM-R encoder stack, optionally with cross-attention (a bidirectional decoder stack).

    Build it from a :class:`BertBackboneConfig` (random BERT initialisation), then load pretrained weights with
    :func:`.pretrained.pretrained_import.load_pretrained_into` (or ``load_state_dict``).
    """

    def __init__(self, cfg: BertBackboneConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.padding_idx = cfg.padding_idx
        self.embeddings = BertEmbeddings(cfg)
        layer_args = _fairseq_layer_args(cfg)
        if cfg.layer_shapes is not None:
            layers = [_compact_layer(cfg, layer_args, shape) for shape in cfg.layer_shapes]
        elif cfg.cross_attention:
            layers = [TransformerDecoderLayer(layer_args, no_encoder_attn=False) for _ in range(cfg.layers)]
        else:
            layers = [TransformerEncoderLayer(layer_args) for _ in range(cfg.layers)]
        for layer in layers:
            _set_layer_norm_eps(layer, cfg.layer_norm_eps)
            if cfg.cross_attention:
                layer.need_attn = False  # no averaged cross-attention weights unless asked for
        self.layers = nn.ModuleList(layers)
        self.apply(init_bert_params)
        if cfg.cross_attention:
            # compact self-attention cannot be copied into the uniform cross-attention; an exported (compact)
            # model gets its weights from its checkpoint anyway
            self.init_cross_attention("random" if cfg.layer_shapes is not None else None)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def has_cross_attention(self) -> bool:
        return self.cfg.cross_attention

    def max_positions(self) -> int:
        return self.cfg.max_positions

    @torch.no_grad()
    def init_cross_attention(self, mode: Optional[str] = None):
        """(Re)initialise every layer's cross-attention (``encoder_attn``, ``encoder_attn_layer_norm``).

        ``mode`` (default ``cfg.cross_attention_init``):

        * ``"random"``: BERT2BERT (Rothe et al., 2020), as adopted by BnB (shared/papers/000, section 2.1): the
          encoder-decoder attention has no pretrained counterpart and starts from BERT's initialiser: weights
          N(0, 0.02), biases 0, LayerNorm weight 1 / bias 0.
        * ``"self_attention"``: MLAE (shared/papers/003, section 3.3 and Table 5): copy each layer's self-attention
          (q/k/v/out projections and its LayerNorm) into its cross-attention. Call it *after* loading pretrained
          weights (:func:`.pretrained.pretrained_import.load_pretrained_into` does).
        """
        if not self.cfg.cross_attention:
            raise ValueError("this backbone has no cross-attention (cross_attention=False)")
        mode = mode or self.cfg.cross_attention_init
        if mode not in CROSS_ATTENTION_INITS:
            raise ValueError(f"cross-attention init must be one of {CROSS_ATTENTION_INITS}, got {mode!r}")
        for i, layer in enumerate(self.layers):
            if mode == "random":
                layer.encoder_attn.apply(init_bert_params)
                nn.init.ones_(layer.encoder_attn_layer_norm.weight)
                nn.init.zeros_(layer.encoder_attn_layer_norm.bias)
            else:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    src, dst = getattr(layer.self_attn, proj), getattr(layer.encoder_attn, proj)
                    if src.weight.shape != dst.weight.shape:
                        raise ValueError(
                            f"cannot copy layers.{i}.self_attn.{proj}.weight {tuple(src.weight.shape)} into "
                            f"layers.{i}.encoder_attn.{proj}.weight {tuple(dst.weight.shape)}: the encoder width "
                            "differs from the decoder's; use cross_attention_init='random'"
                        )
                    dst.weight.copy_(src.weight)
                    dst.bias.copy_(src.bias)
                layer.encoder_attn_layer_norm.load_state_dict(layer.self_attn_layer_norm.state_dict())

    def forward(
        self,
        tokens: Optional[Tensor] = None,
        padding_mask: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        token_embeddings: Optional[Tensor] = None,
        self_attn_mask: Optional[Tensor] = None,
        encoder_out: Optional[Tensor] = None,
        encoder_padding_mask: Optional[Tensor] = None,
        return_all_hiddens: bool = False,
        positions: Optional[Tensor] = None,
    ) -> Dict[str, Any]:
        """Run the stack (batch-first in and out).

        Args:
            tokens: ``(B, T)`` token ids (or ``token_embeddings`` ``(B, T, C)`` instead; see :class:`BertEmbeddings`).
            padding_mask: ``(B, T)`` bool, True at padding; any padding side works (default ``tokens == pad``).
            token_type_ids: ``(B, T)`` segment ids (BERT; default 0).
            self_attn_mask: optional bool mask, True where a query may **not** attend to a key: ``(T, T)`` shared by
                the batch, or ``(B, T, T)`` per sentence (e.g. DEER's "source cannot see target slots"). Default:
                none (fully bidirectional).
            encoder_out: ``(B, S, C_enc)`` states the cross-attention reads (required iff the backbone has
                cross-attention).
            encoder_padding_mask: ``(B, S)`` bool, True at padding of ``encoder_out``.
            return_all_hiddens: also return the output of the embeddings and of every layer.
            positions: explicit 0-based positions ``(B, T)`` (see :meth:`BertEmbeddings.forward`); default: ranks.

        Returns:
            dict with ``"hidden_states"``: ``(B, T, C)`` output of the last layer; ``"padding_mask"``: ``(B, T)``;
            ``"inner_states"``: list of ``L + 1`` tensors ``(B, T, C)`` (embeddings, then each layer) if
            ``return_all_hiddens`` else an empty list.
        """
        if self.cfg.cross_attention and encoder_out is None:
            raise ValueError("this backbone has cross-attention: pass encoder_out (B, S, C)")
        if not self.cfg.cross_attention and encoder_out is not None:
            raise ValueError("encoder_out given, but this backbone has no cross-attention (cross_attention=False)")
        x = self.embeddings(tokens, padding_mask, token_type_ids, token_embeddings, positions)
        if padding_mask is None:
            padding_mask = tokens.eq(self.padding_idx) if tokens is not None else \
                x.new_zeros(x.shape[:2], dtype=torch.bool)
        attn_mask = self._attention_mask(self_attn_mask, x)
        key_padding_mask = padding_mask if padding_mask.any() else None
        inner_states: List[Tensor] = [x] if return_all_hiddens else []
        x = x.transpose(0, 1)  # T x B x C, as fairseq's layers expect
        if encoder_out is not None:
            enc = encoder_out.transpose(0, 1)
            enc_padding = encoder_padding_mask if encoder_padding_mask is not None and encoder_padding_mask.any() \
                else None
        for layer in self.layers:
            if self.cfg.cross_attention:
                x, _, _ = layer(x, enc, enc_padding, self_attn_mask=attn_mask, self_attn_padding_mask=key_padding_mask)
            else:
                x = layer(x, encoder_padding_mask=key_padding_mask, attn_mask=attn_mask)
            if return_all_hiddens:
                inner_states.append(x.transpose(0, 1))
        return {"hidden_states": x.transpose(0, 1), "padding_mask": padding_mask, "inner_states": inner_states}

    def _attention_mask(self, self_attn_mask: Optional[Tensor], x: Tensor) -> Optional[Tensor]:
        """bool ``(T, T)`` / ``(B, T, T)`` -> the additive float mask fairseq's attention takes (``(B*H, T, T)``
        for per-sentence masks). -1e8 rather than -inf, as fairseq's encoder layer does, so a fully masked row
        stays finite."""
        if self_attn_mask is None:
            return None
        bsz, tgt_len = x.shape[:2]
        if self_attn_mask.dtype != torch.bool:
            raise ValueError("self_attn_mask must be a bool tensor (True = may not attend)")
        if self_attn_mask.dim() == 3:
            if self_attn_mask.shape != (bsz, tgt_len, tgt_len):
                raise ValueError(f"self_attn_mask of shape {tuple(self_attn_mask.shape)}, expected "
                                 f"{(bsz, tgt_len, tgt_len)}")
            self_attn_mask = self_attn_mask.repeat_interleave(self.cfg.attention_heads, dim=0)
        elif self_attn_mask.shape != (tgt_len, tgt_len):
            raise ValueError(f"self_attn_mask of shape {tuple(self_attn_mask.shape)}, expected {(tgt_len, tgt_len)}")
        return torch.zeros(self_attn_mask.shape, dtype=x.dtype, device=x.device).masked_fill(
            self_attn_mask, -1e8 if x.dtype == torch.float32 else -1e4
        )


class BertLMHead(nn.Module):
    """BERT / RoBERTa masked-LM head: dense -> activation -> LayerNorm -> projection tied to the token embeddings,
    plus a bias. Parameter names follow fairseq's ``RobertaLMHead`` (``dense``, ``layer_norm``, ``bias``)."""

    def __init__(self, cfg: BertBackboneConfig, embed_tokens_weight: Tensor):
        super().__init__()
        self.dense = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.activation_fn = utils.get_activation_fn(cfg.activation_fn)
        self.layer_norm = LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.weight = embed_tokens_weight
        self.bias = nn.Parameter(torch.zeros(embed_tokens_weight.size(0)))
        init_bert_params(self.dense)

    def forward(self, features: Tensor) -> Tensor:
        """``(..., C)`` states -> ``(..., V)`` logits."""
        x = self.layer_norm(self.activation_fn(self.dense(features)))
        return F.linear(x, self.weight) + self.bias


def _compact_layer(cfg: BertBackboneConfig, layer_args: argparse.Namespace, shape: Dict[str, Any]) -> nn.Module:
    """One layer of a backbone with ``layer_shapes``: compact self-attention, FFN of width ``shape["ffn"]``."""
    args = copy.copy(layer_args)
    args.encoder_ffn_embed_dim = args.decoder_ffn_embed_dim = shape["ffn"]
    if cfg.cross_attention:
        return CompactTransformerDecoderLayer(args, shape, cfg.attention_scaling, no_encoder_attn=False)
    return CompactTransformerEncoderLayer(args, shape, cfg.attention_scaling)


def _set_layer_norm_eps(layer: nn.Module, eps: float):
    """fairseq's layers build their LayerNorms with eps 1e-5; rebuild them with ``eps`` (same parameters)."""
    for name, child in list(layer.named_children()):
        if isinstance(child, nn.LayerNorm) or type(child).__name__ == "FusedLayerNorm":
            replacement = LayerNorm(child.normalized_shape, eps=eps)
            setattr(layer, name, replacement)
