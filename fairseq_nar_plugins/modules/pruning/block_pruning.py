"""Dynamic block pruning (DEER, paper 002 §3.3; after movement/block pruning, Sanh et al. 2020, Lagunas et al. 2021).

Every prunable weight gets learnable importance scores ``S``; the forward pass uses ``W * M(S)`` with the binary mask
``M(S) = 1[S > tau]`` and a straight-through estimator (the gradient reaches ``S`` as if ``M`` were ``S``):

* attention projections (q, k, v, out): one score per 32 x 32 block of the weight matrix;
* feed-forward: one score per hidden neuron, shared by its ``fc1`` row (and bias) and its ``fc2`` column.

There are two global thresholds, one per layer type (attention, FFN), chosen so that a model size ``m`` keeps the
``m`` fraction of that type's blocks with the highest scores across all layers. Each update samples a model size
from a list (default 1.0 0.75 0.5 0.25; a size of 1.0 keeps everything), the thresholds of every size are
recomputed every K updates (200 in the paper), and the training objective adds ``lambda * mean(sigmoid(S))``
(the paper's L1 term ``lambda * ||sigmoid(S)||``, averaged over the scores so that lambda does not scale with model
size). One trained model then decodes at any listed size, chosen at generation time.

Masks are applied with ``torch.nn.utils.parametrize`` so that code reading ``linear.weight`` directly (fairseq's
fast attention path) sees the masked weight. Cost: a masked weight is computed once per training update
(:meth:`DynamicBlockPruning.cached_masks`, shared by the update's passes and their backward), and once per model size
in evaluation mode without gradient (generation, validation), where it is kept until the size, the thresholds, the
weights or the scores change, or the model goes back to training.
"""
import contextlib
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

ATTENTION, FFN = "attention", "ffn"


