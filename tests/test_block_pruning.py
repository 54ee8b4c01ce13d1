"""Dynamic block pruning: exact kept fractions per layer type, masked forward = manual masking, STE gradients."""
import copy

import pytest
import torch
from fairseq.modules import TransformerEncoderLayer
from argparse import Namespace

from fairseq_nar_plugins.modules.pruning.block_pruning import (
    ATTENTION,
    FFN,
    DynamicBlockPruning,
    keep_threshold,
    transformer_layer_linears,
)


def make_layers(n=3, dim=64, ffn=128):
    torch.manual_seed(0)
    args = Namespace(encoder_embed_dim=dim, encoder_ffn_embed_dim=ffn, encoder_attention_heads=4, dropout=0.0,
                     attention_dropout=0.0, activation_dropout=0.0, encoder_normalize_before=False,
                     activation_fn="gelu")
    return torch.nn.ModuleList([TransformerEncoderLayer(args) for _ in range(n)])


def test_keep_threshold_keeps_exact_count():
    s = torch.randn(1000)
    for frac in (0.25, 0.5, 0.75, 0.333):
        assert int((s > keep_threshold(s, frac)).sum()) == round(frac * 1000)
    assert (s > keep_threshold(s, 1.0)).all() and not (s > keep_threshold(s, 0.0)).any()


@pytest.mark.parametrize("size", [0.75, 0.5, 0.25])
def test_each_layer_type_keeps_exactly_the_requested_fraction(size):
    layers = make_layers()
    pruning = DynamicBlockPruning([transformer_layer_linears(l) for l in layers])
    pruning.set_size(size, num_updates=0)
    n_attn = 3 * 4 * (64 // 32) ** 2  # layers x projections x blocks per projection
    n_ffn = 3 * 128
    assert pruning.kept_fraction(ATTENTION) == pytest.approx(round(size * n_attn) / n_attn)
    assert pruning.kept_fraction(FFN) == pytest.approx(round(size * n_ffn) / n_ffn)
    # the masks really zero whole 32x32 blocks / whole neurons
    q = layers[0].self_attn.q_proj.weight
    blocks = q.detach().view(2, 32, 2, 32).abs().sum(dim=(1, 3))
    mask = pruning.score_mask("l0_attn0")
    assert torch.equal(blocks == 0, mask == 0)
    fc1, fc2 = layers[1].fc1, layers[1].fc2
    dead = pruning.score_mask("l1_ffn") == 0
    assert (fc1.weight[dead] == 0).all() and (fc1.bias[dead] == 0).all() and (fc2.weight[:, dead] == 0).all()


def test_masked_forward_equals_manually_masked_weights():
    layers = make_layers(n=1)
    reference = copy.deepcopy(layers)
    pruning = DynamicBlockPruning([transformer_layer_linears(l) for l in layers])
    pruning.set_size(0.5, num_updates=0)
    with torch.no_grad():
        ref = reference[0]
        for j, lin in enumerate(transformer_layer_linears(ref)[0]):
            lin.weight.mul_(pruning.weight_mask(f"l0_attn{j}", lin.weight.shape))
        m = pruning.score_mask("l0_ffn")
        ref.fc1.weight.mul_(m[:, None]); ref.fc1.bias.mul_(m); ref.fc2.weight.mul_(m[None, :])
    x = torch.randn(7, 2, 64)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    layers.eval(); reference.eval()
    assert torch.allclose(layers[0](x, pad), reference[0](x, pad), atol=1e-6)
    pruning.set_size(1.0)
    unpruned = copy.deepcopy(layers[0])
    assert torch.allclose(layers[0](x, pad), unpruned(x, pad))


def test_scores_get_straight_through_gradients_and_regularizer_pushes_them_down():
    layers = make_layers(n=1)
    pruning = DynamicBlockPruning([transformer_layer_linears(l) for l in layers])
    pruning.set_size(0.5, num_updates=0)
    x = torch.randn(5, 2, 64)
    layers[0](x, torch.zeros(2, 5, dtype=torch.bool)).pow(2).sum().backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in pruning.scores.values())
    # d/dS mean(sigmoid(S)) > 0 everywhere: gradient descent on the regularizer lowers every score
    for s in pruning.scores.values():
        s.grad = None
    pruning.regularization().backward()
    assert all((s.grad > 0).all() for s in pruning.scores.values())


def test_thresholds_refresh_only_every_interval():
    layers = make_layers(n=1)
    pruning = DynamicBlockPruning([transformer_layer_linears(l) for l in layers], refresh_interval=200)
    pruning.set_size(0.5, num_updates=0)
    before = dict(pruning.thresholds)
    with torch.no_grad():
        for s in pruning.scores.values():
            s.add_(10.0)
    pruning.set_size(0.25, num_updates=100)
    pruning.set_size(0.5, num_updates=199)
    assert pruning.thresholds == before
    pruning.set_size(0.5, num_updates=200)
    assert pruning.thresholds[(FFN, 0.5)] == pytest.approx(before[(FFN, 0.5)] + 10.0, abs=1e-3)


def test_sampled_sizes_are_deterministic_and_cover_the_list():
    pruning = DynamicBlockPruning([transformer_layer_linears(l) for l in make_layers(n=1)])
    draws = [pruning.sample_size(u) for u in range(400)]
    assert draws == [pruning.sample_size(u) for u in range(400)]
    counts = {s: draws.count(s) for s in (1.0, 0.75, 0.5, 0.25)}
    assert all(60 < c < 140 for c in counts.values()), counts
    with pytest.raises(ValueError, match="sizes must lie in"):
        DynamicBlockPruning([], sizes=(1.5,))
