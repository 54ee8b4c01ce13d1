"""Physically smaller weights from a model trained with dynamic block pruning (DEER, paper 002 §3.3), at one size.

A :class:`~.block_pruning.DynamicBlockPruning` model decodes at any listed size by *masking* weights: the matrices
keep their full shapes. This module turns the masked backbone at one size into a backbone whose matrices are
smaller (a :class:`~.backbone.bert_backbone.BertBackbone` with ``layer_shapes``) and whose output is the same up to float
rounding. Everything below is exact in real arithmetic; "zero" means exactly 0.0 in the MASKED weight.

Feed-forward (per layer): the neurons whose score mask is 0 are removed: their ``fc1`` rows and bias entries and their
``fc2`` columns (under the mask they are all zero, so a removed neuron contributes ``fc2[:, j] * act(0) = 0``).
``ffn`` = number of kept neurons.

Attention (per layer, per head ``h``; fairseq: ``q = (W_q x + b_q) * scaling``, ``k = W_k x + b_k``,
``v = W_v x + b_v``, ``out = W_o concat_h(softmax_j(q_i . k_j + masks) v_j) + b_o``). Only the q/k/v/out WEIGHTS are
masked; their biases never are.

* value dim ``d`` whose ``out_proj`` column ``W_o[:, d]`` is zero: contributes nothing -> removed (v row, v bias, out
  column).
* value dim ``d`` whose ``v_proj`` row ``W_v[d]`` is zero: ``v_d = b_v[d]`` for every key, and the attention
  probabilities of a query sum to 1, so the head outputs ``b_v[d]`` in that dim whatever it attends to -> removed,
  and folded: ``b_o += W_o[:, d] * b_v[d]``.
* a head left with no value dims outputs nothing -> the whole head is removed (its q/k dims too).
* query/key dim ``d`` whose ``k_proj`` row ``W_k[d]`` is zero: its logit term ``q_d(x_i) * b_k[d]`` depends on the
  query only, a constant shift of the row that the softmax cancels -> removed.
* query/key dim ``d`` whose ``q_proj`` row ``W_q[d]`` is zero (``q_d = b_q[d] * scaling``): its logit term is
  ``scaling * b_q[d] * (W_k[d] . x_j + b_k[d])``; the ``b_q[d] * b_k[d]`` part is constant (cancelled), the rest is a
  per-key bias linear in ``x_j``. All such dims of a head are removed and, if ``u = sum_d b_q[d] * W_k[d]`` is not
  zero, replaced by ONE folded dim appended to the head: q row 0, q bias 1, k row ``u``, k bias 0
  (``scaling * 1 * u . x_j`` is exactly their sum). So ``n >= 1`` such dims become at most one.
* every other dim is kept; masked 32 x 32 blocks inside kept rows / columns stay, as zeros.
* a head whose q/k dims are all removed but has value dims stays, with ``qk_dims[h] = 0``: its logits are constant,
  i.e. it attends uniformly to the keys the masks allow (NOT removable: it still outputs their mean value).

What stays full width: the residual stream ``C`` (inputs of every projection, outputs of ``out_proj`` and ``fc2``,
LayerNorms, embeddings), and rows of ``out_proj`` / ``fc2`` that happen to be zero (they feed the residual stream).
The query scaling stays the original ``(C // heads) ** -0.5``. The folds are exact when attention dropout is off,
i.e. at inference; and for any query with at least one key the masks allow (a query with none gives NaN either way).
"""
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..backbone.bert_backbone import BertBackbone, BertBackboneConfig
from .block_pruning import DynamicBlockPruning


def _zero_rows(w: Tensor) -> Tensor:
    """``(R, C)`` -> ``(R,)`` bool: rows that are exactly zero."""
    return (w == 0).all(dim=1)


