"""ELMER's (BART's) text infilling: Poisson-length spans, each replaced by a single mask.

This is fairseq's ``DenoisingDataset.add_whole_word_mask`` with ``--mask-length span-poisson --replace-length 1``
(the BART setting) followed by its ``add_insertion_noise`` for the zero-length spans, rewritten step for step so that

* its random draws come from a ``torch.Generator`` (fairseq's draw from torch's *global* generator although the
  dataset only seeds numpy per item, so its noise is not reproducible per (seed, epoch, index));
* any set of protected ids is respected, not only the first and last position (spans neither start on nor run
  across a protected token, e.g. the ``</s>`` ending each line of a block);
* random replacements are drawn from the ids the caller allows (fairseq draws from ``[1, len(vocab))``, which
  includes the special symbols and assumes they sit at the start of the dictionary);
* it reports which input tokens were removed into a span (``corrupted``) and where each output token came from;
* an output is never longer than its input: zero-length spans insert at most as many masks as the other spans
  removed tokens, so blocks still fit ``--max-source-positions`` (this cap only binds in very short blocks).

With the first and last tokens the only protected ones, no random replacement and the cap not binding, it gives
exactly fairseq's output for the same random stream (tested).
"""
import functools
import math
from typing import Optional

import torch
from torch import Tensor

from .core import CorruptionResult, Protected, as_id_tensor, check_rate, check_tokens, maskable_positions


@functools.lru_cache(maxsize=8)
def poisson_span_distribution(poisson_lambda: float = 3.0) -> Tensor:
    """Span-length probabilities ``P(len = k)``, ``k = 0, 1, ...``: the Poisson(lambda) pmf cut where it falls below
    1e-7 and renormalised, computed exactly as fairseq's ``DenoisingDataset`` builds its ``Categorical``.

    Returns a FloatTensor ``(K,)``; do not modify it (it is cached).
    """
    if poisson_lambda <= 0:
        raise ValueError(f"the Poisson lambda must be positive, got {poisson_lambda}")
    lambda_to_the_k, e_to_the_minus_lambda, k_factorial = 1, math.exp(-poisson_lambda), 1
    ps = []
    for k in range(0, 128):
        ps.append(e_to_the_minus_lambda * lambda_to_the_k / k_factorial)
        lambda_to_the_k *= poisson_lambda
        k_factorial *= k + 1
        if ps[-1] < 0.0000001:
            break
    return torch.distributions.Categorical(torch.FloatTensor(ps)).probs


