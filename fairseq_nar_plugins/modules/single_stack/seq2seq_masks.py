"""Self-attention masks for autoregressive decoding with bidirectional stacks.

* :func:`causal_mask`: a query may attend to its own and earlier positions only (a Transformer decoder's mask).
* :func:`unilm_seq2seq_mask`: UniLM's "Seq2Seq" mask (Dong et al., 2019, "Unified language model pre-training for
  natural language understanding and generation", NeurIPS, arXiv:1905.03197) over ``[source ; target]``: source
  positions attend to the whole source and never to the target; target position ``t`` attends to the whole source
  and to target positions ``<= t``. MLAE's UniLM-style fine-tuning (section 3.3) uses it over ``[source latents ;
  target tokens]``.

Masks are bool, True where a query may **not** attend to a key (the convention of
:meth:`.backbone.bert_backbone.BertBackbone.forward`); padding keys are left to the key padding mask.
"""
import torch
from torch import Tensor

from .deer_input import source_blind_mask


def causal_mask(length: int, device=None) -> Tensor:
    """``(T, T)`` bool, True above the diagonal (query ``i`` may not see key ``j > i``)."""
    return torch.ones((length, length), dtype=torch.bool, device=device).triu(1)


def unilm_seq2seq_mask(src_padding_mask: Tensor, tgt_padding_mask: Tensor) -> Tensor:
    """``(B, S + T, S + T)`` bool: source rows blind to the target, target rows causal over the target.

    Args:
        src_padding_mask: ``(B, S)`` True at source padding (any side).
        tgt_padding_mask: ``(B, T)`` True at target padding.
    """
    mask = source_blind_mask(src_padding_mask, tgt_padding_mask)
    s, t = src_padding_mask.size(1), tgt_padding_mask.size(1)
    mask[:, s:, s:] = causal_mask(t, src_padding_mask.device)
    return mask