def compact_attention(
    wq: Tensor, bq: Tensor, wk: Tensor, bk: Tensor, wv: Tensor, bv: Tensor, wo: Tensor, bo: Tensor, num_heads: int
) -> Tuple[Dict[str, Tensor], List[int], List[int]]:
    """Compact one (masked) multi-head attention (rules in the module docstring).

    Args:
        wq, wk, wv: ``(C, C)`` masked projection weights (rows = output dims, head ``h`` owns rows
            ``[h * C // num_heads, (h + 1) * C // num_heads)``); bq, bk, bv: ``(C,)`` biases.
        wo: ``(C, C)`` masked ``out_proj`` weight (columns = value dims); bo: ``(C,)`` its bias.
        num_heads: number of heads.

    Returns:
        ``(tensors, qk_dims, v_dims)``: ``tensors`` maps ``q_proj.weight`` ``(sum(qk_dims), C)``, ``q_proj.bias``
        ``(sum(qk_dims),)``, the same for ``k_proj``, ``v_proj.weight`` ``(sum(v_dims), C)``, ``v_proj.bias``,
        ``out_proj.weight`` ``(C, sum(v_dims))`` and ``out_proj.bias`` ``(C,)`` (with the folded value biases);
        ``qk_dims``/``v_dims``: per-head widths, ``num_heads`` each (0 and 0 for a removed head).
    """
    c = wq.size(0)
    if c % num_heads:
        raise ValueError(f"{c} dims do not split into {num_heads} heads")
    head = c // num_heads
    zq, zk, zv, zo = _zero_rows(wq), _zero_rows(wk), _zero_rows(wv), _zero_rows(wo.t())
    bo = bo.double().clone()
    q_rows, q_bias, k_rows, k_bias, v_keep = [], [], [], [], []
    qk_dims, v_dims = [], []
    for h in range(num_heads):
        dims = torch.arange(h * head, (h + 1) * head)
        # values: drop dims out_proj ignores; fold constant ones (zero v row) into out_proj's bias
        folded_v = dims[zv[dims] & ~zo[dims]]
        bo += (wo[:, folded_v].double() * bv[folded_v].double()).sum(dim=1)
        kept_v = dims[~zv[dims] & ~zo[dims]]
        if kept_v.numel() == 0:  # the head outputs nothing: remove it
            qk_dims.append(0)
            v_dims.append(0)
            continue
        v_keep.append(kept_v)
        v_dims.append(kept_v.numel())
        # queries / keys: key-constant dims shift a query's logits uniformly -> dropped; query-constant dims fold
        kept_qk = dims[~zq[dims] & ~zk[dims]]
        q_const = dims[zq[dims] & ~zk[dims]]
        q_rows.append(wq[kept_qk])
        q_bias.append(bq[kept_qk])
        k_rows.append(wk[kept_qk])
        k_bias.append(bk[kept_qk])
        n = kept_qk.numel()
        u = (bq[q_const].double()[:, None] * wk[q_const].double()).sum(dim=0)
        if (u != 0).any():
            q_rows.append(wq.new_zeros(1, c))
            q_bias.append(bq.new_ones(1))
            k_rows.append(u.to(wk.dtype)[None, :])
            k_bias.append(bk.new_zeros(1))
            n += 1
        qk_dims.append(n)
    v_idx = torch.cat(v_keep) if v_keep else torch.zeros(0, dtype=torch.long)
    cat = lambda parts, like: torch.cat(parts) if parts else like.new_zeros((0,) + tuple(like.shape[1:]))  # noqa: E731
    tensors = {
        "q_proj.weight": cat(q_rows, wq), "q_proj.bias": cat(q_bias, bq),
        "k_proj.weight": cat(k_rows, wk), "k_proj.bias": cat(k_bias, bk),
        "v_proj.weight": wv[v_idx], "v_proj.bias": bv[v_idx],
        "out_proj.weight": wo[:, v_idx], "out_proj.bias": bo.to(wo.dtype),
    }
    return {k: v.detach().clone().contiguous() for k, v in tensors.items()}, qk_dims, v_dims


def compact_ffn(w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, keep: Tensor) -> Dict[str, Tensor]:
    """Keep the FFN neurons ``keep``.

    Args:
        w1: ``(F, C)`` fc1 weight; b1: ``(F,)``; w2: ``(C, F)`` fc2 weight; b2: ``(C,)``.
        keep: ``(F',)`` long, indices of the kept neurons (increasing).

    Returns:
        ``fc1.weight`` ``(F', C)``, ``fc1.bias`` ``(F',)``, ``fc2.weight`` ``(C, F')``, ``fc2.bias`` ``(C,)``.
    """
    keep = keep.to(torch.long)
    out = {"fc1.weight": w1[keep], "fc1.bias": b1[keep], "fc2.weight": w2[:, keep], "fc2.bias": b2}
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def _mask_of(module: nn.Module, tensor_name: str):
    """The ``_BlockMask`` parametrization on ``module.<tensor_name>``, or None."""
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is None or tensor_name not in parametrizations:
        return None
    return parametrizations[tensor_name][0]


