"""Self-attention whose heads have their own widths, and transformer layers built with it (pruned-model export).

A model trained with dynamic block pruning (:mod:`.pruning.block_pruning`) and exported at a fixed size
(:mod:`.pruning.pruned_export`) loses whole rows / columns of its attention projections, so that after compaction head ``h``
keeps ``qk_dims[h]`` query/key dimensions and ``v_dims[h]`` value dimensions (0 and 0: the head is gone). The
projections are then plain ``nn.Linear`` layers of the summed widths:

* ``q_proj``, ``k_proj``: ``(sum(qk_dims), C)`` weight, ``(sum(qk_dims),)`` bias, head by head in order;
* ``v_proj``: ``(sum(v_dims), C)`` weight and bias; ``out_proj``: ``(C, sum(v_dims))`` weight, ``(C,)`` bias.

The math is fairseq's ``MultiheadAttention`` (and PyTorch's ``F.multi_head_attention_forward``, which fairseq's
encoder layers call): ``softmax(scaling * q k^T + attn_mask, -inf at key padding) v``, softmax in float32, dropout
on the probabilities, ``out_proj`` over the concatenated head outputs. ``scaling`` is a constant of the module: the
ORIGINAL ``(embed_dim // num_heads) ** -0.5`` (fairseq's ``MultiheadAttention.scaling``), not the compacted width.

Masks follow the conventions of :class:`~.bert_backbone.BertBackbone` and fairseq: ``attn_mask`` is additive
(float; a bool mask is turned into ``-inf`` where True, as PyTorch does), shaped ``(T, S)`` or
``(B * num_heads, T, S)`` with ``num_heads`` the ORIGINAL head count (rows of removed heads are skipped);
``key_padding_mask`` is ``(B, S)``, True at padding.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.modules import TransformerDecoderLayer, TransformerEncoderLayer
from fairseq.modules.fairseq_dropout import FairseqDropout
from torch import Tensor


def _scatter_index(dims: Sequence[int], width: int) -> Tensor:
    """Position of each compact dimension in the ``(len(dims) * width)`` zero-padded layout (head ``h`` occupies
    ``[h * width, h * width + dims[h])``). ``(sum(dims),)`` long."""
    return torch.cat([torch.arange(d) + h * width for h, d in enumerate(dims)]) if dims else \
        torch.zeros(0, dtype=torch.long)


class CompactSelfAttention(nn.Module):
    """Multi-head (self-)attention with per-head query/key and value widths.

    Args:
        embed_dim: ``C``, width of the input and output states.
        qk_dims: query/key width of every ORIGINAL head (length = original number of heads).
        v_dims: value width of every original head; a head with ``v_dims[h] == 0`` is removed and must have
            ``qk_dims[h] == 0``. A head with ``qk_dims[h] == 0 < v_dims[h]`` attends uniformly (its logits are 0 apart
            from the masks).
        scaling: factor on the queries; the original ``head_dim ** -0.5``.
        dropout: dropout on the attention probabilities.
    """

    def __init__(self, embed_dim: int, qk_dims: Sequence[int], v_dims: Sequence[int], scaling: float,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        qk_dims, v_dims = [int(d) for d in qk_dims], [int(d) for d in v_dims]
        if len(qk_dims) != len(v_dims) or not qk_dims:
            raise ValueError(f"qk_dims {qk_dims} and v_dims {v_dims} must list the same (non-zero) number of heads")
        if any(d < 0 for d in qk_dims + v_dims):
            raise ValueError(f"negative head width in qk_dims {qk_dims} / v_dims {v_dims}")
        for h, (q, v) in enumerate(zip(qk_dims, v_dims)):
            if v == 0 and q != 0:
                raise ValueError(f"head {h} has no value dimensions (v_dims[{h}] = 0) but qk_dims[{h}] = {q}: a head "
                                 "without values contributes nothing; set its qk width to 0 too")
        self.embed_dim = embed_dim
        self.num_heads = len(qk_dims)  # original head count (mask layout), as fairseq's attribute
        self.head_dim = embed_dim // self.num_heads  # original head width (what scaling was derived from)
        self.qk_dims, self.v_dims = qk_dims, v_dims
        self.scaling = float(scaling)
        self.self_attention = True
        self.encoder_decoder_attention = False
        self.dropout_module = FairseqDropout(dropout, module_name=self.__class__.__name__)
        #: original indices of the heads that remain
        self.active_heads = [h for h, v in enumerate(v_dims) if v > 0]
        act_qk = [qk_dims[h] for h in self.active_heads]
        act_v = [v_dims[h] for h in self.active_heads]
        self.max_qk = max(act_qk, default=0)
        self.max_v = max(act_v, default=0)
        self.q_proj = nn.Linear(embed_dim, sum(qk_dims), bias=bias)
        self.k_proj = nn.Linear(embed_dim, sum(qk_dims), bias=bias)
        self.v_proj = nn.Linear(embed_dim, sum(v_dims), bias=bias)
        self.out_proj = nn.Linear(sum(v_dims), embed_dim, bias=bias)
        # non-persistent: the state dict holds only the four projections (BertBackbone's parameter_shapes)
        self.register_buffer("qk_index", _scatter_index(act_qk, self.max_qk), persistent=False)
        self.register_buffer("v_index", _scatter_index(act_v, self.max_v), persistent=False)
        self._qk_padded = any(d != self.max_qk for d in act_qk)
        self._v_padded = any(d != self.max_v for d in act_v)
        self._all_heads = len(self.active_heads) == self.num_heads
        self.register_buffer("head_index", torch.tensor(self.active_heads, dtype=torch.long), persistent=False)

    def extra_repr(self) -> str:
        return f"qk_dims={self.qk_dims}, v_dims={self.v_dims}, scaling={self.scaling:.6g}"

    # fairseq's decoder layer asks its self-attention for cached states; this module keeps none
    def _get_input_buffer(self, incremental_state) -> Dict[str, Optional[Tensor]]:
        if incremental_state is not None:
            raise NotImplementedError("CompactSelfAttention does not support incremental decoding")
        return {}

    def _pad_heads(self, x: Tensor, index: Tensor, width: int, padded: bool) -> Tensor:
        """``(L, B, sum(dims))`` -> ``(B * H_active, L, width)``, each head zero-padded to ``width``."""
        length, bsz = x.shape[:2]
        heads = len(self.active_heads)
        if padded:
            x = x.new_zeros(length, bsz, heads * width).index_copy(2, index, x)
        return x.contiguous().view(length, bsz * heads, width).transpose(0, 1)

    def _head_mask(self, attn_mask: Tensor, bsz: int) -> Tensor:
        """``(T, S)`` or ``(B * num_heads, T, S)`` -> additive float mask broadcastable to ``(B * H_active, T, S)``."""
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, device=attn_mask.device).masked_fill(attn_mask, float("-inf"))
        if attn_mask.dim() == 2:
            return attn_mask.unsqueeze(0)
        if attn_mask.size(0) != bsz * self.num_heads:
            raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)}: expected (T, S) or "
                             f"(B * num_heads = {bsz * self.num_heads}, T, S)")
        if self._all_heads:
            return attn_mask
        per_head = attn_mask.view(bsz, self.num_heads, *attn_mask.shape[1:])
        return per_head.index_select(1, self.head_index).reshape(-1, *attn_mask.shape[1:])

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor] = None,
        value: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        incremental_state=None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Args (time-first, as fairseq):
            query: ``(T, B, C)``; key, value: ``(S, B, C)`` (default: ``query``).
            key_padding_mask: ``(B, S)`` bool, True at padding.
            attn_mask: additive ``(T, S)`` or ``(B * num_heads, T, S)`` (see module docstring).
            need_weights: also return the attention probabilities, averaged over the remaining heads ``(B, T, S)``
                (per remaining head ``(H_active, B, T, S)`` with ``need_head_weights``).

        Returns:
            ``(T, B, C)`` output and the weights (or None).
        """
        if incremental_state is not None or static_kv or before_softmax:
            raise NotImplementedError("CompactSelfAttention supports full-sequence attention only")
        key = query if key is None else key
        value = key if value is None else value
        tgt_len, bsz, _ = query.shape
        src_len = key.size(0)
        heads = len(self.active_heads)
        if heads == 0:  # every head removed: the output is out_proj's bias
            return self.out_proj(query.new_zeros(tgt_len, bsz, 0)), None
        q = self._pad_heads(self.q_proj(query) * self.scaling, self.qk_index, self.max_qk, self._qk_padded)
        k = self._pad_heads(self.k_proj(key), self.qk_index, self.max_qk, self._qk_padded)
        v = self._pad_heads(self.v_proj(value), self.v_index, self.max_v, self._v_padded)
        attn_weights = torch.bmm(q, k.transpose(1, 2))  # (B * H_active, T, S)
        if attn_mask is not None:
            attn_weights = attn_weights + self._head_mask(attn_mask, bsz).to(attn_weights.dtype)
        if key_padding_mask is not None:
            attn_weights = attn_weights.view(bsz, heads, tgt_len, src_len).masked_fill(
                key_padding_mask.view(bsz, 1, 1, src_len).to(torch.bool), float("-inf")
            ).view(bsz * heads, tgt_len, src_len)
        probs_float = F.softmax(attn_weights, dim=-1, dtype=torch.float32)
        probs = self.dropout_module(probs_float.type_as(attn_weights))
        attn = torch.bmm(probs, v)  # (B * H_active, T, max_v)
        attn = attn.transpose(0, 1).contiguous().view(tgt_len, bsz, heads * self.max_v)
        if self._v_padded:
            attn = attn.index_select(2, self.v_index)
        out = self.out_proj(attn)
        weights = None
        if need_weights or need_head_weights:
            weights = probs_float.view(bsz, heads, tgt_len, src_len).transpose(1, 0)
            if not need_head_weights:
                weights = weights.mean(dim=0)
        return out, weights


