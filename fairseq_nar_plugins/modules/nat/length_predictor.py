"""Length classification for non-autoregressive decoders (Gu et al. 2018; BnB, paper 000 §2.2).

The target length is predicted as a class (0..max_length-1) from a mean-pooled source representation (BnB: the
latent ``z``). With ``pred_length_offset`` the class is ``len_tgt - len_src + max_length // 2`` (fairseq NAT's
``--pred-length-offset``). Training uses fairseq's ``nat_loss`` "length" term; generation takes the argmax, or the
``beam`` lengths around it (fairseq's ``--iter-decode-with-beam``, via the model's ``regenerate_length_beam``).
Lengths count every non-pad target token, ``<s>`` and ``</s>`` included, as fairseq's NAT models do.
"""
import torch
import torch.nn as nn
from torch import Tensor


class LengthClassifier(nn.Module):
    def __init__(self, input_dim: int, max_length: int = 256, pred_length_offset: bool = False):
        super().__init__()
        self.max_length = max_length
        self.pred_length_offset = pred_length_offset
        self.proj = nn.Linear(input_dim, max_length)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, states: Tensor, padding_mask: Tensor) -> Tensor:
        """``states`` ``(B, S, C)``, ``padding_mask`` ``(B, S)`` -> length logits ``(B, max_length)``."""
        real = (~padding_mask).to(states.dtype)[:, :, None]
        pooled = (states * real).sum(1) / real.sum(1).clamp(min=1)
        return self.proj(pooled)

    def target(self, tgt_lengths: Tensor, src_lengths: Tensor) -> Tensor:
        """Class index of each gold length ``(B,)``, clamped to the classifier's range."""
        t = tgt_lengths - src_lengths + self.max_length // 2 if self.pred_length_offset else tgt_lengths
        return t.clamp(0, self.max_length - 1)

    def lengths_of_classes(self, src_lengths: Tensor) -> Tensor:
        """Length each class stands for, per sentence ``(B, max_length)``."""
        cls = torch.arange(self.max_length, device=src_lengths.device)[None, :]
        return cls + src_lengths[:, None] - self.max_length // 2 if self.pred_length_offset else cls.expand(
            src_lengths.size(0), -1)

    def predict(self, logits: Tensor, src_lengths: Tensor, min_length: int = 2,
                max_ratio: float = None, max_offset: float = 0.0, max_length: int = None) -> Tensor:
        """Most likely lengths ``(B,)`` (at least ``min_length``: ``<s>`` and ``</s>``). With ``max_ratio`` the
        argmax is taken over lengths ``<= max_ratio * src_length + max_offset`` only (fairseq-generate's
        ``--max-len-a/-b`` for a length classifier: a barely trained classifier cannot ask for 255-token outputs).
        ``max_length`` (the decoder's positions) caps every length, also the offset classes' ``class + S - C/2``."""
        lengths = self.lengths_of_classes(src_lengths)
        cap = None
        if max_ratio is not None:
            cap = (max_ratio * src_lengths.to(logits.dtype) + max_offset).floor()
        if max_length is not None:
            limit = torch.full_like(src_lengths, max_length).to(logits.dtype)
            cap = limit if cap is None else torch.minimum(cap, limit)
        if cap is not None:
            cap = cap.clamp(min=min_length)
            logits = logits.masked_fill(lengths.to(logits.dtype) > cap[:, None], float("-inf"))
            # every class beyond the cap (a short source with offset classes): the longest length within it
            none_left = torch.isinf(logits).all(-1)
            chosen = lengths.gather(1, logits.argmax(-1, keepdim=True)).squeeze(1)
            chosen = torch.where(none_left, cap.long(), chosen)
            return torch.minimum(chosen.clamp(min=min_length), cap.long())
        return lengths.gather(1, logits.argmax(-1, keepdim=True)).squeeze(1).clamp(min=min_length)