def pruning_controller(backbone: nn.Module) -> Optional[DynamicBlockPruning]:
    """The :class:`DynamicBlockPruning` whose masks sit on ``backbone``'s weights (None if unpruned)."""
    found = {}
    for m in backbone.modules():
        for parametrization_list in (getattr(m, "parametrizations", None) or {}).values():
            for parametrization in parametrization_list:
                controller = getattr(parametrization, "_controller", None)
                if controller is not None:
                    found[id(controller)] = controller
    if len(found) > 1:
        raise ValueError("the backbone is masked by more than one DynamicBlockPruning controller")
    return next(iter(found.values()), None)


def plain_state_dict(module: nn.Module) -> Dict[str, Tensor]:
    """``module.state_dict()`` with every parametrized tensor replaced by its current (masked) value under its
    plain name (``...q_proj.weight`` rather than ``...q_proj.parametrizations.weight.original``)."""
    state = {k: v for k, v in module.state_dict().items() if ".parametrizations." not in k}
    for path, m in module.named_modules():
        for tensor_name in getattr(m, "parametrizations", None) or {}:
            state[f"{path}.{tensor_name}" if path else tensor_name] = getattr(m, tensor_name).detach().clone()
    return state


@torch.no_grad()
def compact_backbone(backbone: BertBackbone, size: float) -> Tuple[Dict[str, Tensor], List[Dict[str, Any]]]:
    """The state dict and ``layer_shapes`` of ``backbone`` pruned at ``size``, physically compacted.

    ``backbone`` must be a uniform :class:`BertBackbone` (``layer_shapes`` None) whose layers carry the masks of a
    :class:`DynamicBlockPruning` listing ``size`` in its sizes. The masks are those of ``size`` with thresholds
    recomputed from the current scores (what generation uses: exactly the ``size`` fraction of each layer type);
    the controller's size and thresholds are restored afterwards.

    Returns:
        ``(state, layer_shapes)``: ``state`` loads into ``BertBackbone(replace(backbone.cfg,
        layer_shapes=layer_shapes))`` (strictly); ``layer_shapes`` is one ``{"ffn", "qk_dims", "v_dims"}`` per layer.
    """
    if backbone.cfg.layer_shapes is not None:
        raise ValueError("this backbone is already compact (layer_shapes is set)")
    controller = pruning_controller(backbone)
    if controller is None:
        raise ValueError("the backbone has no pruning masks (no DynamicBlockPruning was attached to it)")
    if not any(math.isclose(size, s) for s in controller.sizes):
        raise ValueError(f"model size {size} is not one the model was trained with: {controller.sizes}")
    previous = controller.size, dict(controller.thresholds), controller._thresholds_at
    controller.set_size(size)
    controller.refresh_thresholds(controller._thresholds_at)  # from the current scores, as generation does
    try:
        state = plain_state_dict(backbone)
        shapes = []
        heads = backbone.cfg.attention_heads
        for i, layer in enumerate(backbone.layers):
            p, attn = f"layers.{i}.", layer.self_attn
            tensors, qk_dims, v_dims = compact_attention(
                attn.q_proj.weight, attn.q_proj.bias, attn.k_proj.weight, attn.k_proj.bias,
                attn.v_proj.weight, attn.v_proj.bias, attn.out_proj.weight, attn.out_proj.bias, heads,
            )
            state.update({f"{p}self_attn.{k}": v for k, v in tensors.items()})
            mask = _mask_of(layer.fc1, "weight")
            keep = torch.arange(layer.fc1.weight.size(0))
            if mask is not None:
                neuron_mask = controller.score_mask(mask.key.partition(":")[0])
                if neuron_mask is not None:
                    keep = neuron_mask.detach().nonzero().flatten()
            state.update({p + k: v for k, v in
                          compact_ffn(layer.fc1.weight, layer.fc1.bias, layer.fc2.weight, layer.fc2.bias, keep).items()})
            shapes.append({"ffn": int(keep.numel()), "qk_dims": qk_dims, "v_dims": v_dims})
    finally:
        controller.size, controller.thresholds, controller._thresholds_at = previous
    return state, shapes