class _CompactLayerMixin:
    """Builds ``self_attn`` as a :class:`CompactSelfAttention` of the layer's shape (set before ``__init__``)."""

    def _compact_attention(self, embed_dim, cfg):
        shape = self._compact_shape
        return CompactSelfAttention(embed_dim, shape["qk_dims"], shape["v_dims"], scaling=self._compact_scaling,
                                    dropout=cfg.attention_dropout)


class CompactTransformerEncoderLayer(_CompactLayerMixin, TransformerEncoderLayer):
    """fairseq's (legacy args) ``TransformerEncoderLayer`` with a :class:`CompactSelfAttention` and the FFN width of
    ``shape["ffn"]`` (``args`` must already carry that width as ``encoder_ffn_embed_dim``)."""

    def __init__(self, args, shape: Dict[str, List[int]], scaling: float):
        self._compact_shape, self._compact_scaling = shape, scaling  # read by build_self_attention in __init__
        super().__init__(args)

    def build_self_attention(self, embed_dim, args):
        return self._compact_attention(embed_dim, args)


class CompactTransformerDecoderLayer(_CompactLayerMixin, TransformerDecoderLayer):
    """fairseq's ``TransformerDecoderLayer`` with a compact self-attention (no incremental decoding); the
    encoder-decoder attention stays a uniform fairseq ``MultiheadAttention``."""

    def __init__(self, args, shape: Dict[str, List[int]], scaling: float, **kwargs):
        self._compact_shape, self._compact_scaling = shape, scaling
        super().__init__(args, **kwargs)

    def build_self_attention(self, embed_dim, args, add_bias_kv=False, add_zero_attn=False):
        return self._compact_attention(embed_dim, args)
