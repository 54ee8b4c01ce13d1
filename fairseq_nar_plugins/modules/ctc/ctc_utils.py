"""Connectionist Temporal Classification (CTC) for non-autoregressive decoders.

A CTC decoder emits one distribution per *frame*; a target of ``L`` tokens is read off a frame sequence by merging
repeated symbols and then removing the blank symbol. Here the number of frames is a fixed multiple of the source
length (``--upsample-ratio``), so that one decoder pass can emit a target longer than its source.

Conventions used throughout the package:

* ``src_lengths``: number of non-pad source tokens per sentence, ``<s>`` and ``</s>`` included (as fairseq counts
  them); the decoder has ``num_frames(src_lengths, ratio) = round(ratio * src_lengths)`` frames per sentence.
* CTC targets are the target tokens *without* ``<s>`` / ``</s>``; decoded outputs get them added back so that
  fairseq's generator and scorers see the usual ``[<s>, w1 ... wn, </s>]`` rows.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nat.source_copy import gather_source, num_frames, ratio_copy_index  # noqa: F401  (num_frames: CTC's frames)

DEFAULT_BLANK_SYMBOL = "<ctc_blank>"


def add_blank_symbol(dictionary, symbol: str = DEFAULT_BLANK_SYMBOL) -> int:
    """Return the index of the CTC blank ``symbol`` in a fairseq ``Dictionary``, adding it if it is not there.

    An existing symbol (for example ``<unk>``, as DEER does with XLM-R vocabularies) is reused.
    """
    if symbol in dictionary.indices:
        return dictionary.index(symbol)
    return dictionary.add_symbol(symbol)


def ctc_required_frames(tokens) -> int:
    """Fewest frames that can emit ``tokens`` under CTC: one per token plus a blank between equal neighbours.

    ``tokens`` is a 1-D sequence of target token ids (no padding, no ``<s>``/``</s>``).
    """
    tokens = list(tokens)
    return len(tokens) + sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)


def upsample_states(states: Tensor, padding_mask: Tensor, ratio: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Copy every source position onto ``ratio`` consecutive decoder frames.

    Args:
        states: encoder states, ``(B, S, C)``.
        padding_mask: ``(B, S)`` bool, True at source padding (left or right padding both work).
        ratio: frames per source token (any positive float; frame ``j`` reads source token ``floor(j / ratio)``).

    Returns:
        ``(frames, frame_padding_mask, source_index)``: ``frames`` of shape ``(B, F, C)`` with ``F`` the longest
        ``num_frames`` in the batch, right-padded with zeros; ``frame_padding_mask`` ``(B, F)`` True at padding
        frames; ``source_index`` ``(B, F)`` the source position each frame copies (0 at padding frames).
    """
    index, frame_padding_mask = ratio_copy_index((~padding_mask).sum(1), ratio)
    real_first = padding_mask.long().argsort(dim=1, stable=True)
    source_index = real_first.gather(1, index).masked_fill(frame_padding_mask, 0)
    return gather_source(states, padding_mask, index, frame_padding_mask), frame_padding_mask, source_index