def compact_config(cfg: BertBackboneConfig, layer_shapes: List[Dict[str, Any]]) -> BertBackboneConfig:
    """``cfg`` with ``layer_shapes`` set (validated)."""
    import dataclasses

    new = dataclasses.replace(cfg, layer_shapes=layer_shapes)
    new.validate()
    return new


def find_submodule(model: nn.Module, kind: type) -> Tuple[str, nn.Module]:
    """``(name, module)`` of the single submodule of type ``kind`` (``name`` "" for ``model`` itself)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]
    if len(found) != 1:
        raise ValueError(f"expected exactly one {kind.__name__} in the model, found {len(found)}")
    return found[0]


@torch.no_grad()
def export_model_state(model: nn.Module, size: float) -> Tuple[Dict[str, Tensor], List[Dict[str, Any]], Dict[str, int]]:
    """Compact a whole model (e.g. DEER) holding one pruned :class:`BertBackbone`.

    Returns ``(state, layer_shapes, counts)``: ``state`` is the model's state dict with the backbone compacted and
    without the pruning scores or any parametrization entries (it loads into the same model built with
    ``backbone_layer_shapes = layer_shapes`` and pruning off); ``counts`` has ``params_before`` / ``params_after``
    (number of stored elements, scores included before) and ``backbone_before`` / ``backbone_after``.
    """
    prefix, backbone = find_submodule(model, BertBackbone)
    controller = pruning_controller(backbone)
    if controller is None:
        raise ValueError("the model has no pruning scores (it was not trained with dynamic block pruning, --prune)")
    backbone_state, shapes = compact_backbone(backbone, size)
    scores = {id(s) for s in controller.parameters()}
    score_names = {n for n, p in model.named_parameters() if id(p) in scores}
    outside = [n for n, m in model.named_modules() if getattr(m, "parametrizations", None)
               and not n.startswith(prefix + ".") and n != prefix]
    if outside:
        raise ValueError(f"pruning masks outside the backbone ({outside[:3]}): not supported by the export")
    bp = prefix + "." if prefix else ""
    full = model.state_dict()
    state = {k: v for k, v in full.items()
             if k not in score_names and not k.startswith(bp) and ".parametrizations." not in k}
    # keys of the controller's scores (e.g. "pruning.scores.l0_attn0"), whatever its attribute name
    cprefix = next((n for n, m in model.named_modules() if m is controller), None)
    if cprefix is not None:
        state = {k: v for k, v in state.items() if not k.startswith(cprefix + ".")}
    state.update({bp + k: v for k, v in backbone_state.items()})
    before_backbone = sum(v.numel() for k, v in full.items() if k.startswith(bp))
    counts = {
        "params_before": sum(v.numel() for v in full.values()),
        "params_after": sum(v.numel() for v in state.values()),
        "backbone_before": before_backbone,
        "backbone_after": sum(v.numel() for v in backbone_state.values()),
    }
    return state, shapes, counts


def fit_state_to_model(state: Dict[str, Tensor], model: nn.Module) -> Tuple[Dict[str, Tensor], List[str]]:
    """Keep the entries of ``state`` that ``model`` has, in its order; returns ``(state, dropped keys)``.

    Entries that only the pruned model has (its pruning buffers, e.g. DEER's ``prune_thresholds``: a name with
    "prune" or "scores") are dropped; any other extra entry, or an entry ``model`` needs and ``state`` lacks, is an
    error (the exported checkpoint would not load)."""
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in state]
    extra = [k for k in state if k not in wanted]
    unexpected = [k for k in extra if "prune" not in k and "scores" not in k]
    if missing or unexpected:
        raise ValueError(f"the compacted state does not fit the exported model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in wanted.items() if state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"shape mismatch between the compacted state and the exported model: {wrong[:5]}")
    return {k: state[k] for k in wanted}, extra
