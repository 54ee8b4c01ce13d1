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
import importlib
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models.nat.levenshtein_utils import _apply_del_words, _apply_ins_masks, _fill
from torch import Tensor

from ..ctc.ctc_utils import max_excluding
from .deer_input import token_types

MAX_PLACEHOLDERS = 256


_LIBNAT: Dict[str, object] = {}


def _libnat(cuda: bool):
    """fairseq's Levenshtein extension, imported once per process: ``(module, is_cuda)``, ``libnat_cuda`` for CUDA
    tensors when it is built, else the C++ ``libnat``. (fairseq's ``load_libnat`` retries the CUDA import and prints
    a line to stdout on every call, four times per DEER training step.)"""
    if not _LIBNAT:
        for name in ("libnat_cuda", "libnat"):
            try:
                _LIBNAT[name] = importlib.import_module(f"fairseq.{name}")
            except ImportError:
                _LIBNAT[name] = None
    if cuda and _LIBNAT["libnat_cuda"] is not None:
        return _LIBNAT["libnat_cuda"], True
    if _LIBNAT["libnat"] is None:
        raise ImportError("fairseq's C++ extension fairseq.libnat (Levenshtein edit paths) is missing: reinstall "
                          "fairseq from source (pip install fairseq, or python setup.py build_ext --inplace in its "
                          "checkout)")
    return _LIBNAT["libnat"], False


def _unpadded_rows(tokens: Tensor, pad: int):
    return [[t for t in row if t != pad] for row in tokens.tolist()]


def _get_ins_targets(in_tokens: Tensor, out_tokens: Tensor, pad: int, placeholder: int):
    """fairseq's ``levenshtein_utils._get_ins_targets`` (same outputs) with libnat loaded once: for each row, the
    oracle insertions that turn ``in_tokens`` ``(B, T')`` into ``out_tokens`` ``(B, T)``.

    Returns ``(masked_tgt_masks (B, T) bool, masked_tgt_tokens (B, T), mask_ins_targets (B, T' - 1))``: the
    positions of ``out_tokens`` to insert, ``out_tokens`` with ``placeholder`` there, and how many tokens go after
    each token of ``in_tokens``."""
    libnat, cuda = _libnat(in_tokens.is_cuda)
    if cuda:
        in_masks, out_masks = in_tokens.ne(pad), out_tokens.ne(pad)
        mask_ins_targets, masked_tgt_masks = libnat.generate_insertion_labels(
            out_tokens.int(), libnat.levenshtein_distance(in_tokens.int(), out_tokens.int(),
                                                          in_masks.sum(1).int(), out_masks.sum(1).int()))
        masked_tgt_masks = masked_tgt_masks.bool() & out_masks
        mask_ins_targets = mask_ins_targets.type_as(in_tokens)[:, 1:in_masks.size(1)]
        mask_ins_targets = mask_ins_targets.masked_fill_(~in_masks[:, 1:], 0)
    else:
        in_len, out_len = in_tokens.size(1), out_tokens.size(1)
        full_labels = libnat.suggested_ed2_path(_unpadded_rows(in_tokens, pad), _unpadded_rows(out_tokens, pad), pad)
        counts = [[len(c) if c[0] != pad else 0 for c in a[:-1]][1:-1] for a in full_labels]
        masks = []
        for row in counts:
            label = []
            for n in row:
                label += [0] + [1] * n
            masks.append(label + [0] * (out_len - len(label)))
        masked_tgt_masks = torch.tensor(masks, device=out_tokens.device).bool()
        mask_ins_targets = torch.tensor([row + [0] * (in_len - 1 - len(row)) for row in counts],
                                        device=in_tokens.device)
    return masked_tgt_masks, out_tokens.masked_fill(masked_tgt_masks, placeholder), mask_ins_targets


