"""Exit-layer sampling (ELMER's Layer Permutation LM) and the entropy confidence of the hard exit."""
from typing import Optional, Sequence

import torch
from torch import Tensor


def sample_exit_layers(shape: Sequence[int], num_layers: int, generator: Optional[torch.Generator] = None,
                       device=None) -> Tensor:
    """Exit layers ``1..num_layers``, uniform and independent per element (ELMER section 4.2: "permute the exit layer
    (from 1 to the maximum layer) for each token"; the authors' code draws ``randint(0, L)`` per position).

    Args:
        shape: e.g. ``(K, B, T)``: K permutations for each of B sequences of T positions.
        num_layers: L, the number of decoder layers (>= 1).
        generator: a ``torch.Generator`` (on ``device``, or on the CPU) for reproducible draws; default torch's
            global generator, which fairseq's trainer reseeds with ``seed + num_updates`` before every update (so
            draws are identical on every rank and after resuming).
        device: where the result lives (default: the generator's device, or the CPU).

    Returns:
        long tensor of ``shape`` with values in ``1..num_layers``.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    gen_device = generator.device if generator is not None else (device or "cpu")
    draws = torch.randint(1, num_layers + 1, tuple(shape), generator=generator, device=gen_device)
    return draws if device is None else draws.to(device)


def entropy(logits: Tensor) -> Tensor:
    """Natural-log entropy ``-sum_v p_v log p_v`` of ``softmax(logits)`` over the last dimension (ELMER Eq. 10, whose
    printed sum over ``l`` is over the vocabulary). Computed in float32 at least; ``-inf`` logits (banned symbols)
    contribute 0. 0 for a one-hot distribution, ``log V`` for uniform logits.

    ``logits`` ``(..., V)`` -> ``(...)``."""
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    return torch.special.entr(logp.exp()).sum(-1)
