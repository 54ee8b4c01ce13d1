"""The layer loops of an early-exit NAR decoder (ELMER section 4), on callables so that they can be tested on
hand-made layers and off-ramps.

Callables (all tensors batch-first):

* ``layer_fn(i, x)``: 0-based layer ``i`` applied to states ``x`` ``(B, T, C)`` at every position -> ``(B, T, C)``;
* ``live_fn(i, x, live)``: the same layer computed only for the positions where ``live`` ``(B, T)`` is True, the
  others returned unchanged (:func:`.live_layer.decoder_layer_at`); optional;
* ``ramp_fn(i, h)``: the off-ramp of layer ``i``: states ``(..., C)`` -> logits ``(..., V)``;
* ``fuse_fn(y, h)``: the soft-exit fusion ``W [Embed(y) ; h]`` of predicted symbols ``y`` ``(B, T)`` and states
  ``h`` ``(B, T, C)``.

Copy rule (section 4.1): a token that exits at layer ``l`` keeps ``h^l``; upper layers read it as key and value but
do not update it. With ``detach`` (the authors' code) the copies that upper layers read carry no gradient back.
"""
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .sampling import entropy


def run_lplm(layer_fn: Callable, x: Tensor, exit_layers: Tensor, detach: bool = True) -> Tuple[Tensor, int]:
    """Layer Permutation LM (Eq. 9): token ``t`` exits at the assigned layer ``exit_layers[b, t]`` (1-based).

    Args:
        x: ``(B, T, C)`` decoder input (``h^0``).
        exit_layers: ``(B, T)`` long in ``1..L``.

    Returns:
        ``(exit_states, layers_run)``: ``exit_states`` ``(B, T, C)`` holds ``h_t^{l_t}`` (with its graph: each
        token's loss reaches the layers up to its exit); the loop stops after the highest assigned layer.
    """
    exit_states = torch.zeros_like(x)
    last = int(exit_layers.max()) if exit_layers.numel() else 0
    for layer in range(1, last + 1):
        x = layer_fn(layer - 1, x)
        exit_states = torch.where(exit_layers.eq(layer)[..., None], x, exit_states)
        if layer == last:
            break
        copied = exit_states.detach() if detach else exit_states
        x = torch.where(exit_layers.le(layer)[..., None], copied, x)
    return exit_states, last


@dataclass
class HardExit:
    """Result of :func:`run_hard_exit` (``(B, T)`` tensors unless said).

    Attributes:
        exit_layers: 1-based exit layer of each position, 0 at padding.
        tokens: argmax of the off-ramp distribution at the exit layer (banned symbols excluded), when predicted.
        scores: log-probability of that symbol there.
        work: per layer run, the number of positions the layer computed (queries and FFN).
        layers_run: layers computed before every token had exited.
        states: with ``keep_states``, the states after each layer run (copy rule applied), ``(B, T, C)`` each.
    """

    exit_layers: Tensor
    tokens: Optional[Tensor]
    scores: Optional[Tensor]
    work: List[int] = field(default_factory=list)
    layers_run: int = 0
    states: Optional[List[Tensor]] = None


