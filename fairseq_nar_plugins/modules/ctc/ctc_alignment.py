"""The single best CTC alignment (Viterbi path) of a target to decoder frames, in plain PyTorch (CPU and GPU).

Glancing training for CTC models (DEER, paper 002 §3.1, after Qian et al. 2021 and Gu & Kong 2021) needs, for every
frame, the symbol that the most probable alignment puts there. The authors' code computes it with a CUDA extension;
this is the same dynamic programme over the blank-extended target ``[blank, y1, blank, y2, ..., yL, blank]``,
vectorised over the batch and the states and looped over frames (three kernels a frame forward, two back).
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
    device = lprobs.device
    tgt_len = (~target_padding_mask).sum(1)
    frame_len = (~frame_padding_mask).sum(1)
    ext_len = 2 * targets.size(1) + 1
    # extended label sequence: blank at even positions, targets at odd positions
    ext = targets.new_full((bsz, ext_len), blank)
    ext[:, 1::2] = targets.masked_fill(target_padding_mask, blank)
    ext_valid = torch.arange(ext_len, device=device)[None, :] < (2 * tgt_len + 1)[:, None]
    # a path may skip the blank between s-2 and s when the labels at s and s-2 differ (and s is a label)
    can_skip = torch.zeros_like(ext_valid)
    can_skip[:, 2:] = (ext[:, 2:] != ext[:, :-2]) & (ext[:, 2:] != blank)

    # (B, F, S) log p of each extended label (gathered before the cast: no float copy of the (B, F, V) input)
    emit = lprobs.gather(2, ext[:, None, :].expand(-1, n_frames, -1)).float()
    emit = emit.masked_fill(~ext_valid[:, None, :], NEG_INF)
    score = torch.full((bsz, ext_len), NEG_INF, device=device)
    score[:, 0] = emit[:, 0, 0]
    score[:, 1] = torch.where(tgt_len > 0, emit[:, 0, 1], torch.full_like(emit[:, 0, 1], NEG_INF))

    # The recursion over frames, seven small kernels a frame and no reduction over a tiny dimension: the scores sit
    # after two -inf columns, so that "step" (from s - 1) and "skip" (from s - 2) are views; ties prefer staying,
    # then stepping. Padding frames of a row allow "stay" only, with log p 0: its scores and path stay as they were
    # at its last real frame, and no per-frame masking is needed.
    inactive = (torch.arange(n_frames, device=device)[:, None] >= frame_len[None, :])[:, :, None]  # (F, B, 1)
    emit_t = emit.transpose(0, 1).masked_fill(inactive, 0.0).contiguous()  # (F, B, S)
    step_bias = torch.zeros(inactive.shape, device=device).masked_fill(inactive, NEG_INF)  # (F, B, 1)
    skip_bias = torch.zeros((bsz, ext_len), device=device).masked_fill(~can_skip, NEG_INF) + step_bias  # (F, B, S)
    buf = torch.full((bsz, ext_len + 2), NEG_INF, device=device)
    buf[:, 2:] = score
    stay, step, skip = buf[:, 2:], buf[:, 1:-1], buf[:, :-2]  # views: they follow every write into buf
    stayed, stepped = [], []
    for t in range(1, n_frames):
        from_step = step + step_bias[t]
        best = torch.maximum(torch.maximum(stay, from_step), skip + skip_bias[t])
        stayed.append(stay == best)
        stepped.append(from_step == best)
        torch.add(best, emit_t[t], out=stay)
    score = stay
    backptr = torch.zeros((n_frames, bsz, ext_len), dtype=torch.long, device=device)  # 0 stay, 1 step, 2 skip
    if n_frames > 1:
        backptr[1:] = torch.where(torch.stack(stayed), 0, 2 - torch.stack(stepped).long())

    # the path ends in the last label or the final blank
    last = (2 * tgt_len).clamp(max=ext_len - 1)
    end_blank = score.gather(1, last[:, None]).squeeze(1)
    end_label = torch.where(
        tgt_len > 0, score.gather(1, (last - 1).clamp(min=0)[:, None]).squeeze(1), torch.full_like(end_blank, NEG_INF)
    )
    final_score = torch.maximum(end_blank, end_label)
    state = torch.where(end_label > end_blank, last - 1, last)[:, None]

    states = [state]
    for t in range(n_frames - 1, 0, -1):
        state = state - backptr[t].gather(1, state)
        states.append(state)
    alignment = ext.gather(1, torch.cat(states[::-1], 1))
    alignment = alignment.masked_fill(frame_padding_mask | ~torch.isfinite(final_score)[:, None], blank)
    return alignment, final_score