def sample_span_lengths(num_to_mask: int, span_probs: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Span lengths for a masking budget of ``num_to_mask`` tokens (fairseq's procedure).

    Lengths are drawn i.i.d. from ``span_probs`` (``num_to_mask`` at a time) until their sum reaches the budget; the
    list is cut at the first length that reaches it, and that last length is trimmed so that the lengths sum to
    exactly ``num_to_mask``. Zero lengths are kept (they become inserted masks).

    Returns a LongTensor ``(num_spans,)`` summing to ``num_to_mask``.
    """
    def draw():
        return torch.multinomial(span_probs.reshape(1, -1), num_to_mask, True, generator=generator)[0]

    lengths = draw()
    cum_length = torch.cumsum(lengths, 0)
    while cum_length[-1] < num_to_mask:
        lengths = torch.cat([lengths, draw()], dim=0)
        cum_length = torch.cumsum(lengths, 0)
    i = int((cum_length >= num_to_mask).nonzero()[0])
    lengths[i] = num_to_mask - (0 if i == 0 else cum_length[i - 1])
    return lengths[: i + 1]


def text_infill(
    tokens: Tensor,
    generator: Optional[torch.Generator] = None,
    *,
    mask_idx: int,
    rate: float = 0.15,
    poisson_lambda: float = 3.0,
    random_token_prob: float = 0.0,
    random_ids: Optional[Protected] = None,
    protected: Protected = (),
) -> CorruptionResult:
    """ELMER's text infilling: "we sample 15% spans with lengths drawn from a Poisson distribution (lambda=3).
    Following BART, each span is replaced with a single "[MASK]" token and the model can learn how many tokens in a
    span should be predicted" (paper 001 §4.2).

    "15% spans" is read as fairseq's ``--mask 0.15``: 15 % of the tokens are masked, in Poisson-length spans.

    Definition, with ``m`` non-protected tokens:

    1. budget ``B = ceil(rate * m)``; span lengths from :func:`sample_span_lengths` (sum exactly ``B``);
    2. each non-empty span starts at a distinct non-protected position drawn uniformly; it covers its start and the
       following ``len - 1`` tokens, stopping early before a protected token or the end; overlapping spans merge;
    3. the start of each span becomes one ``mask_idx`` (or, with probability ``random_token_prob``, one token from
       ``random_ids``) and the rest of the span is deleted; adjacent spans stay separate masks;
    4. each zero-length span inserts one ``mask_idx`` at a uniformly drawn position strictly inside the sequence
       (at most as many as tokens were deleted in step 3).

    Returns:
        :class:`CorruptionResult`: ``tokens`` shorter than the input by the deleted tokens (plus insertions);
        ``origin[j]`` the input position of output token ``j``, a span's mask pointing at the span start, ``-1`` for
        inserted masks; ``corrupted`` the input positions covered by a span (the tokens the decoder must restore).
    """
    check_tokens(tokens)
    check_rate("rate", rate)
    check_rate("random_token_prob", random_token_prob)
    random_ids = as_id_tensor(random_ids) if random_ids is not None else torch.empty(0, dtype=torch.long)
    if random_token_prob > 0 and random_ids.numel() == 0:
        raise ValueError("random_token_prob > 0 needs the ids to draw random replacements from (random_ids)")
    n = tokens.numel()
    maskable = maskable_positions(tokens, protected)
    num_to_mask = int(math.ceil(round(int(maskable.sum()) * rate, 6)))  # round: 100 * 0.15 is 15.000000000000002
    if num_to_mask == 0:
        return CorruptionResult.identity(tokens)

    lengths = sample_span_lengths(num_to_mask, poisson_span_distribution(float(poisson_lambda)), generator)
    num_inserts = int((lengths == 0).sum())
    lengths = lengths[lengths > 0]
    word_starts = maskable.nonzero().squeeze(1)
    starts = word_starts[torch.randperm(word_starts.numel(), generator=generator)[: lengths.numel()]]
    mask_random = torch.rand(starts.numel(), generator=generator) < random_token_prob

    out = tokens.clone()
    out[starts] = mask_idx
    n_random = int(mask_random.sum())
    if n_random:
        out[starts[mask_random]] = _draw(random_ids, n_random, generator)
    to_keep = torch.ones(n, dtype=torch.bool)
    covered = torch.zeros(n, dtype=torch.bool)
    covered[starts] = True
    # cost of extending a span onto position i + 1: 1 for an ordinary token, more than any span for a protected
    # token or the end of the sequence (fairseq's "is_word_start[-1] = 255", generalised)
    barrier = n + 1
    step_cost = torch.full((n + 1,), barrier, dtype=torch.long)
    step_cost[:n][maskable] = 1
    remaining = lengths - 1
    indices = starts
    while indices.numel() > 0:
        remaining = remaining - step_cost[indices + 1]
        uncompleted = remaining >= 0
        indices = indices[uncompleted] + 1
        remaining = remaining[uncompleted]
        to_keep[indices] = False
        covered[indices] = True
    out = out[to_keep]
    origin = torch.arange(n)[to_keep]

    num_inserts = min(num_inserts, n - out.numel())
    if num_inserts > 0 and out.numel() >= 2:
        out, origin = _insert_masks(out, origin, num_inserts, mask_idx, random_token_prob, random_ids, generator)
    return CorruptionResult(out, origin, covered)


def _draw(ids: Tensor, count: int, generator: Optional[torch.Generator]) -> Tensor:
    return ids[torch.randint(ids.numel(), (count,), generator=generator)]


def _insert_masks(tokens, origin, count, mask_idx, random_token_prob, random_ids, generator):
    """fairseq's ``add_insertion_noise``: ``count`` new tokens at distinct positions in ``[1, len + count - 2]``, the
    first ``ceil(count * random_token_prob)`` of them random tokens, the others masks; their origin is -1."""
    total = tokens.numel() + count
    noise_indices = torch.randperm(total - 2, generator=generator)[:count] + 1
    noise_mask = torch.zeros(total, dtype=torch.bool)
    noise_mask[noise_indices] = True
    result = torch.full((total,), -1, dtype=torch.long)
    num_random = int(math.ceil(count * random_token_prob))
    result[noise_indices[num_random:]] = mask_idx
    if num_random:
        result[noise_indices[:num_random]] = _draw(random_ids, num_random, generator)
    result[~noise_mask] = tokens
    new_origin = torch.full((total,), -1, dtype=torch.long)
    new_origin[~noise_mask] = origin
    return result, new_origin
