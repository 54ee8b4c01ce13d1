"""Glancing training for CTC decoders (GLAT, Qian et al. 2021; with CTC: Gu & Kong 2021; used by DEER, paper 002 §3.1).

In a first, gradient-free pass the model predicts every frame. The frames are compared with the best (Viterbi) CTC
alignment of the reference (:mod:`.ctc_alignment`); for a sentence with ``d`` mismatching frames, ``round(ratio * d)``
frames chosen uniformly among its real frames are "glanced": their decoder input is replaced by the embedding of the
symbol the alignment puts there (a target token or the blank). The second pass is trained with the usual CTC loss.
The ratio is annealed over training (:class:`GlancingSchedule`; DEER: 0.5 -> 0.2).
"""
import re
from typing import Optional

import torch
from torch import Tensor


def glancing_mask(
    alignment: Tensor,
    prediction: Tensor,
    frame_padding_mask: Tensor,
    ratio: float,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Which frames to reveal.

    Args:
        alignment: ``(B, F)`` the Viterbi alignment (symbol per frame).
        prediction: ``(B, F)`` the model's argmax per frame in the first pass.
        frame_padding_mask: ``(B, F)`` True at padding frames.
        ratio: fraction of the mismatches to reveal.

    Returns:
        ``(B, F)`` bool, True at revealed frames: exactly ``round(ratio * d_b)`` real frames in row ``b``, where
        ``d_b`` is the number of real frames at which ``prediction`` differs from ``alignment``.
    """
    real = ~frame_padding_mask
    mismatches = ((prediction != alignment) & real).sum(1)
    n_reveal = torch.round(mismatches.float() * ratio).long()
    scores = torch.rand(alignment.shape, generator=generator, device=alignment.device)
    scores = scores.masked_fill(~real, 2.0)  # padding frames sort last, never chosen
    rank = scores.argsort(1).argsort(1)  # rank of each frame among its row
    return (rank < n_reveal[:, None]) & real


class GlancingSchedule:
    """Glancing ratio annealed linearly from ``start`` to ``end`` over ``steps`` updates, then constant.

    Parsed from fairseq-GLAT's notation ``"START:END@STEPS"`` (``STEPS`` may end in ``k`` or ``m``), or a single
    number for a constant ratio: ``"0.5:0.2@300k"`` (DEER), ``"0.3"``, ``"0"`` (no glancing).
    """

    def __init__(self, spec: str):
        m = re.fullmatch(r"\s*([0-9.]+)\s*(?::\s*([0-9.]+)\s*@\s*([0-9.]+)\s*([kKmM]?)\s*)?", str(spec))
        if m is None:
            raise ValueError(f"glancing schedule {spec!r}: expected START:END@STEPS (e.g. 0.5:0.2@300k) or a number")
        self.start = float(m.group(1))
        self.end = float(m.group(2)) if m.group(2) is not None else self.start
        scale = {"": 1, "k": 1_000, "m": 1_000_000}[(m.group(4) or "").lower()]
        self.steps = int(float(m.group(3)) * scale) if m.group(3) is not None else 0
        for v in (self.start, self.end):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"glancing schedule {spec!r}: ratios must lie in [0, 1]")

    def __call__(self, num_updates: int) -> float:
        if self.steps <= 0 or num_updates >= self.steps:
            return self.end
        return self.start + (self.end - self.start) * num_updates / self.steps
