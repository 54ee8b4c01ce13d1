"""The decoder canvas of a length-free NAR decoder (ELMER section 4.1, after Su et al. 2021): ``T`` ``[MASK]``
positions, the output read up to the first end token.

Canvas length. ``T`` must come from the source alone, in training and at generation alike: a bidirectional decoder
sees how many positions it has, so a canvas of the reference length would hand it the output length in training
(the authors' code decodes with the gold length, an oracle). :class:`CanvasRule` gives each sentence
``T = N`` (``ratio`` 0: a fixed canvas, "the maximum length of the decoder") or
``T = clamp(floor(ratio x S + offset), 1, N)`` with ``S`` the source length in tokens (``<s>``/``</s>`` included).

Labels. Canvas position ``i`` (0-based) predicts target token ``y_{i+1}``; position ``m`` (``m`` target tokens)
predicts ``</s>``; positions after it predict ``</s>`` again (``fill="eos"``, so that they are trained, and every
other position may attend to a defined state) or nothing (``fill="ignore"``). A sentence whose ``m + 1`` labels do
not fit its canvas has no valid labelling under the rule: :func:`canvas_labels` marks it (``fits`` False) and leaves
it unsupervised; the model counts such rows and refuses to train when they are too many.

Output. :func:`cut_at_first_eos` turns the canvas predictions into fairseq's ``[<s>, y..., </s>]`` rows.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

CANVAS_FILLS = ("eos", "ignore")


@dataclass(frozen=True)
class CanvasRule:
    """``T = max_length`` if ``ratio == 0`` else ``clamp(floor(ratio * S + offset), 1, max_length)``."""

    ratio: float = 0.0
    offset: float = 0.0
    max_length: int = 64

    def __post_init__(self):
        if not (math.isfinite(self.ratio) and self.ratio >= 0):
            raise ValueError(f"--canvas-ratio must be a finite number >= 0, got {self.ratio}")
        if not math.isfinite(self.offset):
            raise ValueError(f"--canvas-offset must be finite, got {self.offset}")
        if self.max_length < 1:
            raise ValueError(f"--canvas-max-length must be >= 1, got {self.max_length}")

    def lengths(self, src_lengths: Tensor, limit: Optional[int] = None) -> Tensor:
        """Canvas lengths ``(B,)`` (long, on ``src_lengths``' device) for source lengths ``(B,)``, at most ``limit``
        (the decoder's position table) as well."""
        cap = self.max_length if limit is None else min(self.max_length, int(limit))
        if self.ratio == 0:
            return torch.full_like(src_lengths, cap, dtype=torch.long)
        t = torch.floor(src_lengths.double() * self.ratio + self.offset).long()
        return t.clamp(min=1, max=cap)

    def describe(self) -> str:
        if self.ratio == 0:
            return f"T = {self.max_length} (--canvas-ratio 0: fixed)"
        return (f"T = min({self.max_length}, floor({self.ratio:g} x source length + {self.offset:g})) "
                "(--canvas-ratio, --canvas-offset, --canvas-max-length)")


def canvas_tokens(lengths: Tensor, mask: int, pad: int) -> Tensor:
    """``(B, max T)`` canvas: ``mask`` at the first ``lengths[b]`` positions of row ``b``, ``pad`` after."""
    width = int(lengths.max()) if lengths.numel() else 0
    positions = torch.arange(width, device=lengths.device)[None, :]
    out = torch.full((lengths.size(0), width), pad, dtype=torch.long, device=lengths.device)
    return out.masked_fill(positions < lengths[:, None], mask)


@dataclass
class CanvasLabels:
    """Training labels of a canvas (all ``(B, T)`` unless said).

    Attributes:
        labels: the symbol each position must predict (``pad`` where nothing is supervised).
        supervised: True where the loss covers the position (target tokens, the first ``</s>``, and the fill with
            ``fill="eos"``), False at canvas padding, at unsupervised target positions (``<pad>`` inside the target,
            e.g. ``--loss-positions corrupted``) and in every row that does not fit.
        fill: True at the supervised positions after the first ``</s>``.
        needed: ``(B,)`` positions each target needs (``m + 1``: its tokens and ``</s>``).
        fits: ``(B,)`` True where ``needed <= T_b``.
    """

    labels: Tensor
    supervised: Tensor
    fill: Tensor
    needed: Tensor
    fits: Tensor


def canvas_labels(target: Tensor, lengths: Tensor, bos: int, eos: int, pad: int, fill: str = "eos",
                  full_target: Optional[Tensor] = None) -> CanvasLabels:
    """Labels of canvases of ``lengths`` ``(B,)`` positions for right-padded targets ``(B, L)``.

    A leading ``<s>`` (fairseq's ``translation_lev`` and ``masked_autoencoder_pretrain`` prepend it) is not a label.
    ``full_target`` (same shape, no ``<pad>`` inside) gives each row's length when ``target`` has unsupervised
    ``<pad>`` positions inside (``--loss-positions corrupted``); default ``target``.
    """
    if fill not in CANVAS_FILLS:
        raise ValueError(f"canvas fill must be one of {CANVAS_FILLS}, got {fill!r}")
    full = target if full_target is None else full_target
    if full.shape != target.shape:
        raise ValueError(f"full_target {tuple(full.shape)} and target {tuple(target.shape)} differ in shape")
    if target.size(1) and bool(full[:, 0].eq(bos).all()):
        target, full = target[:, 1:], full[:, 1:]
    bsz, width = lengths.size(0), int(lengths.max()) if lengths.numel() else 0
    real = full.ne(pad)
    cols = torch.arange(full.size(1), device=full.device)[None, :]
    needed = torch.where(real, cols + 1, torch.zeros_like(cols)).max(1).values if full.size(1) else \
        torch.zeros(bsz, dtype=torch.long, device=full.device)
    # a target row without its </s> (truncated data) still needs one position for it
    last = full.gather(1, (needed - 1).clamp(min=0)[:, None])[:, 0]
    needed = needed + (last.ne(eos) | needed.eq(0)).long()
    fits = needed.le(lengths)
    positions = torch.arange(width, device=full.device)[None, :]
    in_canvas = positions < lengths[:, None]
    labels = torch.full((bsz, width), pad, dtype=torch.long, device=full.device)
    k = min(width, target.size(1))
    labels[:, :k] = target[:, :k]
    # the end token at position needed - 1 (also for rows whose target lacks it)
    end = positions.eq((needed - 1)[:, None]) & in_canvas
    labels = labels.masked_fill(end, eos)
    after = positions >= needed[:, None]
    if fill == "eos":
        labels = labels.masked_fill(after & in_canvas, eos)
        fill_mask = after & in_canvas
    else:
        labels = labels.masked_fill(after, pad)
        fill_mask = torch.zeros_like(after)
    labels = labels.masked_fill(~in_canvas, pad)
    supervised = labels.ne(pad) & fits[:, None] & in_canvas
    return CanvasLabels(labels=labels, supervised=supervised, fill=fill_mask & supervised, needed=needed, fits=fits)


def cut_at_first_eos(tokens: Tensor, scores: Tensor, padding_mask: Tensor, bos: int, eos: int, pad: int,
                     lengths: Optional[Tensor] = None):
    """fairseq output rows from canvas predictions.

    Args:
        tokens: ``(B, T)`` predicted symbol per canvas position.
        scores: ``(B, T)`` its log-probability.
        padding_mask: ``(B, T)`` True at canvas padding.
        lengths: ``(B,)`` optional forced output lengths (the benchmark's quick mode): row ``b`` keeps its first
            ``lengths[b]`` predictions whatever they are.

    Returns:
        ``(rows, row_scores)``, ``(B, W)`` each: ``[<s>, y_1 .. y_k, </s>]`` right-padded with ``pad`` / 0, where ``k``
        is the position of the first predicted ``</s>`` (its score is that prediction's), or the whole canvas with
        ``</s>`` appended (score 0) when the row predicts none; ``<s>`` scores 0.
    """
    real = ~padding_mask
    canvas_len = real.sum(1)
    if lengths is None:
        is_eos = tokens.eq(eos) & real
        has_eos = is_eos.any(1)
        first = is_eos.long().argmax(1)
        k = torch.where(has_eos, first, canvas_len)
    else:
        k = torch.minimum(lengths.to(canvas_len), canvas_len)
        has_eos = torch.zeros_like(k, dtype=torch.bool)
    width = int(k.max()) + 2 if k.numel() else 2
    cols = torch.arange(width, device=tokens.device)[None, :]
    src = (cols - 1).clamp(min=0, max=max(tokens.size(1) - 1, 0)).expand(tokens.size(0), -1)
    body = (cols >= 1) & (cols <= k[:, None])
    rows = torch.full((tokens.size(0), width), pad, dtype=tokens.dtype, device=tokens.device)
    row_scores = torch.zeros((tokens.size(0), width), dtype=scores.dtype, device=scores.device)
    if tokens.size(1):
        rows = torch.where(body, tokens.gather(1, src), rows)
        row_scores = torch.where(body, scores.gather(1, src), row_scores)
    rows[:, 0] = bos
    end = cols.eq(k[:, None] + 1)
    rows = rows.masked_fill(end, eos)
    if tokens.size(1):
        eos_score = scores.gather(1, k.clamp(max=max(tokens.size(1) - 1, 0))[:, None])
        row_scores = torch.where(end & has_eos[:, None], eos_score, row_scores)
    return rows, row_scores
