"""Reordering corruptions: BnB's token permutation and ELMER's (BART's) sentence shuffling.

Both keep the multiset of tokens and the length; ``origin`` is a permutation of the positions.
"""
import math
from typing import Iterable, Optional, Tuple

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


def permute_tokens(
    tokens: Tensor,
    generator: Optional[torch.Generator] = None,
    *,
    rate: float = 0.5,
    protected: Protected = (),
) -> CorruptionResult:
    """BnB's permutation language modeling: "We randomly permute tokens in a sequence and predict the original order
    of the tokens" (paper 000 §2.1), with "50% probability of permuting for permutation LM" (its A.1).

    Definition: of the ``m`` non-protected tokens, ``k = floor(rate * m + u)`` (``E[k] = rate * m``) are selected
    uniformly without replacement, and the selected tokens are rearranged among the selected positions by a uniformly
    random permutation; every other token stays where it is. The multiset of tokens is preserved.

    What the authors' code does instead (``pretrain.py`` of aistairc/BERT-NAR-BERT, read for NOTES.md §3): it permutes
    ``int(len * 1/6)`` positions, not 50 %; it draws them with ``np.random.choice`` *with* replacement, so repeated
    positions overwrite each other and the result is not a permutation (tokens are duplicated and lost); and its range
    ``arange(1, len - 1)`` on a length that already excludes ``[CLS]``/``[SEP]`` never touches the last content token.
    We follow the paper: rate 0.5, a true permutation, every non-protected token eligible.

    Returns:
        :class:`CorruptionResult` whose ``origin`` is the permutation (``tokens_out = tokens[origin]``) and whose
        ``corrupted`` marks the positions whose token moved (``origin[i] != i``). A uniformly random permutation of
        ``k`` items leaves one fixed point on average, so the moved fraction is ``rate - 1/m`` in expectation.
    """
    check_tokens(tokens)
    check_rate("rate", rate)
    n = tokens.numel()
    candidates = maskable_positions(tokens, protected).nonzero().squeeze(1)
    k = num_to_select(candidates.numel(), rate, generator)
    if k < 2:
        return CorruptionResult.identity(tokens)
    selected = candidates[torch.randperm(candidates.numel(), generator=generator)[:k]]
    origin = torch.arange(n)
    origin[selected] = selected[torch.randperm(k, generator=generator)]
    return CorruptionResult(tokens[origin], origin, origin != torch.arange(n))


def sentence_bounds(tokens: Tensor, full_stop_ids: Iterable[int], protected: Protected = ()) -> Tuple[Tensor, Tensor]:
    """Split a block into sentences "according to full stops" (ELMER, paper 001 §4.2).

    The first token stays outside every sentence if it is protected (``<s>``), and so does the last (the block's
    final ``</s>``). The rest is cut after each maximal run of full-stop tokens (a sentence keeps its full stop, and
    ``". </s>"`` ends a single sentence); the last sentence may end without one.

    Returns:
        ``(starts, ends)``: LongTensors ``(num_sentences,)`` of half-open ranges ``[start, end)`` into ``tokens``,
        consecutive and covering everything but the protected first/last token.
    """
    check_tokens(tokens)
    n = tokens.numel()
    prot = as_id_tensor(protected)
    lo = 1 if n > 0 and bool(torch.isin(tokens[:1], prot).all()) else 0
    hi = n - 1 if n - 1 >= lo and n > 0 and bool(torch.isin(tokens[-1:], prot).all()) else n
    body = tokens[lo:hi]
    if body.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    stop = torch.isin(body, as_id_tensor(full_stop_ids))
    next_is_stop = torch.cat([stop[1:], torch.zeros(1, dtype=torch.bool)])
    ends = (stop & ~next_is_stop).nonzero().squeeze(1) + 1
    if ends.numel() == 0 or int(ends[-1]) != body.numel():
        ends = torch.cat([ends, torch.tensor([body.numel()])])
    starts = torch.cat([torch.zeros(1, dtype=torch.long), ends[:-1]])
    return starts + lo, ends + lo


def shuffle_sentences(
    tokens: Tensor,
    generator: Optional[torch.Generator] = None,
    *,
    full_stop_ids: Iterable[int],
    rate: float = 1.0,
    protected: Protected = (),
) -> CorruptionResult:
    """ELMER's sentence shuffling: "The original text is first divided into sentences according to full stops, and
    then these sentences are randomly shuffled" (paper 001 §4.2, following BART).

    Definition: split with :func:`sentence_bounds`; of the ``s`` sentences, ``ceil(rate * s)`` are chosen uniformly
    and permuted uniformly among their own slots (``rate = 1``, ELMER's setting, shuffles all of them). This is the
    procedure of fairseq's ``DenoisingDataset.permute_sentences`` (BART), with its random draws taken from
    ``generator`` instead of torch's global generator; with ``full_stop_ids = {</s>}`` and no two consecutive full
    stops it produces exactly fairseq's output for the same random stream (tested).

    Whole sentences move, each with its full stop, even when that full stop is a protected id (a line's ``</s>``):
    no token is replaced or removed, and the protected first/last tokens stay in place.

    Returns:
        :class:`CorruptionResult` with ``origin`` the position permutation and ``corrupted`` marking the tokens of
        every sentence that now sits in another slot (protected tokens excepted). A sentence left in its own slot is
        not marked even if it shifted (its neighbours changed length), as text infilling does not mark shifted tokens.
    """
    check_tokens(tokens)
    check_rate("rate", rate)
    n = tokens.numel()
    starts, ends = sentence_bounds(tokens, full_stop_ids, protected)
    num_sentences = starts.numel()
    num_to_permute = math.ceil(round(num_sentences * rate, 6))
    if num_sentences < 2 or num_to_permute < 2:
        return CorruptionResult.identity(tokens)
    substitutions = torch.randperm(num_sentences, generator=generator)[:num_to_permute]
    ordering = torch.arange(num_sentences)
    ordering[substitutions] = substitutions[torch.randperm(num_to_permute, generator=generator)]

    pieces = [torch.arange(int(starts[i]), int(ends[i])) for i in ordering.tolist()]
    origin = torch.cat([torch.arange(0, int(starts[0]))] + pieces + [torch.arange(int(ends[-1]), n)])
    moved = torch.zeros(n, dtype=torch.bool)
    for slot, sentence in enumerate(ordering.tolist()):
        if sentence != slot:
            moved[int(starts[sentence]): int(ends[sentence])] = True
    moved &= maskable_positions(tokens, protected)
    return CorruptionResult(tokens[origin], origin, moved)
