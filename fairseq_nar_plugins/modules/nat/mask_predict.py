"""Mask-predict decoding (Ghazvininejad et al., 2019, "Mask-Predict: Parallel decoding of conditional masked
language models", EMNLP, arXiv:1904.09324) with a configurable mask id, and merging of repeated tokens.

fairseq's ``cmlm_transformer`` implements mask-predict with ``<unk>`` as the mask. MLAE (section 3.4, 4.4) decodes
with the ``[MASK]`` token of its pretraining instead, and merges consecutive repeated tokens of the final output
("weak decoders repeat tokens", section 5.2.1). One decoding step (:func:`mask_predict_update`), given the decoder's
log-probabilities over the current canvas:

1. every masked position takes its most likely token (special symbols banned) and that token's log-probability as
   its score; other positions keep their token and score;
2. if this is not the last step (``step + 1 < max_step``): the ``floor((len - 2) * (1 - (step + 1) / max_step))``
   lowest-scoring positions of each row are masked again (fairseq's ``_skeptical_unmasking``; ``len`` counts
   ``<s>`` and ``</s>``, whose scores stay 0 and are therefore never among the lowest), their scores reset to 0;
3. at the last step, with ``merge``: :func:`merge_repeats`.

``IterativeRefinementGenerator`` runs ``max_step = --iter-decode-max-iter + 1`` steps. Decode with
``--iter-decode-force-max-iter``: its adaptive stop compares a step's canvas (after re-masking) with the previous one
and could finalise a row that still holds masks.
"""
from typing import Iterable, Optional, Tuple

import torch
from fairseq.models.nat.cmlm_transformer import _skeptical_unmasking
from torch import Tensor


def remask_count(lengths: Tensor, step: int, max_step: int) -> Tensor:
    """``(B,)`` number of tokens mask-predict masks again after step ``step`` (0-based) of ``max_step``:
    ``floor((len - 2) * (1 - (step + 1) / max_step))``, 0 at the last step."""
    if step + 1 >= max_step:
        return torch.zeros_like(lengths)
    p = 1 - (step + 1) / max_step
    return ((lengths - 2).to(torch.float) * p).long().clamp(min=0)


def mask_predict_update(
    output_tokens: Tensor,
    output_scores: Tensor,
    lprobs: Tensor,
    step: int,
    max_step: int,
    mask_idx: int,
    pad: int,
    bos: int,
    eos: int,
    banned: Iterable[int] = (),
    merge: bool = False,
) -> Tuple[Tensor, Tensor]:
    """One mask-predict step (see the module docstring).

    Args:
        output_tokens: ``(B, T)`` the canvas ``[<s> ... </s>]`` (right-padded) with ``mask_idx`` at masked positions.
        output_scores: ``(B, T)`` float, the score (log-probability) of each canvas token.
        lprobs: ``(B, T, V)`` the decoder's log-probabilities over the canvas.
        step, max_step: the generator's 0-based step and its number of steps.
        banned: token ids never predicted (besides ``<s>``, ``</s>``, ``<pad>`` and the mask, always banned).
        merge: at the last step, collapse consecutive repeated tokens (:func:`merge_repeats`).

    Returns:
        ``(tokens, scores)`` new tensors (the merged canvas may be shorter than ``T``).
    """
    lprobs = lprobs.clone()
    lprobs[:, :, sorted({bos, eos, pad, mask_idx, *banned})] = float("-inf")
    scores, tokens = lprobs.max(-1)
    masks = output_tokens.eq(mask_idx)
    output_tokens = output_tokens.masked_scatter(masks, tokens[masks])
    output_scores = output_scores.masked_scatter(masks, scores[masks].to(output_scores.dtype))
    if step + 1 < max_step:
        remask = _skeptical_unmasking(output_scores, output_tokens.ne(pad), 1 - (step + 1) / max_step)
        output_tokens = output_tokens.masked_fill(remask, mask_idx)
        output_scores = output_scores.masked_fill(remask, 0.0)
    elif merge:
        output_tokens, output_scores = merge_repeats(output_tokens, output_scores, pad, bos, eos)
    return output_tokens, output_scores


def merge_repeats(tokens: Tensor, scores: Optional[Tensor], pad: int, bos: int, eos: int
                  ) -> Tuple[Tensor, Optional[Tensor]]:
    """Collapse runs of equal consecutive tokens to their first token (and its score).

    ``<s>``, ``</s>`` and ``<pad>`` are never merged (nor merged into): ``[<s> a a b a a </s> pad]`` becomes
    ``[<s> a b a </s> pad pad pad]``. Rows are right-padded; the result keeps the width of the longest merged row.

    Args:
        tokens: ``(B, T)`` right-padded rows.
        scores: ``(B, T)`` per-token scores, or None.

    Returns:
        ``(tokens (B, T'), scores (B, T') or None)`` with ``T' <= T``; padding scores are 0.
    """
    special = tokens.eq(pad) | tokens.eq(bos) | tokens.eq(eos)
    repeat = torch.zeros_like(special)
    repeat[:, 1:] = tokens[:, 1:].eq(tokens[:, :-1]) & ~special[:, 1:] & ~special[:, :-1]
    keep = tokens.ne(pad) & ~repeat
    width = max(int(keep.sum(1).max()), 1) if keep.numel() else 0
    # stable sort brings the kept positions to the front in their order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :width]
    kept = keep.gather(1, order)
    out_tokens = tokens.gather(1, order).masked_fill(~kept, pad)
    out_scores = None if scores is None else scores.gather(1, order).masked_fill(~kept, 0.0)
    return out_tokens, out_scores
