"""What every corruption returns, and how corruptions compose.

A corruption is a function ``fn(tokens, generator) -> CorruptionResult`` over a 1-D LongTensor of token ids (the
other arguments are bound with :func:`functools.partial`). It never modifies ``tokens`` in place. The reconstruction
target is always the *input* sequence: corruptions may change length and order, so a result carries, besides the
corrupted tokens, the bookkeeping that relates them to the input:

``tokens``     LongTensor ``(S_out,)``: the corrupted sequence (what the encoder sees).
``origin``     LongTensor ``(S_out,)``: for each output position, the input position its token comes from, or ``-1``
               for a token that the corruption inserted (text infilling's masks for zero-length spans). A mask that
               replaces a span points at the span's first position; a masked token points at its own position.
``corrupted``  BoolTensor ``(S_in,)``: for each *input* position, whether the corruption acted on that token, i.e.
               whether a decoder that rebuilds the input must do more than copy it. Each corruption documents its
               own definition (selected for masking, moved by a permutation, removed into an infilled span).
               Protected tokens are never marked.

:func:`compose` chains corruptions and expresses the final ``origin`` and ``corrupted`` in coordinates of the
*original* sequence, which is the NAR decoder's target: ``corrupted[t]`` then says whether target position ``t`` is
one the loss covers under ``--loss-positions corrupted``.
"""
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

Protected = Union[Tensor, Iterable[int]]


@dataclass
class CorruptionResult:
    """Output of a corruption (see the module docstring for what each tensor holds)."""

    tokens: Tensor  # LongTensor (S_out,)
    origin: Tensor  # LongTensor (S_out,), input position or -1 for inserted tokens
    corrupted: Tensor  # BoolTensor (S_in,)

    @classmethod
    def identity(cls, tokens: Tensor) -> "CorruptionResult":
        """The result of a corruption that did nothing (no token selected)."""
        n = tokens.numel()
        return cls(tokens.clone(), torch.arange(n), torch.zeros(n, dtype=torch.bool))


Corruption = Callable[[Tensor, Optional[torch.Generator]], CorruptionResult]


def as_id_tensor(ids: Protected) -> Tensor:
    """A 1-D LongTensor of token ids from a tensor or any iterable of ints (e.g. a set of special ids)."""
    if isinstance(ids, Tensor):
        return ids.long().reshape(-1)
    return torch.tensor(sorted({int(i) for i in ids}), dtype=torch.long)


def check_tokens(tokens: Tensor) -> None:
    if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.dtype != torch.long:
        got = f"{tokens.dtype} of shape {tuple(tokens.shape)}" if isinstance(tokens, Tensor) else type(tokens).__name__
        raise TypeError(f"corruptions take a 1-D LongTensor of token ids, got {got}")


def check_rate(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def maskable_positions(tokens: Tensor, protected: Protected) -> Tensor:
    """BoolTensor ``(S,)``: True where the token is not one of the ``protected`` ids (those are never corrupted)."""
    return ~torch.isin(tokens, as_id_tensor(protected))


def num_to_select(num_candidates: int, rate: float, generator: Optional[torch.Generator]) -> int:
    """``floor(rate * m + u)`` with ``u ~ U[0, 1)``: an unbiased integer count (expected value exactly ``rate * m``),
    the rounding fairseq's ``MaskTokensDataset`` uses."""
    if num_candidates == 0 or rate == 0.0:
        return 0
    u = float(torch.rand(1, generator=generator))
    return min(num_candidates, int(rate * num_candidates + u))


def compose(tokens: Tensor, corruptions: Sequence[Corruption], generator: Optional[torch.Generator] = None
            ) -> CorruptionResult:
    """Apply ``corruptions`` in order; return the final tokens with ``origin`` / ``corrupted`` relative to ``tokens``.

    ``corrupted[t]`` (shape ``(S,)`` of the original) is the union over the steps of the positions each step acted on,
    mapped back to the original position they came from; tokens inserted by a step have no original position, so
    nothing is marked for them. An empty list returns the identity.
    """
    check_tokens(tokens)
    n = tokens.numel()
    origin = torch.arange(n)
    corrupted = torch.zeros(n, dtype=torch.bool)
    current = tokens
    for fn in corruptions:
        step = fn(current, generator)
        hit = origin[step.corrupted]
        corrupted[hit[hit >= 0]] = True
        origin = torch.where(step.origin >= 0, origin[step.origin.clamp(min=0)], torch.full_like(step.origin, -1))
        current = step.tokens
    if current is tokens:
        current = tokens.clone()
    return CorruptionResult(current, origin, corrupted)
