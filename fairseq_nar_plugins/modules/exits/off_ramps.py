"""Off-ramps (ELMER Eq. 7-8) and the soft-exit fusion (Eq. 12).

Off-ramp ``l`` maps the state ``h_t^l`` of decoder layer ``l`` to a distribution over the vocabulary,
``softmax(W_c^l h_t^l)``. The classifiers are *shared* (one for all ``L`` layers; ELMER's pretraining) or
*independent* (one per layer). A full ``V x C`` matrix per layer would cost ``L x V x C`` parameters (38M per layer
at BART-base size), so every off-ramp's projection is tied to the decoder's token embeddings ``E``; what an
independent off-ramp owns is the rest of its head:

* ``mlm`` head (default): BERT's masked-LM head, ``E^T LayerNorm(GELU(D_l h)) + b_l`` (:class:`.backbone.bert_backbone.
  BertLMHead`), so that a BERT-family checkpoint's trained MLM head initialises it; ``W_c^l = E^T T_l`` with ``T_l``
  the transform ``D_l``, GELU, LayerNorm;
* ``linear`` head: ``E^T h + b_l``, the plain tied softmax classifier of Eq. 8 (BART's output layer with its
  ``final_logits_bias``).

Parameter names: ``heads.{i}.*`` with ``i = 0`` for shared off-ramps and ``i = l - 1`` for independent ones.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..backbone.bert_backbone import BertBackboneConfig, BertLMHead

OFF_RAMP_HEADS = ("mlm", "linear")
SOFT_EXIT_INITS = ("identity", "random")


class LinearHead(nn.Module):
    """``E^T h + b``: the projection tied to ``embed_tokens_weight`` ``(V, C)``, a bias ``(V,)``."""

    def __init__(self, embed_tokens_weight: Tensor):
        super().__init__()
        self.weight = embed_tokens_weight
        self.bias = nn.Parameter(torch.zeros(embed_tokens_weight.size(0)))

    def forward(self, features: Tensor) -> Tensor:
        """``(..., C)`` -> ``(..., V)`` logits."""
        return F.linear(features, self.weight) + self.bias


class OffRamps(nn.Module):
    """One classifier per decoder layer (``shared=False``) or one for all (``shared=True``).

    Args:
        cfg: the decoder backbone's config (width, activation, LayerNorm epsilon).
        embed_tokens_weight: ``(V, C)`` decoder token embeddings every head's projection is tied to.
        num_layers: L.
        shared: one head for every layer.
        head: ``"mlm"`` or ``"linear"`` (see the module docstring).
    """

    def __init__(self, cfg: BertBackboneConfig, embed_tokens_weight: Tensor, num_layers: int, shared: bool,
                 head: str = "mlm"):
        super().__init__()
        if head not in OFF_RAMP_HEADS:
            raise ValueError(f"off-ramp head must be one of {OFF_RAMP_HEADS}, got {head!r}")
        self.num_layers = num_layers
        self.shared = shared
        self.head_kind = head
        n = 1 if shared else num_layers
        make = (lambda: BertLMHead(cfg, embed_tokens_weight)) if head == "mlm" else \
            (lambda: LinearHead(embed_tokens_weight))
        self.heads = nn.ModuleList([make() for _ in range(n)])

    def head(self, layer: int) -> nn.Module:
        """The head of 0-based decoder layer ``layer``."""
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} outside 0..{self.num_layers - 1}")
        return self.heads[0 if self.shared else layer]

    def forward(self, layer: int, features: Tensor) -> Tensor:
        """Logits ``(..., V)`` of the off-ramp of 0-based layer ``layer`` for states ``(..., C)``."""
        return self.head(layer)(features)

    def by_layer(self, layers: Tensor, features: Tensor) -> Tensor:
        """Logits ``(N, V)`` for states ``(N, C)`` each at its own 1-based layer ``layers`` ``(N,)``: one call for
        shared off-ramps, one per layer present otherwise."""
        if self.shared:
            return self.heads[0](features)
        out = None
        for layer in layers.unique().tolist():
            rows = layers.eq(layer)
            logits = self.heads[layer - 1](features[rows])
            if out is None:
                out = logits.new_zeros(features.size(0), logits.size(-1))
            out[rows] = logits
        return out

    @torch.no_grad()
    def load_head_state(self, state: dict) -> list:
        """Load a masked-LM head state (``dense.*``, ``layer_norm.*``, ``bias``; a BERT-family checkpoint's) into
        every head; returns the keys no head could take (empty when everything fitted)."""
        unused = set(state)
        for head in self.heads:
            own = head.state_dict()
            for key, value in state.items():
                if key in own and own[key].shape == value.shape:
                    own[key].copy_(value)
                    unused.discard(key)
        return sorted(unused)


class SoftExitFusion(nn.Module):
    """``h~ = W [Embed(y^) ; h]`` (ELMER Eq. 12), ``W`` ``(C, 2C)`` without bias (the authors' ``concat_head``).

    ``init="identity"`` (default) sets ``W = [0 | I]``, so that the fused state equals ``h`` and a soft-exit decoder
    starts as the plain decoder (a pretrained LPLM model keeps working at the first fine-tuning update);
    ``"random"`` uses ``nn.Linear``'s initialisation, as the authors' code."""

    def __init__(self, dim: int, init: str = "identity"):
        super().__init__()
        if init not in SOFT_EXIT_INITS:
            raise ValueError(f"soft-exit init must be one of {SOFT_EXIT_INITS}, got {init!r}")
        self.proj = nn.Linear(2 * dim, dim, bias=False)
        if init == "identity":
            with torch.no_grad():
                self.proj.weight.zero_()
                self.proj.weight[:, dim:].copy_(torch.eye(dim))

    def forward(self, predicted_embeddings: Tensor, states: Tensor) -> Tensor:
        """``predicted_embeddings`` ``(..., C)`` = ``Embed(y^)``, ``states`` ``(..., C)`` = ``h`` -> ``(..., C)``."""
        return self.proj(torch.cat([predicted_embeddings, states], dim=-1))
