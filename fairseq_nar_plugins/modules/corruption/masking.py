"""Length-preserving masking: BERT token masking (BnB's masked LM) and MLAE span masking.

Both keep every token at its position (``origin`` is the identity), so the decoder's target position ``t`` is the
encoder's position ``t``.
"""
from typing import Optional

import torch
from torch import Tensor

from .core import (
    CorruptionResult,
    Protected,
    as_id_tensor,
    check_rate,
    check_tokens,
    maskable_positions,
    num_to_select,
)


def mask_tokens(
    tokens: Tensor,
    generator: Optional[torch.Generator] = None,
    *,
    mask_idx: int,
    rate: float = 0.15,
    random_token_prob: float = 0.1,
    leave_unmasked_prob: float = 0.1,
    random_ids: Optional[Protected] = None,
    protected: Protected = (),
) -> CorruptionResult:
    """BERT's masked-LM corruption, as BnB uses it ("We employ the self-supervised learning strategy adopted in BERT.
    We randomly mask the tokens in each sequence", paper 000 §2.1; "15% probability of masking", its A.1).

    Definition:

    1. Of the ``m`` non-protected tokens, ``k = floor(rate * m + u)`` (``u ~ U[0,1)``, so ``E[k] = rate * m``; the
       count fairseq's ``MaskTokensDataset`` draws) are *selected*, uniformly without replacement.
    2. Each selected token independently is left unchanged with probability ``leave_unmasked_prob``, replaced by a
       token drawn uniformly from ``random_ids`` with probability ``random_token_prob``, and replaced by ``mask_idx``
       otherwise (BERT's 80 / 10 / 10 with the defaults).

    Args:
        tokens: LongTensor ``(S,)`` of token ids.
        generator: torch random generator (``None``: torch's global one).
        mask_idx: id of the mask symbol.
        rate: fraction of non-protected tokens selected.
        random_token_prob, leave_unmasked_prob: shares of the selected tokens replaced by a random token / kept.
        random_ids: ids a random replacement is drawn from (required when ``random_token_prob > 0``; the task passes
            every ordinary symbol of the dictionary, specials and the mask excluded).
        protected: ids never selected (e.g. ``<s>``, ``</s>``, ``<pad>``, the mask).

    Returns:
        :class:`CorruptionResult` with ``origin`` the identity and ``corrupted`` = the selected positions (all three
        kinds, as BERT's loss covers every selected token, including the unchanged ones).
    """
    check_tokens(tokens)
    check_rate("rate", rate)
    check_rate("random_token_prob", random_token_prob)
    check_rate("leave_unmasked_prob", leave_unmasked_prob)
    if random_token_prob + leave_unmasked_prob > 1.0:
        raise ValueError("random_token_prob + leave_unmasked_prob must be <= 1")
    random_ids = as_id_tensor(random_ids) if random_ids is not None else torch.empty(0, dtype=torch.long)
    if random_token_prob > 0 and random_ids.numel() == 0:
        raise ValueError("random_token_prob > 0 needs the ids to draw random replacements from (random_ids)")

    candidates = maskable_positions(tokens, protected).nonzero().squeeze(1)
    k = num_to_select(candidates.numel(), rate, generator)
    if k == 0:
        return CorruptionResult.identity(tokens)
    selected = candidates[torch.randperm(candidates.numel(), generator=generator)[:k]]
    u = torch.rand(k, generator=generator)
    keep = u < leave_unmasked_prob
    rand = (u >= leave_unmasked_prob) & (u < leave_unmasked_prob + random_token_prob)
    out = tokens.clone()
    out[selected[~keep & ~rand]] = mask_idx
    n_rand = int(rand.sum())
    if n_rand:
        out[selected[rand]] = random_ids[torch.randint(random_ids.numel(), (n_rand,), generator=generator)]
    corrupted = torch.zeros(tokens.numel(), dtype=torch.bool)
    corrupted[selected] = True
    return CorruptionResult(out, torch.arange(tokens.numel()), corrupted)


