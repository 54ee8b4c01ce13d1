"""The single best CTC alignment (Viterbi path) of a target to decoder frames, in plain PyTorch (CPU and GPU).

Glancing training for CTC models (DEER, paper 002 §3.1, after Qian et al. 2021 and Gu & Kong 2021) needs, for every
frame, the symbol that the most probable alignment puts there. The authors' code computes it with a CUDA extension;
this is the same dynamic programme over the blank-extended target ``[blank, y1, blank, y2, ..., yL, blank]``,
vectorised over the batch and looped over frames.
"""
from typing import Tuple

import torch
from torch import Tensor

NEG_INF = float("-inf")


def ctc_best_alignment(
    lprobs: Tensor,
    frame_padding_mask: Tensor,
    targets: Tensor,
    target_padding_mask: Tensor,
    blank: int,
) -> Tuple[Tensor, Tensor]:
    """Viterbi CTC alignment.

    Args:
        lprobs: ``(B, F, V)`` log-probabilities per frame.
        frame_padding_mask: ``(B, F)`` True at padding frames.
        targets: ``(B, L)`` target ids without ``<s>``/``</s>``.
        target_padding_mask: ``(B, L)`` True at padding.
        blank: the blank index.

    Returns:
        ``(alignment, score)``: ``alignment`` ``(B, F)`` holds, for every real frame, the target id or ``blank`` that
        the best path emits there (``blank`` at padding frames and for sentences without any valid path);
        ``score`` ``(B,)`` is the log-probability of that path (``-inf`` when the target cannot be aligned).
    """
    bsz, n_frames, _ = lprobs.shape
    lprobs = lprobs.float()
    tgt_len = (~target_padding_mask).sum(1)
    frame_len = (~frame_padding_mask).sum(1)
    ext_len = 2 * targets.size(1) + 1
    # extended label sequence: blank at even positions, targets at odd positions
    ext = targets.new_full((bsz, ext_len), blank)
    ext[:, 1::2] = targets.masked_fill(target_padding_mask, blank)
    ext_valid = torch.arange(ext_len, device=lprobs.device)[None, :] < (2 * tgt_len + 1)[:, None]
    # a path may skip the blank between s-2 and s when the labels at s and s-2 differ (and s is a label)
    can_skip = torch.zeros_like(ext_valid)
    can_skip[:, 2:] = (ext[:, 2:] != ext[:, :-2]) & (ext[:, 2:] != blank)

    emit = lprobs.gather(2, ext[:, None, :].expand(-1, n_frames, -1))  # (B, F, S) log p of each extended label
    emit = emit.masked_fill(~ext_valid[:, None, :], NEG_INF)

    score = torch.full((bsz, ext_len), NEG_INF, device=lprobs.device)
    score[:, 0] = emit[:, 0, 0]
    score[:, 1] = torch.where(tgt_len > 0, emit[:, 0, 1], torch.full_like(emit[:, 0, 1], NEG_INF))
    backptr = torch.zeros((bsz, n_frames, ext_len), dtype=torch.long, device=lprobs.device)  # 0 stay, 1 step, 2 skip
    for t in range(1, n_frames):
        stay = score
        step = torch.cat([score.new_full((bsz, 1), NEG_INF), score[:, :-1]], 1)
        skip = torch.cat([score.new_full((bsz, 2), NEG_INF), score[:, :-2]], 1).masked_fill(~can_skip, NEG_INF)
        best, choice = torch.stack([stay, step, skip], 2).max(2)
        new = best + emit[:, t]
        active = (t < frame_len)[:, None]  # padding frames keep the previous scores
        score = torch.where(active, new, score)
        backptr[:, t] = torch.where(active, choice, torch.zeros_like(choice))

    # the path ends in the last label or the final blank
    last = (2 * tgt_len).clamp(max=ext_len - 1)
    end_blank = score.gather(1, last[:, None]).squeeze(1)
    end_label = torch.where(
        tgt_len > 0, score.gather(1, (last - 1).clamp(min=0)[:, None]).squeeze(1), torch.full_like(end_blank, NEG_INF)
    )
    final_score = torch.maximum(end_blank, end_label)
    state = torch.where(end_label > end_blank, last - 1, last)

    alignment = targets.new_full((bsz, n_frames), blank)
    for t in range(n_frames - 1, -1, -1):
        active = t < frame_len
        label = ext.gather(1, state[:, None]).squeeze(1)
        alignment[:, t] = torch.where(active, label, alignment[:, t])
        move = backptr[:, t].gather(1, state[:, None]).squeeze(1)
        state = torch.where(active, state - move, state)
    alignment = alignment.masked_fill(~torch.isfinite(final_score)[:, None], blank)
    return alignment, final_score
