"""DEER's Levenshtein editor (shared/papers/002, section 3.2; Gu et al. 2019): the backbone's own layers run over
editor tokens with cached source states, three small heads, LevT training targets and one decoding iteration.

Cached source states. In DEER's encoder pass the source cannot see the target slots (:mod:`.deer_input`), so the
input of every layer at the source positions does not depend on the slots. The editor reuses those per-layer states:
at layer ``l`` the editor tokens ``x`` (queries) attend to keys/values ``[h_src^l ; x]`` (the cached source input of
layer ``l`` followed by the editor tokens), and the rest of the layer (dropout, residual, LayerNorm, FFN) is the
layer's own. This equals running the whole stack over ``[source ; editor tokens]`` with the source blind to the
editor tokens (tested), at the cost of the editor tokens only.

Heads (every backbone weight is shared; the heads are Levenshtein Transformer's):

* placeholders (``mask_ins``): ``[f_i ; f_{i+1}] W_plh^T``, 256 classes (how many tokens to insert between
  neighbours ``i`` and ``i + 1``), ``W_plh`` ``(256, 2C)``;
* insertion (``word_ins``): the backbone's masked-LM head over the placeholder positions;
* deletion (``word_del``): ``f_i W_del^T``, ``W_del`` ``(2, C)`` (1 = delete).
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models.nat.levenshtein_utils import (
    _apply_del_words,
    _apply_ins_masks,
    _apply_ins_words,
    _fill,
    _get_del_targets,
    _get_ins_targets,
)
from torch import Tensor

from .deer_input import token_types

MAX_PLACEHOLDERS = 256


def layer_with_memory(layer, x: Tensor, memory: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
    """One post-LN fairseq ``TransformerEncoderLayer`` whose self-attention reads keys/values ``memory``.

    Args:
        layer: the layer (its weights, dropout and activation are used as they are).
        x: ``(T, B, C)`` queries (editor states entering the layer).
        memory: ``(M, B, C)`` keys/values (``[cached source states ; x]``).
        key_padding_mask: ``(B, M)`` True at padding, or None.

    Returns:
        ``(T, B, C)``, what the layer computes for ``x`` when its self-attention sees ``memory``.
    """
    if getattr(layer, "normalize_before", False):
        raise ValueError("the editor expects post-LN layers (BERT / RoBERTa / XLM-R)")
    residual = x
    x, _ = layer.self_attn(query=x, key=memory, value=memory, key_padding_mask=key_padding_mask,
                           need_weights=False)
    x = layer.dropout_module(x)
    x = layer.self_attn_layer_norm(layer.residual_connection(x, residual))
    residual = x
    x = layer.activation_dropout_module(layer.activation_fn(layer.fc1(x)))
    x = layer.dropout_module(layer.fc2(x))
    return layer.final_layer_norm(layer.residual_connection(x, residual))


def editor_features(backbone, src_tokens: Tensor, src_padding_mask: Tensor, source_states: Tensor,
                    tokens: Tensor, padding_mask: Tensor) -> Tensor:
    """Final backbone states ``(B, T, C)`` of editor tokens.

    Args:
        backbone: the shared :class:`.bert_backbone.BertBackbone` (no cross-attention).
        src_tokens: ``(B, S)`` source tokens (for the embeddings' positions only).
        src_padding_mask: ``(B, S)`` True at source padding.
        source_states: ``(B, L, S, C)`` cached input of each of the ``L`` layers at the source positions.
        tokens: ``(B, T)`` editor tokens (``[<s>, ..., </s>]``, right-padded).
        padding_mask: ``(B, T)`` True at padding.
    """
    s = src_tokens.size(1)
    pad_all = torch.cat([src_padding_mask, padding_mask], 1)
    # embedding the concatenation gives editor tokens the positions that follow their source (cheap: a lookup)
    x = backbone.embeddings(torch.cat([src_tokens, tokens], 1), pad_all,
                            token_types(src_padding_mask, padding_mask, backbone.cfg.type_vocab_size))[:, s:]
    key_padding_mask = pad_all if pad_all.any() else None
    x = x.transpose(0, 1)
    for i, layer in enumerate(backbone.layers):
        memory = torch.cat([source_states[:, i].transpose(0, 1), x], 0)
        x = layer_with_memory(layer, x, memory, key_padding_mask)
    return x.transpose(0, 1)


class EditorHeads(nn.Module):
    """Placeholder and deletion classifiers (the insertion classifier is the backbone's LM head)."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.embed_mask_ins = nn.Parameter(torch.empty(MAX_PLACEHOLDERS, 2 * embed_dim))
        self.embed_word_del = nn.Parameter(torch.empty(2, embed_dim))
        nn.init.normal_(self.embed_mask_ins, std=0.02)
        nn.init.normal_(self.embed_word_del, std=0.02)

    def mask_ins(self, features: Tensor) -> Tensor:
        """``(B, T, C)`` -> ``(B, T - 1, 256)`` logits of the number of placeholders after each position."""
        return F.linear(torch.cat([features[:, :-1], features[:, 1:]], 2), self.embed_mask_ins)

    def word_del(self, features: Tensor) -> Tensor:
        """``(B, T, C)`` -> ``(B, T, 2)`` keep/delete logits."""
        return F.linear(features, self.embed_word_del)


def editor_training_terms(features_fn, lm_head, heads: EditorHeads, prev_output_tokens: Tensor, tgt_tokens: Tensor,
                          pad: int, placeholder: int, forbidden=(), label_smoothing: float = 0.0) -> Dict[str, dict]:
    """Levenshtein Transformer's three training terms, in fairseq's NAT output-dict format.

    Args:
        features_fn: ``tokens (B, T) -> (B, T, C)`` editor features (closure over the cached source states).
        lm_head: ``(B, T, C) -> (B, T, V)``.
        prev_output_tokens: ``(B, T')`` corrupted references (``--noise random_delete``), ``[<s> ... </s>]``.
        tgt_tokens: ``(B, T)`` references.
        placeholder: the token placeholders hold.
        forbidden: token ids the insertion classifier never emits at decoding (CTC blank, ``<s>``, ``</s>``,
            ``<pad>``, the placeholder): excluded from its argmax here too, so that the deletion classifier learns
            on the rows decoding produces. (With a BERT vocabulary the blank is ``[PAD]``: a pad id inside a row
            would be dropped by fairseq's ``_get_del_targets`` and shift every later deletion label.)
        label_smoothing: of the insertion term ``word_ins`` (LevT: ``--label-smoothing``); ``mask_ins`` has
            LevT's 0.01; ``word_del`` sets none, so the ``ctc`` criterion smooths it only with
            ``--label-smoothing-all-terms``.

    Returns ``{"mask_ins", "word_ins", "word_del"}`` (``out`` logits, ``tgt``, ``mask``, ``ls``), as LevT's
    ``forward``.
    """
    masked_tgt_masks, masked_tgt_tokens, mask_ins_targets = _get_ins_targets(
        prev_output_tokens, tgt_tokens, pad, placeholder)
    mask_ins_targets = mask_ins_targets.clamp(min=0, max=MAX_PLACEHOLDERS - 1)
    mask_ins_out = heads.mask_ins(features_fn(prev_output_tokens))
    word_ins_out = lm_head(features_fn(masked_tgt_tokens))
    # deletion learns from the insertion classifier's own (argmax) predictions at the placeholders, with the ids
    # decoding never inserts excluded (as editor_iteration does)
    word_predictions = _argmax_excluding(word_ins_out.detach(), forbidden)
    word_predictions = word_predictions.masked_scatter(~masked_tgt_masks, tgt_tokens[~masked_tgt_masks])
    word_del_targets = _get_del_targets(word_predictions, tgt_tokens, pad)
    word_del_out = heads.word_del(features_fn(word_predictions))
    return {
        "mask_ins": {"out": mask_ins_out, "tgt": mask_ins_targets, "mask": prev_output_tokens[:, 1:].ne(pad),
                     "ls": 0.01},
        "word_ins": {"out": word_ins_out, "tgt": tgt_tokens, "mask": masked_tgt_masks, "ls": label_smoothing},
        "word_del": {"out": word_del_out, "tgt": word_del_targets, "mask": word_predictions.ne(pad)},
    }


def _argmax_excluding(logits: Tensor, forbidden) -> Tensor:
    """``argmax`` over the last dimension of ``logits`` ``(B, T, V)`` with the ids in ``forbidden`` never chosen."""
    if not forbidden:
        return logits.argmax(-1)
    blocked = torch.zeros(logits.size(-1), dtype=torch.bool, device=logits.device)
    blocked[list(forbidden)] = True
    return logits.masked_fill(blocked, float("-inf")).argmax(-1)


def ctc_roll_in_terms(features_fn, heads: EditorHeads, hypotheses: Tensor, tgt_tokens: Tensor, pad: int, bos: int,
                      eos: int, placeholder: int) -> Dict[str, dict]:
    """Deletion and placeholder terms on the model's own step-0 output, the editor's first input at inference.

    Trained on randomly deleted references only, the editor never sees a CTC hypothesis (nearly complete, wrong in
    a few places) before decoding: it over-deletes and under-inserts there. This roll-in adds, as LevT's learned
    policies do, the edits that would turn the CTC output into the reference: ``word_del_ctc`` (delete the tokens
    outside the Levenshtein alignment) and ``mask_ins_ctc`` (placeholders needed after that oracle deletion).

    Args:
        hypotheses: ``(B, T)`` greedy CTC outputs ``[<s> ... </s>]``, right-padded (no gradient).
        tgt_tokens: ``(B, T')`` references.
    """
    # fairseq's targets are as wide as the reference (LevT deletes from reference-length rows): widen it with
    # padding for hypotheses longer than their reference, then cut to the hypotheses' width
    width = max(hypotheses.size(1), tgt_tokens.size(1))
    wide_tgt = F.pad(tgt_tokens, (0, width - tgt_tokens.size(1)), value=pad)
    word_del_targets = _get_del_targets(hypotheses, wide_tgt, pad)[:, :hypotheses.size(1)]
    word_del_out = heads.word_del(features_fn(hypotheses))
    kept, _, _ = _apply_del_words(hypotheses, None, None, word_del_targets.bool(), pad, bos, eos)
    kept = kept[:, :int(kept.ne(pad).sum(1).max())]
    _, _, mask_ins_targets = _get_ins_targets(kept, tgt_tokens, pad, placeholder)
    mask_ins_out = heads.mask_ins(features_fn(kept))
    return {
        "word_del_ctc": {"out": word_del_out, "tgt": word_del_targets, "mask": hypotheses.ne(pad)},
        "mask_ins_ctc": {"out": mask_ins_out, "tgt": mask_ins_targets.clamp(min=0, max=MAX_PLACEHOLDERS - 1),
                         "mask": kept[:, 1:].ne(pad), "ls": 0.01},
    }


def editor_iteration(features_fn, lm_head, heads: EditorHeads, tokens: Tensor, scores: Tensor, max_lens: Tensor,
                     pad: int, bos: int, eos: int, placeholder: int, eos_penalty: float = 0.0,
                     forbidden=()):
    """One Levenshtein iteration: delete -> insert placeholders -> fill them (LevT's ``forward_decoder``).

    Args:
        features_fn: ``(rows (B,) bool, tokens (b, T)) -> (b, T, C)`` editor features of the selected rows.
        tokens, scores: ``(B, T)`` current hypotheses ``[<s> ... </s>]`` (right-padded) and their token scores.
        max_lens: ``(B,)`` longest allowed hypothesis (specials included).
        forbidden: token ids never inserted (e.g. the CTC blank, ``<s>``, ``</s>``, ``<pad>``).

    Returns ``(tokens, scores)``, right-padded, cut to the longest row.
    """
    # delete (never <s> / </s>; rows of <s> </s> only are left alone)
    can_del = tokens.ne(pad).sum(1) > 2
    if can_del.any():
        del_pred = F.log_softmax(heads.word_del(features_fn(can_del, tokens[can_del])), -1).argmax(-1).bool()
        t, s, _ = _apply_del_words(tokens[can_del], scores[can_del], None, del_pred, pad, bos, eos)
        tokens, scores = _fill(tokens, can_del, t, pad), _fill(scores, can_del, s, 0)
    # insert placeholders
    can_ins = tokens.ne(pad).sum(1) < max_lens
    if can_ins.any():
        lp = F.log_softmax(heads.mask_ins(features_fn(can_ins, tokens[can_ins])), -1)
        if eos_penalty > 0.0:
            lp[:, :, 0] = lp[:, :, 0] - eos_penalty
        n_ins = lp.argmax(-1)
        # never beyond the row's length budget
        room = (max_lens[can_ins] - tokens[can_ins].ne(pad).sum(1)).clamp(min=0)
        n_ins = n_ins.masked_fill(~tokens[can_ins][:, 1:].ne(pad), 0)
        n_ins = torch.minimum(n_ins, _spread_budget(n_ins, room))
        t, s = _apply_ins_masks(tokens[can_ins].clone(), scores[can_ins].clone(), n_ins, pad, placeholder, eos)
        tokens, scores = _fill(tokens, can_ins, t, pad), _fill(scores, can_ins, s, 0)
    # fill placeholders
    can_fill = tokens.eq(placeholder).sum(1) > 0
    if can_fill.any():
        lp = F.log_softmax(lm_head(features_fn(can_fill, tokens[can_fill])).float(), -1)
        if forbidden:
            lp[:, :, list(forbidden)] = float("-inf")
        best, pred = lp.max(-1)
        t, s = _apply_ins_words(tokens[can_fill], scores[can_fill], pred, best.to(scores.dtype), placeholder)
        tokens, scores = _fill(tokens, can_fill, t, pad), _fill(scores, can_fill, s, 0)
    cut = int(tokens.ne(pad).sum(1).max())
    return tokens[:, :cut], scores[:, :cut]


def _spread_budget(n_ins: Tensor, room: Tensor) -> Tensor:
    """Per-gap caps ``(b, T - 1)`` so that a row inserts at most ``room`` placeholders in all: gaps are served
    left to right (the cumulative count is cut at ``room``)."""
    before = n_ins.cumsum(1) - n_ins
    return (room[:, None] - before).clamp(min=0)