class _StraightThroughStep(torch.autograd.Function):
    """``1[scores > threshold]`` forward, identity gradient to ``scores`` backward."""

    @staticmethod
    def forward(ctx, scores, threshold):
        return (scores > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def keep_threshold(scores: torch.Tensor, keep_fraction: float) -> float:
    """The threshold that keeps exactly ``round(keep_fraction * N)`` of the ``N`` scores (distinct values assumed):
    the midpoint between the k-th and (k+1)-th largest. ``-inf`` keeps all, ``+inf`` none."""
    flat = scores.detach().flatten().float()
    k = int(round(keep_fraction * flat.numel()))
    if k >= flat.numel():
        return float("-inf")
    if k <= 0:
        return float("inf")
    top = torch.topk(flat, k + 1).values
    return float((top[k - 1] + top[k]) / 2)


class _BlockMask(nn.Module):
    """Parametrization ``W -> W * expand(M(S))`` for one weight, reading its scores/threshold from the controller."""

    def __init__(self, controller: "DynamicBlockPruning", key: str):
        super().__init__()
        object.__setattr__(self, "_controller", controller)  # not a submodule: avoid a reference cycle in modules()
        self.key = key

    def forward(self, weight):
        return self._controller.masked(self.key, weight, lambda: self._controller.weight_mask(self.key, weight.shape))


class _BiasMask(_BlockMask):
    def forward(self, bias):
        return self._controller.masked(self.key, bias, lambda: self._controller.bias_mask(self.key))


class DynamicBlockPruning(nn.Module):
    """Scores, masks and thresholds for a stack of transformer layers.

    Args:
        layers: one ``(attention_linears, fc1, fc2)`` per layer: the attention projections (``nn.Linear``) to prune
            in 32 x 32 blocks, and the feed-forward pair whose hidden neurons are pruned.
        sizes: model sizes (fractions of prunable weights kept) that training samples from.
        block_size: side of the square attention blocks.
        refresh_interval: recompute thresholds every this many updates.
    """

    def __init__(
        self,
        layers: Sequence[Tuple[Sequence[nn.Linear], nn.Linear, nn.Linear]],
        sizes: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
        block_size: int = 32,
        refresh_interval: int = 200,
    ):
        super().__init__()
        if not sizes or any(not 0 < s <= 1 for s in sizes):
            raise ValueError(f"model sizes must lie in (0, 1], got {list(sizes)}")
        self.sizes = [float(s) for s in sizes]
        self.block_size = block_size
        self.refresh_interval = refresh_interval
        self.scores = nn.ParameterDict()
        self.kind: Dict[str, str] = {}
        self.size = 1.0
        self.thresholds: Dict[Tuple[str, float], float] = {}
        self._thresholds_at: Optional[int] = None
        self._masked_modules: List[Tuple[nn.Module, str]] = []  # (module, tensor name) of every masked tensor
        self._frozen: Dict[str, tuple] = {}  # evaluation without gradient: key -> (stamp, masked tensor)
        for i, (attn_linears, fc1, fc2) in enumerate(layers):
            for j, lin in enumerate(attn_linears):
                key = f"l{i}_attn{j}"
                rows, cols = (math.ceil(d / block_size) for d in lin.weight.shape)
                self.scores[key] = nn.Parameter(self._magnitude_init(lin.weight, (rows, cols)))
                self.kind[key] = ATTENTION
                self._mask(lin, "weight", _BlockMask(self, key))
            key = f"l{i}_ffn"
            neuron_norm = fc1.weight.detach().norm(dim=1) * fc2.weight.detach().norm(dim=0)
            self.scores[key] = nn.Parameter(self._standardize(neuron_norm))
            self.kind[key] = FFN
            self._mask(fc1, "weight", _BlockMask(self, key + ":fc1"))
            if fc1.bias is not None:
                self._mask(fc1, "bias", _BiasMask(self, key))
            self._mask(fc2, "weight", _BlockMask(self, key + ":fc2"))

    def _mask(self, module: nn.Module, name: str, parametrization: nn.Module):
        parametrize.register_parametrization(module, name, parametrization)
        self._masked_modules.append((module, name))

    # -- initialisation -------------------------------------------------------------------------------------------
    def _magnitude_init(self, weight, grid):
        """Scores start as standardised mean |W| of each block: at step 0 pruning is magnitude pruning."""
        w = weight.detach().abs()
        rows, cols = grid
        padded = w.new_zeros(rows * self.block_size, cols * self.block_size)
        padded[: w.size(0), : w.size(1)] = w
        blocks = padded.view(rows, self.block_size, cols, self.block_size).mean(dim=(1, 3))
        return self._standardize(blocks)

    @staticmethod
    def _standardize(x):
        x = x.float()
        x = (x - x.mean()) / (x.std() + 1e-6) if x.numel() > 1 else x * 0
        return (x + 1e-4 * torch.randn_like(x)).detach()  # break exact ties

    # -- thresholds and sizes -------------------------------------------------------------------------------------
    def type_scores(self, kind: str) -> torch.Tensor:
        return torch.cat([s.detach().flatten() for k, s in self.scores.items() if self.kind[k] == kind])

    def refresh_thresholds(self, num_updates: Optional[int] = None):
        """Recompute the global threshold of each layer type for each model size."""
        for kind in (ATTENTION, FFN):
            scores = self.type_scores(kind)
            for size in set(self.sizes) | {self.size}:
                self.thresholds[(kind, size)] = keep_threshold(scores, size)
        self._thresholds_at = num_updates

    def set_size(self, size: float, num_updates: Optional[int] = None):
        """Use model size ``size`` from now on; thresholds are refreshed when ``refresh_interval`` updates passed."""
        if not 0 < size <= 1:
            raise ValueError(f"model size must lie in (0, 1], got {size}")
        self.size = float(size)
        stale = (
            self._thresholds_at is None
            or (ATTENTION, self.size) not in self.thresholds
            or (num_updates is not None and num_updates - self._thresholds_at >= self.refresh_interval)
        )
        if stale:
            self.refresh_thresholds(num_updates)

    def sample_size(self, num_updates: int, seed: int = 1) -> float:
        """The model size for update ``num_updates``: uniform over ``sizes``, identical on every rank."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + num_updates)
        return self.sizes[int(torch.randint(len(self.sizes), (1,), generator=g))]

    # -- masks --------------------------------------------------------------------------------------------------------
    def score_mask(self, key: str) -> Optional[torch.Tensor]:
        """Binary mask over the scores of ``key`` (straight-through), or None at size 1.0."""
        if self.size >= 1.0:
            return None
        if (self.kind[key], self.size) not in self.thresholds:
            self.refresh_thresholds(self._thresholds_at)
        threshold = self.thresholds[(self.kind[key], self.size)]
        return _StraightThroughStep.apply(self.scores[key], threshold)

    def weight_mask(self, key: str, shape) -> Optional[torch.Tensor]:
        base, _, part = key.partition(":")
        mask = self.score_mask(base)
        if mask is None:
            return None
        if part == "fc1":  # neuron mask over rows of fc1 (ffn_dim x d)
            return mask[:, None]
        if part == "fc2":  # over columns of fc2 (d x ffn_dim)
            return mask[None, :]
        b = self.block_size
        return mask.repeat_interleave(b, 0).repeat_interleave(b, 1)[: shape[0], : shape[1]]

    def bias_mask(self, key: str) -> Optional[torch.Tensor]:
        return self.score_mask(key)

    # -- cost -----------------------------------------------------------------------------------------------------
    def masked(self, key: str, tensor: torch.Tensor, mask_fn) -> torch.Tensor:
        """``tensor * mask_fn()`` (``tensor`` itself when the mask is None, at size 1.0).

        In evaluation mode without gradient the product is kept and returned again until the size, the threshold,
        ``tensor`` or the scores change (their storage, dtype or in-place version), or :meth:`train` is called
        (training updates weights through ``.data``, which no version counter sees)."""
        if self.size >= 1.0:
            return tensor
        if self.training or torch.is_grad_enabled():
            mask = mask_fn()
            return tensor * mask.to(tensor.dtype)
        base = key.partition(":")[0]
        scores = self.scores[base]
        stamp = (self.size, self.thresholds.get((self.kind[base], self.size)), tensor.data_ptr(), tensor.dtype,
                 tensor._version, scores.data_ptr(), scores._version)
        hit = self._frozen.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        out = tensor * mask_fn().to(tensor.dtype)
        self._frozen[key] = (stamp, out)
        return out

    def train(self, mode: bool = True):
        self._frozen.clear()
        return super().train(mode)

    @contextlib.contextmanager
    def cached_masks(self):
        """Within the block, every masked weight is computed once (``torch.nn.utils.parametrize.cached()``), with
        gradient when it is enabled on entry: all passes of a training update (a glancing pass without gradient
        included) share one masked copy per weight and one backward through the mask."""
        with parametrize.cached():
            for module, name in self._masked_modules:
                getattr(module, name)  # computed now, in the caller's grad mode
            yield

    def regularization(self) -> torch.Tensor:
        """``mean(sigmoid(S))`` over every score (multiply by lambda in the criterion)."""
        return torch.cat([torch.sigmoid(s).flatten() for s in self.scores.values()]).mean()

    def kept_fraction(self, kind: str) -> float:
        """Fraction of the blocks of ``kind`` that the current size keeps."""
        masks = [self.score_mask(k) for k in self.scores if self.kind[k] == kind]
        if masks[0] is None:
            return 1.0
        return float(torch.cat([m.flatten() for m in masks]).mean())

    def keep_indices(self, layer: int) -> torch.Tensor:
        """FFN neurons of ``layer`` kept at the current size (for exporting physically smaller weights)."""
        mask = self.score_mask(f"l{layer}_ffn")
        n = self.scores[f"l{layer}_ffn"].numel()
        return torch.arange(n) if mask is None else mask.detach().nonzero().flatten()

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, block_size={self.block_size}, refresh_interval={self.refresh_interval}"


def transformer_layer_linears(layer) -> Tuple[List[nn.Linear], nn.Linear, nn.Linear]:
    """``(attention projections, fc1, fc2)`` of a fairseq ``TransformerEncoderLayer`` (self-attention only)."""
    attn = layer.self_attn
    return [attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj], layer.fc1, layer.fc2
