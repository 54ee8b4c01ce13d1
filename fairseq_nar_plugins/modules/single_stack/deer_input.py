"""DEER's input format and self-attention mask (shared/papers/002, section 3.1 and Figure 1).

DEER has no decoder: one BERT-family stack reads the source followed by ``F = round(ratio * S)`` target *slots*
(``S`` source tokens, ``<s>``/``</s>`` included; ``ratio`` is the task's ``--upsample-ratio``) and the CTC output is
read off the slot positions. What a slot holds (``--deer-slot-input``):

* ``copy`` (the paper's choice: "we copy the source sentence twice uniformly"): slot ``j`` holds source token
  ``floor(j / ratio)``, so with ratio 2 the slots are ``x1 x1 x2 x2 ... xm xm``;
* ``placeholder`` (the authors' code): every slot holds one placeholder token (``<mask>`` / ``[MASK]`` when the
  dictionary has one, else ``<unk>``).

Self-attention mask: source positions cannot attend to target slots; slots attend to everything (padding excluded by
the key padding mask). Source states therefore do not depend on the slots, which lets the Levenshtein editor reuse
them (:mod:`.levenshtein_editor`).

Positions and token types follow the backbone: a real token's position is its rank among the real tokens of the
concatenated row (:class:`.backbone.bert_backbone.BertEmbeddings`), so slots continue the source positions whatever side the
source is padded on; with token-type embeddings (BERT) the source is segment 0 and the slots segment 1, as in BERT's
sentence pairs; RoBERTa / XLM-R have no token types.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..nat.source_copy import gather_source, ratio_copy_index

SLOT_INPUTS = ("copy", "placeholder")


class DEERInput(NamedTuple):
    """The stack's input for a batch.

    * ``tokens`` ``(B, S + F)``: source row (as given, any padding side) then the slot row (right-padded);
    * ``padding_mask`` ``(B, S + F)`` True at padding (taken from the masks, never from token ids: a slot may hold a
      blank that equals ``<pad>``, e.g. BERT's ``[PAD]`` blank after glancing);
    * ``attn_mask`` ``(S + F, S + F)`` bool, True where a query may *not* attend to a key (the same for every
      sentence: the boundary is the padded source width ``S``);
    * ``token_type_ids`` ``(B, S + F)`` or None (backbones without token types);
    * ``num_source`` ``S`` (the slot part starts there).
    """

    tokens: Tensor
    padding_mask: Tensor
    attn_mask: Tensor
    token_type_ids: Optional[Tensor]
    num_source: int


def slot_tokens(src_tokens: Tensor, src_padding_mask: Tensor, ratio: float, mode: str, placeholder: int,
                pad: int):
    """Initial slot tokens ``(B, F)`` (right-padded with ``pad``) and the slot padding mask ``(B, F)``.

    ``mode`` ``"copy"``: slot ``j`` of a row holds its source token ``floor(j / ratio)`` (real tokens counted, any
    padding side); ``"placeholder"``: every real slot holds ``placeholder``."""
    if mode not in SLOT_INPUTS:
        raise ValueError(f"--deer-slot-input must be one of {SLOT_INPUTS}, got {mode!r}")
    index, frame_padding_mask = ratio_copy_index((~src_padding_mask).sum(1), ratio)
    if mode == "copy":
        slots = gather_source(src_tokens[:, :, None], src_padding_mask, index, frame_padding_mask)[:, :, 0]
    else:
        slots = torch.full_like(index, placeholder)
    return slots.masked_fill(frame_padding_mask, pad), frame_padding_mask


def shared_source_blind_mask(num_source: int, num_target: int, device=None) -> Tensor:
    """``(S + T, S + T)`` bool, True where a query may not attend to a key: every query of the first ``S``
    positions (the source) is blind to the last ``T`` positions (slots or editor tokens); the last ``T`` positions
    see everything. One mask for the whole batch (padding keys are left to the key padding mask)."""
    mask = torch.zeros((num_source + num_target, num_source + num_target), dtype=torch.bool, device=device)
    mask[:num_source, num_source:] = True
    return mask


def source_blind_mask(src_padding_mask: Tensor, tgt_padding_mask: Tensor) -> Tensor:
    """:func:`shared_source_blind_mask` as a writable per-sentence copy, ``(B, S + T, S + T)`` (e.g.
    :func:`.seq2seq_masks.unilm_seq2seq_mask` writes into it). DEER's stack takes the shared 2-D mask."""
    bsz, s = src_padding_mask.shape
    mask = shared_source_blind_mask(s, tgt_padding_mask.size(1), src_padding_mask.device)
    return mask.expand(bsz, -1, -1).clone()


def token_types(src_padding_mask: Tensor, tgt_padding_mask: Tensor, type_vocab_size: int) -> Optional[Tensor]:
    """Segment ids ``(B, S + T)``: 0 on the source, 1 on the target part; None without (two) token types."""
    if type_vocab_size < 2:
        return None
    return torch.cat([torch.zeros_like(src_padding_mask, dtype=torch.long),
                      torch.ones_like(tgt_padding_mask, dtype=torch.long)], 1)


def build_input(src_tokens: Tensor, src_padding_mask: Tensor, slots: Tensor, slot_padding_mask: Tensor,
                type_vocab_size: int) -> DEERInput:
    """Concatenate source and slots into the stack's input with DEER's mask (see :class:`DEERInput`)."""
    return DEERInput(
        tokens=torch.cat([src_tokens, slots], 1),
        padding_mask=torch.cat([src_padding_mask, slot_padding_mask], 1),
        attn_mask=shared_source_blind_mask(src_tokens.size(1), slots.size(1), src_tokens.device),
        token_type_ids=token_types(src_padding_mask, slot_padding_mask, type_vocab_size),
        num_source=src_tokens.size(1),
    )