def _get_del_targets(in_tokens: Tensor, out_tokens: Tensor, pad: int) -> Tensor:
    """fairseq's ``levenshtein_utils._get_del_targets`` (same output) with libnat loaded once: ``(B, T)`` 1 where a
    token of ``in_tokens`` is outside the Levenshtein alignment to ``out_tokens`` (rows as wide as ``out_tokens``,
    as fairseq's)."""
    libnat, cuda = _libnat(in_tokens.is_cuda)
    if cuda:
        in_masks, out_masks = in_tokens.ne(pad), out_tokens.ne(pad)
        targets = libnat.generate_deletion_labels(
            in_tokens.int(), libnat.levenshtein_distance(in_tokens.int(), out_tokens.int(), in_masks.sum(1).int(),
                                                         out_masks.sum(1).int()))
        return targets.type_as(in_tokens).masked_fill_(~in_masks, 0)
    out_len = out_tokens.size(1)
    full_labels = libnat.suggested_ed2_path(_unpadded_rows(in_tokens, pad), _unpadded_rows(out_tokens, pad), pad)
    return torch.tensor([b[-1] + [0] * (out_len - len(b[-1])) for b in full_labels], device=out_tokens.device)


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
        backbone: the shared :class:`.backbone.bert_backbone.BertBackbone` (no cross-attention).
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
    ``forward``, except that ``word_ins`` is computed at the placeholders only: ``out`` ``(N, V)`` and ``tgt``
    ``(N,)`` for the ``N`` placeholders in row-major order, ``mask`` ``(N,)`` all True, and ``positions``
    ``(B, T)`` says where they are.
    """
    masked_tgt_masks, masked_tgt_tokens, mask_ins_targets = _get_ins_targets(
        prev_output_tokens, tgt_tokens, pad, placeholder)
    mask_ins_targets = mask_ins_targets.clamp(min=0, max=MAX_PLACEHOLDERS - 1)
    mask_ins_out = heads.mask_ins(features_fn(prev_output_tokens))
    # the output layer only where the loss is: at the placeholders (N of the B x T positions)
    word_ins_out = lm_head(features_fn(masked_tgt_tokens)[masked_tgt_masks])  # (N, V)
    # deletion learns from the insertion classifier's own (argmax) predictions at the placeholders, with the ids
    # decoding never inserts excluded (as editor_iteration does)
    word_predictions = tgt_tokens.masked_scatter(masked_tgt_masks, max_excluding(word_ins_out.detach(), forbidden)[1])
    word_del_targets = _get_del_targets(word_predictions, tgt_tokens, pad)
    word_del_out = heads.word_del(features_fn(word_predictions))
    return {
        "mask_ins": {"out": mask_ins_out, "tgt": mask_ins_targets, "mask": prev_output_tokens[:, 1:].ne(pad),
                     "ls": 0.01},
        "word_ins": {"out": word_ins_out, "tgt": tgt_tokens[masked_tgt_masks], "ls": label_smoothing,
                     "mask": masked_tgt_masks.new_ones(word_ins_out.size(0)), "positions": masked_tgt_masks},
        "word_del": {"out": word_del_out, "tgt": word_del_targets, "mask": word_predictions.ne(pad)},
    }


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
    tokens, scores = fill_placeholders(features_fn, lm_head, tokens, scores, pad, placeholder, forbidden)
    cut = int(tokens.ne(pad).sum(1).max())
    return tokens[:, :cut], scores[:, :cut]


def fill_placeholders(features_fn, lm_head, tokens: Tensor, scores: Tensor, pad: int, placeholder: int,
                      forbidden=()):
    """The fill sub-step of :func:`editor_iteration`: each placeholder takes its most likely token that is not
    ``forbidden``, and its log-probability as score (LevT's ``_apply_ins_words``). The output layer runs at the
    placeholders only, not over whole rows.

    Args:
        features_fn: ``(rows (B,) bool, tokens (b, T)) -> (b, T, C)``.
        tokens, scores: ``(B, T)``.

    Returns ``(tokens, scores)`` ``(B, T)``.
    """
    can_fill = tokens.eq(placeholder).sum(1) > 0
    if not can_fill.any():
        return tokens, scores
    t, s = tokens[can_fill], scores[can_fill]
    holes = t.eq(placeholder)
    lp = F.log_softmax(lm_head(features_fn(can_fill, t)[holes]).float(), -1)  # (N, V)
    best, pred = max_excluding(lp, forbidden)
    t, s = t.masked_scatter(holes, pred), s.masked_scatter(holes, best.to(s.dtype))
    return _fill(tokens, can_fill, t, pad), _fill(scores, can_fill, s, 0)


def _spread_budget(n_ins: Tensor, room: Tensor) -> Tensor:
    """Per-gap caps ``(b, T - 1)`` so that a row inserts at most ``room`` placeholders in all: gaps are served
    left to right (the cumulative count is cut at ``room``)."""
    before = n_ins.cumsum(1) - n_ins
    return (room[:, None] - before).clamp(min=0)
