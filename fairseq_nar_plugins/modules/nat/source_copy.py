"""Bringing source-side vectors onto decoder positions, for decoders that never read target tokens.

A non-autoregressive decoder of length ``T`` needs one input vector per position; several models build it from the
``S`` source-side vectors of a sentence (encoder states, BnB's latent ``z``, DEER's copied source tokens):

* :func:`ratio_copy_index` (CTC decoders, ``T = round(ratio * S)``): position ``j`` reads source token
  ``floor(j / ratio)``, i.e. every source vector is copied ``ratio`` times in order (DEER: "copy the source sentence
  twice uniformly");
* :func:`uniform_copy_index` (decoders of a predicted length ``T``, shorter or longer than ``S``): position ``i``
  reads source token ``round(i * (S - 1) / (T - 1))`` (Gu et al. 2018's uniform copy): the first and last positions
  read the first and last source tokens, and the others are spread evenly between them, so a longer decoder repeats
  source vectors and a shorter one skips some.

Source rows may be padded on either side (fairseq pads sources on the left by default): indices count real tokens
only and :func:`gather_source` maps them to tensor positions.
"""
from typing import Tuple

import torch
from torch import Tensor


def num_frames(src_lengths: Tensor, ratio: float) -> Tensor:
    """Decoder positions (CTC frames) per sentence: ``round(ratio * src_lengths)``, at least 1 (LongTensor ``(B,)``).
    CTC code reads it as ``ctc.ctc_utils.num_frames`` (re-exported there)."""
    return torch.round(src_lengths.float() * ratio).long().clamp(min=1)


def ratio_copy_index(src_lengths: Tensor, ratio: float) -> Tuple[Tensor, Tensor]:
    """``(index, padding_mask)`` of shape ``(B, T)``, ``T = max round(ratio * S_b)``: the source rank each decoder
    position reads, and True at decoder padding."""
    tgt_lengths = num_frames(src_lengths, ratio)
    pos = torch.arange(int(tgt_lengths.max()), device=src_lengths.device)
    index = torch.floor(pos.float()[None, :] / ratio).long()
    index = torch.minimum(index, (src_lengths - 1).clamp(min=0)[:, None])
    padding = pos[None, :] >= tgt_lengths[:, None]
    return index.masked_fill(padding, 0), padding


def uniform_copy_index(src_lengths: Tensor, tgt_lengths: Tensor) -> Tuple[Tensor, Tensor]:
    """``(index, padding_mask)`` of shape ``(B, max T_b)``: position ``i`` reads source rank
    ``round(i * (S_b - 1) / (T_b - 1))`` (0 for ``T_b = 1``)."""
    pos = torch.arange(int(tgt_lengths.max()), device=src_lengths.device).float()
    step = (src_lengths.float() - 1) / (tgt_lengths.float() - 1).clamp(min=1)
    index = torch.round(pos[None, :] * step[:, None]).long()
    index = torch.minimum(index, (src_lengths - 1).clamp(min=0)[:, None])
    padding = pos[None, :] >= tgt_lengths[:, None]
    return index.masked_fill(padding, 0), padding


def gather_source(states: Tensor, src_padding_mask: Tensor, index: Tensor, padding_mask: Tensor) -> Tensor:
    """``states`` ``(B, S, C)`` -> ``(B, T, C)``: position ``t`` gets the ``index[b, t]``-th real source vector of
    row ``b`` (whatever side the row is padded on); zeros at ``padding_mask`` (``(B, T)``, True = padding)."""
    real_first = src_padding_mask.long().argsort(dim=1, stable=True)  # real positions first, in order
    source_pos = real_first.gather(1, index)
    out = states.gather(1, source_pos[:, :, None].expand(-1, -1, states.size(-1)))
    return out.masked_fill(padding_mask[:, :, None], 0.0)
