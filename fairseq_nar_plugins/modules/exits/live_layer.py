"""One post-LN fairseq ``TransformerDecoderLayer`` computed for some query positions only.

With early exit a token that has exited keeps its state; upper layers still read it as key and value, but nothing
of theirs is computed *for* it. :func:`decoder_layer_at` runs a layer for the live positions of each row (packed to
the longest row's count): query projection, self-attention over every position's keys/values, cross-attention,
and the FFN of the live positions only (flattened across the batch, so padding slots cost no FFN work). It equals
the full layer's output at those positions (tested against ``layer.forward``).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def pack_positions(live: Tensor) -> Tuple[Tensor, Tensor]:
    """``live`` ``(B, T)`` bool -> ``(index (B, M), valid (B, M))``: the live positions of each row, in order,
    packed to ``M = max live count`` (``valid`` False at the padding slots, whose index is 0)."""
    counts = live.sum(1)
    width = int(counts.max()) if counts.numel() else 0
    order = torch.argsort((~live).to(torch.int8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=live.device)[None, :] < counts[:, None]
    return order.masked_fill(~valid, 0), valid


def _check_layer(layer):
    if getattr(layer, "normalize_before", False):
        raise ValueError("decoder_layer_at expects post-LN layers (BERT / RoBERTa / BART conventions)")
    for name in ("c_attn", "attn_ln", "ffn_layernorm", "w_resid"):
        if getattr(layer, name, None) is not None:
            raise ValueError(f"decoder_layer_at does not implement the layer option {name} (NormFormer)")
    if getattr(layer, "cross_self_attention", False):
        raise ValueError("decoder_layer_at does not implement cross_self_attention")


def decoder_layer_at(layer, x: Tensor, index: Tensor, valid: Tensor, encoder_out: Optional[Tensor],
                     encoder_padding_mask: Optional[Tensor], self_padding_mask: Optional[Tensor]) -> Tensor:
    """The layer's output at some positions.

    Args:
        layer: a fairseq ``TransformerDecoderLayer`` (post-LN; cross-attention if ``encoder_out`` is given).
        x: ``(T, B, C)`` states entering the layer at every position (the keys and values of self-attention).
        index: ``(B, M)`` positions to compute (from :func:`pack_positions`).
        valid: ``(B, M)`` False at packing slots.
        encoder_out: ``(S, B, C_enc)`` states the cross-attention reads, or None (a layer without it).
        encoder_padding_mask: ``(B, S)`` True at source padding, or None.
        self_padding_mask: ``(B, T)`` True at decoder padding, or None.

    Returns:
        ``(M, B, C)``: what ``layer`` computes at ``index`` (zeros at packing slots).
    """
    _check_layer(layer)
    dim = x.size(-1)
    q = x.gather(0, index.t()[:, :, None].expand(-1, -1, dim))  # (M, B, C)
    residual = q
    h, _ = layer.self_attn(query=q, key=x, value=x, key_padding_mask=self_padding_mask, need_weights=False)
    h = layer.dropout_module(h)
    h = layer.self_attn_layer_norm(layer.residual_connection(h, residual))
    if layer.encoder_attn is not None and encoder_out is not None:
        residual = h
        h, _ = layer.encoder_attn(query=h, key=encoder_out, value=encoder_out, key_padding_mask=encoder_padding_mask,
                                  static_kv=True, need_weights=False)
        h = layer.dropout_module(h)
        h = layer.encoder_attn_layer_norm(layer.residual_connection(h, residual))
    rows = valid.t()  # (M, B)
    flat = h[rows]  # (N, C): the FFN only for live positions
    f = layer.activation_dropout_module(layer.activation_fn(layer.fc1(flat)))
    f = layer.dropout_module(layer.fc2(f))
    f = layer.final_layer_norm(layer.residual_connection(f, flat))
    out = h.new_zeros(h.shape)
    out[rows] = f
    return out


def scatter_positions(x: Tensor, out: Tensor, index: Tensor, valid: Tensor) -> Tensor:
    """``x`` ``(T, B, C)`` with ``out`` ``(M, B, C)`` written at ``index`` / ``valid`` (a new tensor)."""
    batch = torch.arange(index.size(0), device=index.device)[:, None].expand_as(index)
    x = x.clone()
    x[index[valid], batch[valid]] = out.transpose(0, 1)[valid]
    return x