def random_segmentation(num_items: int, num_segments: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """A uniformly random composition of ``num_items`` into ``num_segments`` positive parts.

    Returns a LongTensor ``(num_segments,)`` of lengths >= 1 summing to ``num_items`` (the cut points are
    ``num_segments - 1`` distinct positions drawn uniformly among the ``num_items - 1`` gaps, as T5's
    ``random_spans_noise_mask`` does).
    """
    if not 1 <= num_segments <= num_items:
        raise ValueError(f"cannot split {num_items} items into {num_segments} non-empty segments")
    cuts = torch.randperm(num_items - 1, generator=generator)[: num_segments - 1].sort().values + 1
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), cuts, torch.tensor([num_items])])
    return bounds[1:] - bounds[:-1]


def span_mask(
    tokens: Tensor,
    generator: Optional[torch.Generator] = None,
    *,
    mask_idx: int,
    rate: float = 0.15,
    mean_span_length: float = 3.0,
    protected: Protected = (),
) -> CorruptionResult:
    """MLAE's span masking: "we set the mask ratio as 15% ... We randomly mask consecutive spans rather than tokens.
    The average length of span is 3 tokens" (paper 003 §4.1; 15 % again in its Table 8).

    The paper fixes the ratio and the mean span length but not the length distribution. This follows T5's span
    corruption, which the same paper uses for its T5 baseline with exactly these two numbers (noise density 0.15,
    mean noise span length 3); unlike T5, the masked spans stay in place (one mask per masked token, so the decoder
    reconstructs "the masked tokens at the corresponding positions", §3.1), and the spans are placed uniformly rather
    than always ending the sequence with one.

    Definition, over the ``m`` non-protected tokens taken in order:

    1. ``n = round(rate * m)`` tokens are masked (at least 1 and at most ``m - 1`` when ``m >= 2``; none if ``m < 2``)
       in ``K = max(1, round(n / mean_span_length))`` spans (fewer if the unmasked tokens cannot separate them);
    2. span lengths are a uniformly random composition of ``n`` into ``K`` positive parts (mean exactly ``n / K``);
    3. the ``m - n`` unmasked tokens are split uniformly at random into ``K + 1`` gaps, the ``K - 1`` inner gaps
       non-empty, so spans never touch: the masked positions form exactly ``K`` maximal runs;
    4. every masked token is replaced by ``mask_idx``.

    Spans are consecutive among the non-protected tokens: a protected token inside a span is skipped, not masked.

    Returns:
        :class:`CorruptionResult` with ``origin`` the identity and ``corrupted`` = the masked positions.
    """
    check_tokens(tokens)
    check_rate("rate", rate)
    if mean_span_length < 1:
        raise ValueError(f"mean_span_length must be >= 1, got {mean_span_length}")
    candidates = maskable_positions(tokens, protected).nonzero().squeeze(1)
    m = candidates.numel()
    if m < 2 or rate == 0.0:
        return CorruptionResult.identity(tokens)
    num_noise = min(max(int(round(rate * m)), 1), m - 1)
    num_clean = m - num_noise
    num_spans = min(max(1, int(round(num_noise / mean_span_length))), num_clean + 1)
    noise_lengths = random_segmentation(num_noise, num_spans, generator)
    gaps = random_segmentation(num_clean + 2, num_spans + 1, generator)
    gaps[0] -= 1
    gaps[-1] -= 1
    lengths = torch.stack([gaps[:-1], noise_lengths], dim=1).reshape(-1)
    lengths = torch.cat([lengths, gaps[-1:]])
    labels = torch.arange(lengths.numel()) % 2 == 1
    compact = torch.repeat_interleave(labels, lengths)
    masked = candidates[compact]
    out = tokens.clone()
    out[masked] = mask_idx
    corrupted = torch.zeros(tokens.numel(), dtype=torch.bool)
    corrupted[masked] = True
    return CorruptionResult(out, torch.arange(tokens.numel()), corrupted)