def ctc_loss(
    lprobs: Tensor,
    frame_padding_mask: Tensor,
    targets: Tensor,
    target_padding_mask: Tensor,
    blank: int,
    label_smoothing: float = 0.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """CTC loss per sentence, through ``torch.nn.functional.ctc_loss``, with optional label smoothing.

    Args:
        lprobs: log-probabilities over the vocabulary, ``(B, F, V)``.
        frame_padding_mask: ``(B, F)`` True at padding frames.
        targets: target token ids, ``(B, L)``, without ``<s>``/``</s>``.
        target_padding_mask: ``(B, L)`` True at padding.
        blank: index of the blank symbol.
        label_smoothing: epsilon; the smoothed loss is ``(1 - eps) * nll + eps * mean_v(-log p_v)`` where the second
            term is averaged over the real frames of the sentence (the usual CTC label smoothing of NAT work).

    Returns:
        ``(loss, nll, infinite)``, each of shape ``(B,)``: the (smoothed) loss and the plain negative log-likelihood
        ``-log p(y|x)`` summed over alignments (0 where infinite), and a bool mask of sentences whose target cannot
        be aligned to their frames (infinite loss; their gradient is zero).
    """
    input_lengths = (~frame_padding_mask).sum(1)
    target_lengths = (~target_padding_mask).sum(1)

    def nll_per_sentence(zero_infinity):
        return F.ctc_loss(
            lprobs.transpose(0, 1).float(),  # (F, B, V)
            targets.masked_fill(target_padding_mask, 0),
            input_lengths,
            target_lengths,
            blank=blank,
            reduction="none",
            zero_infinity=zero_infinity,
        )

    nll = nll_per_sentence(zero_infinity=False)
    infinite = ~torch.isfinite(nll)
    if infinite.any():  # recompute with zero_infinity so that those rows get a zero gradient instead of NaN
        nll = nll_per_sentence(zero_infinity=True)
    loss = nll
    if label_smoothing > 0:
        real = (~frame_padding_mask).to(lprobs.dtype)
        smooth = -(lprobs.float().mean(-1) * real).sum(1) / real.sum(1).clamp(min=1)
        loss = (1 - label_smoothing) * nll + label_smoothing * smooth.masked_fill(infinite, 0.0)
    return loss, nll, infinite


# how the ``ctc`` criterion reduces a batch's CTC terms to one number (see ctc_objective)
CTC_NORMALIZATIONS = ("target_length", "frames")


def ctc_objective(
    lprobs: Tensor,
    frame_padding_mask: Tensor,
    targets: Tensor,
    target_padding_mask: Tensor,
    blank: int,
    label_smoothing: float = 0.0,
    normalization: str = "target_length",
) -> Tuple[Tensor, Tensor, Tensor]:
    """The batch's CTC objective (a scalar), with label smoothing, in one of two normalisations.

    With ``nll_b = -log p(y_b | x_b)``, ``F_b`` the real frames and ``L_b`` the target length of sentence ``b``,
    ``u_b = sum over its real frames of mean_v(-log p_v)`` (the uniform-label cross-entropy) and ``eps`` the
    label smoothing:

    * ``target_length`` (fairseq ``nat_loss``'s per-token mean): ``mean_b [((1 - eps) nll_b + eps u_b / F_b) / L_b]``.
      The smoothing term is a per-frame mean, then divided by ``L_b`` like the likelihood.
    * ``frames`` (the DEER authors' ``deer_ctc_loss``): ``(1 - eps) sum_b nll_b / sum_b F_b + eps sum_b u_b /
      sum_b F_b``, i.e. the likelihood per frame of the batch and ``eps`` times the mean ``-log p`` over every real
      frame and symbol. (Their code also averages ``log p`` over padding frames; here only real frames count.)

    Sentences whose target cannot be aligned (``infinite``) contribute nothing, and their frames are left out of
    ``frames``' denominators.

    Args:
        lprobs: ``(B, F, V)`` log-probabilities.
        frame_padding_mask: ``(B, F)`` True at padding frames.
        targets: ``(B, L)`` target ids without ``<s>``/``</s>``; target_padding_mask ``(B, L)`` True at padding.
        blank: the blank symbol.
        label_smoothing: ``eps``.
        normalization: one of :data:`CTC_NORMALIZATIONS`.

    Returns:
        ``(loss, nll, infinite)``: the scalar objective, the scalar unsmoothed likelihood term in the same
        normalisation (``mean_b nll_b / L_b``, or ``sum_b nll_b / sum_b F_b``), and the ``(B,)`` bool mask of
        unalignable sentences.
    """
    if normalization not in CTC_NORMALIZATIONS:
        raise ValueError(f"--ctc-normalization {normalization!r}: expected one of {', '.join(CTC_NORMALIZATIONS)}")
    _, nll, infinite = ctc_loss(lprobs, frame_padding_mask, targets, target_padding_mask, blank)
    real = (~frame_padding_mask).float()
    frames = real.sum(1)
    ok = (~infinite).float()
    uniform = -(lprobs.float().mean(-1) * real).sum(1) * ok  # u_b, 0 for unalignable sentences
    if normalization == "target_length":
        lengths = (~target_padding_mask).sum(1).clamp(min=1).float()
        smooth = uniform / frames.clamp(min=1)
        per_sentence = (1 - label_smoothing) * nll + label_smoothing * smooth if label_smoothing > 0 else nll
        return (per_sentence / lengths).mean(), (nll / lengths).mean(), infinite
    total = (frames * ok).sum().clamp(min=1)
    nll_term = nll.sum() / total
    loss = (1 - label_smoothing) * nll_term + label_smoothing * uniform.sum() / total if label_smoothing > 0 \
        else nll_term
    return loss, nll_term, infinite


def max_excluding(values: Tensor, excluded: Sequence[int] = ()) -> Tuple[Tensor, Tensor]:
    """``values.max(-1)`` with the ids in ``excluded`` never chosen, without a copy of ``values``.

    The maximum of each contiguous range of allowed ids is taken on a view of ``values`` (no ``(..., V)`` copy with
    ``-inf`` written in), then the best range wins; ties go to the lowest id, as with ``max``.

    Args:
        values: ``(..., V)`` scores (logits or log-probabilities).
        excluded: ids in ``[0, V)`` that may not be chosen.

    Returns:
        ``(best, index)`` of shape ``values.shape[:-1]``.
    """
    size = values.size(-1)
    excluded = sorted({int(i) for i in excluded})
    if excluded and not 0 <= excluded[0] <= excluded[-1] < size:
        raise ValueError(f"excluded ids {excluded} outside the {size} classes")
    ranges, start = [], 0
    for i in excluded + [size]:
        if i > start:
            ranges.append((start, i))
        start = i + 1
    if not ranges:
        raise ValueError(f"every one of the {size} classes is excluded")
    best, index = None, None
    for lo, hi in ranges:
        b, i = values[..., lo:hi].max(-1)
        i = i + lo
        if best is None:
            best, index = b, i
        else:
            better = b > best  # strictly: on a tie the lower range keeps it
            best, index = torch.where(better, b, best), torch.where(better, i, index)
    return best, index


def ctc_greedy_collapse(
    lprobs: Tensor, frame_padding_mask: Tensor, blank: int, pad: int, excluded: Sequence[int] = ()
) -> Tuple[Tensor, Tensor]:
    """Best-path CTC decoding: argmax per frame, merge repeats, drop blanks.

    Args:
        lprobs: ``(B, F, V)`` log-probabilities (logits give the same tokens).
        frame_padding_mask: ``(B, F)`` True at padding frames.
        blank, pad: symbol indices.
        excluded: ids never emitted (the argmax skips them, see :func:`max_excluding`; ``lprobs`` is not copied).

    Returns:
        ``(tokens, scores)`` of shape ``(B, L)``, right-padded with ``pad`` / 0: the collapsed token ids and, for
        each, the log-probability of the first frame of its run of repeats.
    """
    scores, tokens = max_excluding(lprobs, excluded)  # (B, F)
    prev = torch.cat([tokens.new_full((tokens.size(0), 1), -1), tokens[:, :-1]], dim=1)
    keep = (tokens != blank) & (tokens != prev) & ~frame_padding_mask
    return compact(tokens, keep, pad), compact(scores, keep, 0.0)


def compact(values: Tensor, keep: Tensor, fill) -> Tensor:
    """Move the entries of ``values`` (B, T) where ``keep`` (B, T) is True to the front of their row, in order.

    Returns a (B, K) tensor, K the largest number of kept entries in a row, filled with ``fill`` after them.
    """
    max_len = int(keep.sum(1).max()) if keep.numel() else 0
    out = values.new_full((values.size(0), max_len + 1), fill)
    position = (keep.cumsum(1) - 1).masked_fill(~keep, max_len)  # kept -> 0..n-1, dropped -> overflow column
    return out.scatter(1, position, values)[:, :max_len]


def strip_bos_eos(tokens: Tensor, bos: int, eos: int, pad: int) -> Tensor:
    """Target rows ``[<s>, w1..wn, </s>, <pad>...]`` (any padding side) -> ``[w1..wn, <pad>...]``, shape (B, L)."""
    keep = tokens.ne(pad) & tokens.ne(bos) & tokens.ne(eos)
    return compact(tokens, keep, pad)


def add_bos_eos(tokens: Tensor, scores: Tensor, bos: int, eos: int, pad: int):
    """Right-padded ``[w1..wn, <pad>...]`` -> ``[<s>, w1..wn, </s>, <pad>...]``, scores 0 at ``<s>``/``</s>``.

    Returns ``(tokens, scores)`` of shape (B, L + 2).
    """
    lengths = tokens.ne(pad).sum(1)
    out = torch.cat([tokens.new_full((tokens.size(0), 1), bos), tokens, tokens.new_full((tokens.size(0), 1), pad)], 1)
    out.scatter_(1, (lengths + 1)[:, None], eos)
    out_scores = torch.cat([scores.new_zeros(scores.size(0), 1), scores, scores.new_zeros(scores.size(0), 1)], 1)
    after_tokens = torch.arange(out.size(1), device=out.device)[None, :] > lengths[:, None]  # </s> and padding
    return out, out_scores.masked_fill(after_tokens, 0.0)