def run_hard_exit(layer_fn: Callable, ramp_fn: Callable, x: Tensor, padding_mask: Tensor, num_layers: int,
                  threshold: float, banned: Sequence[int] = (), live_fn: Optional[Callable] = None,
                  detach: bool = True, keep_states: bool = False, predict: bool = True) -> HardExit:
    """Hard early exit (section 4.3, Eq. 10): at layer ``l < L`` a live token exits when the entropy of its
    off-ramp distribution is below ``threshold`` (natural log; strict, so 0 sends every token to layer ``L``);
    every token still live exits at ``L``. The loop stops as soon as every token has exited, and with ``live_fn``
    exited positions cost no query or FFN work in the layers above.

    Exit decisions never carry gradient. ``predict``: also return the argmax symbol and its log-probability at each
    token's exit (``banned`` symbols excluded from the argmax, not from the entropy). ``keep_states``: return the
    states after every layer (for training losses at the exit layers).
    """
    real = ~padding_mask
    live = real.clone()
    n_real = int(real.sum())
    exit_layers = torch.zeros_like(padding_mask, dtype=torch.long)
    tokens = torch.zeros_like(exit_layers) if predict else None
    scores = torch.zeros(padding_mask.shape, dtype=torch.float32, device=x.device) if predict else None
    result = HardExit(exit_layers, tokens, scores, states=[] if keep_states else None)
    banned = sorted(set(int(b) for b in banned))
    for layer in range(1, num_layers + 1):
        n_live = int(live.sum())
        if live_fn is not None and n_live < n_real:
            x = live_fn(layer - 1, x, live)
            result.work.append(n_live)
        else:
            y = layer_fn(layer - 1, x)
            if n_live < n_real:
                x = torch.where(live[..., None], y, x.detach() if detach else x)
            else:
                x = y
            result.work.append(n_real)
        result.layers_run = layer
        if keep_states:
            result.states.append(x)
        if layer < num_layers and threshold <= 0:
            continue  # nothing can leave (entropy >= 0): full depth costs no intermediate off-ramp
        with torch.no_grad():
            logits = ramp_fn(layer - 1, x[live])  # (n_live, V)
            if layer < num_layers:
                leaving = entropy(logits) < threshold
            else:
                leaving = torch.ones(logits.shape[:1], dtype=torch.bool, device=logits.device)
            new = torch.zeros_like(live)
            new[live] = leaving
            if predict and bool(leaving.any()):
                lprobs = torch.log_softmax(logits[leaving].float(), dim=-1)
                choice = lprobs.clone()
                if banned:
                    choice[:, banned] = float("-inf")
                best = choice.argmax(-1)
                tokens[new] = best
                scores[new] = lprobs.gather(1, best[:, None])[:, 0]
            exit_layers[new] = layer
            live &= ~new
        if not bool(live.any()):
            break
    return result


def run_soft_exit(layer_fn: Callable, ramp_fn: Callable, fuse_fn: Callable, x: Tensor, num_layers: int,
                  keep: Optional[Tensor] = None, gold: Optional[Tensor] = None, gold_prob: float = 0.0,
                  generator: Optional[torch.Generator] = None) -> Tuple[List[Tensor], Tensor]:
    """Soft early exit (section 4.3, Eq. 11-12): every layer ``l`` predicts ``y^l = argmax off-ramp_l(h^l)``;
    below the last layer the next layer reads ``W [Embed(y^l) ; h^l]``.

    Args:
        keep: ``(B, T)`` bool, positions whose logits are returned for every layer (training); None: none.
        gold: ``(B, T)`` reference symbols (``<pad>``-free where ``keep``) and ``gold_prob``: fraction of the
            kept positions that feed the reference instead of the prediction (the authors' "mixed training",
            0.3 in their code; the paper has none).
        generator: for the ``gold_prob`` draw.

    Returns:
        ``(per_layer, final)``: ``per_layer[l - 1]`` = logits ``(N, V)`` of layer ``l`` at the ``keep`` positions
        (empty list without ``keep``), and ``final`` = logits ``(B, T, V)`` of the last layer.
    """
    per_layer: List[Tensor] = []
    final = None
    for layer in range(1, num_layers + 1):
        x = layer_fn(layer - 1, x)
        logits = ramp_fn(layer - 1, x)
        if keep is not None:
            per_layer.append(logits[keep])
        if layer < num_layers:
            predicted = logits.detach().argmax(-1)
            if gold is not None and gold_prob > 0 and keep is not None:
                draw = torch.rand(predicted.shape, generator=generator,
                                  device=generator.device if generator is not None else predicted.device)
                swap = draw.to(predicted.device).lt(gold_prob) & keep
                predicted = torch.where(swap, gold, predicted)
            x = fuse_fn(predicted, x)
        else:
            final = logits
    return per_layer, final
