"""Scheduled masking of decoder inputs for autoregressive fine-tuning of a masked-LM-pretrained decoder (MLAE).

MLAE (anonymous, "MLAE: Encoder-decoder Pretraining with Non-autoregressive Modeling", ACL ARR submission; section
3.4 and Algorithm 1): during autoregressive fine-tuning, a share ``m_t`` of the decoder's *input* tokens is replaced
by the ``[MASK]`` token the decoder met in pretraining, the share decaying linearly from ``m_0`` to 0 over the
training updates: ``m_t = m_0 - (m_0 / T) t`` (``T`` = the last update). The targets are not changed and the loss
covers every target position. Paper: ``m_0 = 0.6``, linear decay (a constant 0.6 is worse, Table 7).

* :class:`MaskSchedule`: ``m_t`` from ``"START:END@STEPS"`` (``STEPS`` may end in k/m and defaults to the run's
  ``--max-update``), linear or constant;
* :func:`mask_decoder_input`: replaces an exact, unbiased number ``floor(m n + u)`` (``u ~ U[0, 1)``) of each
  sentence's ``n`` maskable positions, chosen uniformly, by the mask id.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..ctc.glancing import GlancingSchedule

MASK_SCHEDULE_KINDS = ("linear", "constant")


class MaskSchedule:
    """The mask ratio ``m_t`` at update ``t``.

    Args:
        spec: ``"START:END@STEPS"`` (``"0.6:0@30k"``), ``"START:END"`` (``STEPS`` = ``max_update``) or a single
            number (a constant ratio).
        kind: ``"linear"`` (``START`` at update 0 to ``END`` at update ``STEPS``, then ``END``; MLAE's Algorithm 1
            with ``END`` = 0) or ``"constant"`` (``START`` at every update; Table 7's ablation).
        max_update: the run's ``--max-update``, used when ``spec`` gives no ``@STEPS``.
    """

    def __init__(self, spec: str, kind: str = "linear", max_update: int = 0):
        if kind not in MASK_SCHEDULE_KINDS:
            raise ValueError(f"--mask-schedule-kind must be one of {MASK_SCHEDULE_KINDS}, got {kind!r}")
        spec = str(spec).strip()
        if ":" in spec and "@" not in spec:
            if not max_update or max_update <= 0:
                raise ValueError(f"--mask-schedule {spec!r} decays over the whole run but --max-update is not set: "
                                 "give the number of updates (e.g. 0.6:0@30k) or set --max-update")
            spec = f"{spec}@{int(max_update)}"
        try:
            self.schedule = GlancingSchedule(spec)
        except ValueError:
            raise ValueError(f"--mask-schedule {spec!r}: expected START:END@STEPS (e.g. 0.6:0@30k), START:END (to 0 "
                             "at --max-update) or one ratio, every ratio in [0, 1]") from None
        self.kind = kind
        self.spec = spec

    @property
    def start(self) -> float:
        return self.schedule.start

    @property
    def end(self) -> float:
        return self.schedule.end

    @property
    def steps(self) -> int:
        return self.schedule.steps

    def __call__(self, num_updates: int) -> float:
        if self.kind == "constant":
            return self.schedule.start
        return self.schedule(num_updates)

    def __repr__(self):
        return f"MaskSchedule({self.spec!r}, kind={self.kind!r})"


def mask_decoder_input(tokens: Tensor, ratio: float, maskable: Tensor, mask_idx: int,
                       generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Replace ``floor(ratio * n + u)`` uniformly chosen maskable positions of each row by ``mask_idx``.

    Args:
        tokens: ``(B, T)`` decoder input tokens.
        ratio: the mask ratio ``m_t`` in ``[0, 1]``.
        maskable: ``(B, T)`` bool, True where a position may be masked (the caller excludes padding and the start
            symbol); ``n`` = its count per row.
        mask_idx: the mask token id.
        generator: torch random generator (``None``: torch's global one, which fairseq's trainer seeds with
            ``seed + num_updates`` before each update, so masks are reproducible across resumption).

    Returns:
        ``(masked_tokens (B, T), masked (B, T) bool)``: a new tensor, and where the mask went.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if ratio == 0.0:
        return tokens, torch.zeros_like(maskable)
    n = maskable.sum(1)
    u = _uniform(n.shape, generator, tokens.device)
    count = torch.minimum((ratio * n.to(u.dtype) + u).floor().long(), n)
    scores = _uniform(tokens.shape, generator, tokens.device)
    scores = scores.masked_fill(~maskable, 2.0)  # never chosen
    rank = scores.argsort(1).argsort(1)
    masked = (rank < count[:, None]) & maskable
    return tokens.masked_fill(masked, mask_idx), masked


def _uniform(shape, generator: Optional[torch.Generator], device) -> Tensor:
    """U[0, 1) draws on ``device`` (drawn on the generator's own device when it differs)."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)
