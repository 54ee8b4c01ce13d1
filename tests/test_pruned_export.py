"""Pruned export: a backbone masked by DynamicBlockPruning at size s, compacted into physically smaller matrices
(BertBackbone with layer_shapes), computes the same function; the shapes, counts and removed neurons are the
expected ones; the compact attention is fairseq's attention when its heads are uniform."""
import copy
import dataclasses
import json
import math

import pytest
import torch
from fairseq.modules import MultiheadAttention

from fairseq_nar_plugins.modules.backbone.bert_backbone import BertBackbone, BertBackboneConfig, parameter_shapes
from fairseq_nar_plugins.modules.pruning.block_pruning import DynamicBlockPruning, transformer_layer_linears
from fairseq_nar_plugins.modules.backbone.compact_attention import CompactSelfAttention
from fairseq_nar_plugins.modules.pruning.pruned_export import (
    compact_attention,
    compact_backbone,
    compact_config,
    export_model_state,
)

SIZES = (1.0, 0.75, 0.5, 0.25)


def tiny_cfg(**overrides):
    return BertBackboneConfig.roberta(**{**dict(vocab_size=60, embed_dim=128, ffn_embed_dim=256, layers=3,
                                                attention_heads=4, num_positions=40, dropout=0.0,
                                                attention_dropout=0.0), **overrides})


def pruned_backbone(seed=0, **overrides):
    """A random backbone (random biases and LayerNorms too, so that every fold matters) with block-pruning masks,
    some blocks forced in or out so that each compaction rule is exercised at every size < 1 (head = 32 dims = one
    block row):

    * layer 0, head 0: q rows pruned (k rows and values kept) -> its q/k dims fold into one;
    * layer 1, head 1: out_proj columns pruned -> head removed; head 2: v rows pruned -> folded into out bias, removed;
    * layer 2, head 3: k rows pruned (v kept) -> qk width 0, the head attends uniformly.
    """
    torch.manual_seed(seed)
    backbone = BertBackbone(tiny_cfg(**overrides))
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "layernorm" in name:
                p.normal_(0.0 if name.endswith("bias") else 1.0, 0.3)
    pruning = DynamicBlockPruning([transformer_layer_linears(l) for l in backbone.layers], sizes=SIZES)
    with torch.no_grad():
        s = pruning.scores
        s["l0_attn0"][0, :] = -50.0  # q rows of head 0
        s["l0_attn1"][0, :] = 50.0  # k rows of head 0 kept
        s["l0_attn2"][0, :] = 50.0  # and its values
        s["l0_attn3"][:, 0] = 50.0
        s["l1_attn3"][:, 1] = -50.0  # out_proj columns of head 1
        s["l1_attn2"][2, :] = -50.0  # v rows of head 2
        s["l1_attn3"][:, 2] = 50.0  # ... whose out_proj columns are kept (fold into the bias)
        s["l2_attn1"][3, :] = -50.0  # k rows of head 3
        s["l2_attn2"][3, :] = 50.0  # v rows of head 3 kept
        s["l2_attn3"][:, 3] = 50.0
    backbone.eval()
    return backbone, pruning


def batch(seed=1, bsz=3, length=9):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, 60, (bsz, length), generator=g)
    tokens[0, -3:] = 1  # right padding
    tokens[1, :2] = 1  # left padding
    padding = tokens.eq(1)
    # DEER-style per-sentence mask: the first 4 positions may not see the others
    attn_mask = torch.zeros(bsz, length, length, dtype=torch.bool)
    attn_mask[:, :4, 4:] = True
    return tokens, padding, attn_mask


def compacted(backbone, size):
    state, shapes = compact_backbone(backbone, size)
    small = BertBackbone(compact_config(backbone.cfg, shapes))
    small.load_state_dict(state, strict=True)
    return small.eval(), state, shapes


@pytest.mark.parametrize("size", [0.75, 0.5, 0.25])
def test_compacted_backbone_computes_the_masked_backbone(size):
    backbone, pruning = pruned_backbone()
    pruning.set_size(size)
    small, _, shapes = compacted(backbone, size)
    tokens, padding, attn_mask = batch()
    with torch.no_grad():
        for mask in (None, attn_mask, attn_mask[0]):
            want = backbone(tokens, padding_mask=padding, self_attn_mask=mask)["hidden_states"]
            got = small(tokens, padding_mask=padding, self_attn_mask=mask)["hidden_states"]
            assert torch.allclose(got, want, atol=1e-5), (size, (got - want).abs().max())
    # each rule was exercised (see pruned_backbone)
    assert shapes[0]["qk_dims"][0] == 1  # 32 query-constant dims folded into one
    assert shapes[1]["v_dims"][1] == 0 and shapes[1]["qk_dims"][1] == 0  # out columns gone: head removed
    assert shapes[1]["v_dims"][2] == 0  # v rows gone, folded into out_proj.bias: head removed
    assert shapes[2]["qk_dims"][3] == 0 and shapes[2]["v_dims"][3] == 32  # uniform head kept
    assert pruning.size == size  # the controller's size is left as it was


def test_size_one_keeps_the_uniform_shapes_and_the_function():
    backbone, pruning = pruned_backbone()
    pruning.set_size(1.0)
    small, state, shapes = compacted(backbone, 1.0)
    assert shapes == [backbone.cfg.layer_shape(i) for i in range(3)]
    tokens, padding, _ = batch()
    with torch.no_grad():
        assert torch.allclose(small(tokens)["hidden_states"], backbone(tokens)["hidden_states"], atol=1e-5)


@pytest.mark.parametrize("size", [0.75, 0.5, 0.25])
def test_parameter_counts_shrink_and_match_the_shapes(size):
    backbone, pruning = pruned_backbone()
    state, shapes = compact_backbone(backbone, size)
    cfg = compact_config(backbone.cfg, shapes)
    assert {k: tuple(v.shape) for k, v in state.items()} == parameter_shapes(cfg)
    full = sum(math.prod(s) for s in parameter_shapes(backbone.cfg).values())
    small = sum(v.numel() for v in state.values())
    assert small < full
    c = cfg.embed_dim
    for i, shape in enumerate(shapes):
        qk, v, f = sum(shape["qk_dims"]), sum(shape["v_dims"]), shape["ffn"]
        layer = sum(t.numel() for k, t in state.items() if k.startswith(f"layers.{i}."))
        assert layer == 2 * qk * (c + 1) + v * (c + 1) + c * v + c + f * (c + 1) + c * f + c + 4 * c
    # the prunable weights shrink at least as much as the size asks (the export also drops what folds away)
    prunable = lambda shapes_: sum(  # noqa: E731
        (2 * sum(s["qk_dims"]) + 2 * sum(s["v_dims"])) * c + 2 * s["ffn"] * c for s in shapes_)
    full_shapes = [backbone.cfg.layer_shape(i) for i in range(3)]
    assert prunable(shapes) < prunable(full_shapes)
    ffn_kept = sum(s["ffn"] for s in shapes) / sum(s["ffn"] for s in full_shapes)
    assert ffn_kept == pytest.approx(round(size * 3 * 256) / (3 * 256))


def test_removed_ffn_neurons_are_exactly_the_masked_ones():
    backbone, pruning = pruned_backbone()
    pruning.set_size(0.5)
    state, shapes = compact_backbone(backbone, 0.5)
    for i, layer in enumerate(backbone.layers):
        kept = pruning.keep_indices(i)
        assert torch.equal(kept, pruning.score_mask(f"l{i}_ffn").nonzero().flatten())
        assert shapes[i]["ffn"] == kept.numel() < 256
        fc1 = layer.fc1.parametrizations.weight.original
        assert torch.equal(state[f"layers.{i}.fc1.weight"], fc1[kept])
        assert torch.equal(state[f"layers.{i}.fc1.bias"], layer.fc1.parametrizations.bias.original[kept])
        assert torch.equal(state[f"layers.{i}.fc2.weight"], layer.fc2.parametrizations.weight.original[:, kept])


def test_masked_blocks_inside_kept_rows_are_zero_in_the_export():
    backbone, pruning = pruned_backbone()
    pruning.set_size(0.5)
    state, shapes = compact_backbone(backbone, 0.5)
    # layer 2, heads 0-2: no fold there; the exported k rows are masked rows of the original, zeros included
    masked_k = backbone.layers[2].self_attn.k_proj.weight.detach()
    exported = state["layers.2.self_attn.k_proj.weight"]
    for row in exported:
        matches = (masked_k == row).all(dim=1)
        assert matches.any()
    assert (exported == 0).sum() > 0  # some pruned blocks sit inside kept rows


def test_layer_shapes_round_trip_through_to_dict_and_json():
    backbone, _ = pruned_backbone()
    _, shapes = compact_backbone(backbone, 0.25)
    cfg = compact_config(backbone.cfg, shapes)
    as_json = json.dumps(cfg.to_dict())
    back = BertBackboneConfig.from_dict(json.loads(as_json))
    assert back == cfg and back.layer_shapes == shapes
    # a JSON string (the --backbone-layer-shapes model arg) is accepted as well
    assert BertBackboneConfig(**{**cfg.to_dict(), "layer_shapes": json.dumps(shapes)}) == cfg
    assert BertBackboneConfig().layer_shapes is None and BertBackboneConfig().to_dict()["layer_shapes"] is None


def test_invalid_layer_shapes_are_refused():
    cfg = tiny_cfg()
    good = cfg.layer_shape(0)
    for bad, match in ([[good]], "one shape per layer"),  \
            ([{**good, "qk_dims": [32, 32]}] * 3, "4 non-negative"), \
            ([{**good, "qk_dims": [1, 32, 32, 32], "v_dims": [0, 32, 32, 32]}] * 3, "v_dims 0"), \
            ("[{", "not valid JSON"):
        with pytest.raises(ValueError, match=match):
            BertBackbone(dataclasses.replace(cfg, layer_shapes=bad) if not isinstance(bad, str)
                         else BertBackboneConfig(**{**cfg.to_dict(), "layer_shapes": bad}))


def test_export_refuses_unpruned_backbones_and_unlisted_sizes():
    with pytest.raises(ValueError, match="no pruning masks"):
        compact_backbone(BertBackbone(tiny_cfg()), 0.5)
    backbone, _ = pruned_backbone()
    with pytest.raises(ValueError, match="not one the model was trained with"):
        compact_backbone(backbone, 0.6)


class _Model(torch.nn.Module):
    """The DEER contract: ``.backbone`` (BertBackbone), ``.pruning`` (DynamicBlockPruning), plus a head."""

    def __init__(self, backbone, pruning):
        super().__init__()
        self.backbone, self.pruning = backbone, pruning
        self.head = torch.nn.Linear(128, 5)


def test_export_model_state_drops_scores_and_loads_into_the_compact_model():
    backbone, pruning = pruned_backbone()
    model = _Model(backbone, pruning)
    state, shapes, counts = export_model_state(model, 0.5)
    assert not any("scores" in k or "parametrizations" in k for k in state)
    assert counts["params_after"] < counts["params_before"]
    assert counts["backbone_after"] == sum(v.numel() for k, v in state.items() if k.startswith("backbone."))
    small = _Model(BertBackbone(compact_config(backbone.cfg, shapes)), None)
    small.load_state_dict(state, strict=True)
    tokens, padding, _ = batch()
    pruning.set_size(0.5)
    with torch.no_grad():
        want = model.head(model.backbone(tokens)["hidden_states"])
        got = small.eval().head(small.backbone(tokens)["hidden_states"])
    assert torch.allclose(got, want, atol=1e-5)


def test_compact_attention_folds_by_hand():
    """Two heads of 2 dims on C = 4: head 0 has a zero q row (fold) and a zero k row (dropped); head 1 a zero v row
    (folded into out_proj's bias) and an out_proj column of zeros (dropped): it keeps no value dim and is removed."""
    torch.manual_seed(0)
    w = {n: torch.randn(4, 4, dtype=torch.float64) for n in "qkvo"}
    b = {n: torch.randn(4, dtype=torch.float64) for n in "qkvo"}
    w["q"][0] = 0
    w["k"][1] = 0
    w["v"][2] = 0
    w["o"][:, 3] = 0
    t, qk, v = compact_attention(w["q"], b["q"], w["k"], b["k"], w["v"], b["v"], w["o"], b["o"], 2)
    assert (qk, v) == ([1, 0], [2, 0])
    assert torch.equal(t["q_proj.weight"], torch.zeros(1, 4, dtype=torch.float64))
    assert torch.equal(t["q_proj.bias"], torch.ones(1, dtype=torch.float64))
    assert torch.allclose(t["k_proj.weight"], b["q"][0] * w["k"][0][None])
    assert torch.equal(t["v_proj.weight"], w["v"][:2])
    assert torch.allclose(t["out_proj.bias"], b["o"] + w["o"][:, 2] * b["v"][2])


def _fairseq_attention(c=64, heads=4):
    torch.manual_seed(3)
    mha = MultiheadAttention(c, heads, self_attention=True)
    with torch.no_grad():
        for p in mha.parameters():
            p.normal_(0, 0.3)
    return mha.eval()


@pytest.mark.parametrize("mask_kind", ["none", "shared", "per_sentence"])
def test_uniform_compact_attention_is_fairseq_attention(mask_kind):
    mha = _fairseq_attention()
    compact = CompactSelfAttention(64, [16] * 4, [16] * 4, scaling=mha.scaling).eval()
    compact.load_state_dict(mha.state_dict())
    x = torch.randn(6, 2, 64)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    mask = {"none": None, "shared": torch.triu(torch.full((6, 6), -1e8), 1),
            "per_sentence": torch.randn(2 * 4, 6, 6)}[mask_kind]
    want, want_w = mha(x, x, x, key_padding_mask=pad, attn_mask=mask, need_weights=True)
    got, got_w = compact(x, x, x, key_padding_mask=pad, attn_mask=mask, need_weights=True)
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(got_w, want_w, atol=1e-6)


def test_ragged_heads_equal_zero_padded_uniform_heads():
    """Per-head widths are the same function as uniform heads whose missing dims have zero weights and biases (and
    a removed head = zero value rows and out_proj columns): the compact module pads, it does not approximate."""
    mha = _fairseq_attention()
    qk_dims, v_dims = [16, 5, 0, 0], [3, 16, 7, 0]
    compact = CompactSelfAttention(64, qk_dims, v_dims, scaling=mha.scaling).eval()
    reference = copy.deepcopy(mha)
    with torch.no_grad():
        def pick(dims):
            return torch.cat([torch.arange(d) + 16 * h for h, d in enumerate(dims)])
        qi, vi = pick(qk_dims), pick(v_dims)
        for name, idx in (("q_proj", qi), ("k_proj", qi), ("v_proj", vi)):
            getattr(compact, name).weight.copy_(getattr(mha, name).weight[idx])
            getattr(compact, name).bias.copy_(getattr(mha, name).bias[idx])
            keep = torch.zeros(64, dtype=torch.bool)
            keep[idx] = True
            getattr(reference, name).weight[~keep] = 0
            getattr(reference, name).bias[~keep] = 0
        compact.out_proj.weight.copy_(mha.out_proj.weight[:, vi])
        compact.out_proj.bias.copy_(mha.out_proj.bias)
        keep = torch.zeros(64, dtype=torch.bool)
        keep[vi] = True
        reference.out_proj.weight[:, ~keep] = 0
    x = torch.randn(5, 3, 64)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True
    mask = torch.randn(3 * 4, 5, 5)
    want, _ = reference(x, x, x, key_padding_mask=pad, attn_mask=mask, need_weights=False)
    got, _ = compact(x, key_padding_mask=pad, attn_mask=mask, need_weights=False)
    assert torch.allclose(got, want, atol=1e-5)


def test_decoding_state_is_restored_after_export():
    backbone, pruning = pruned_backbone()
    pruning.set_size(0.75)
    thresholds = dict(pruning.thresholds)
    compact_backbone(backbone, 0.25)
    assert pruning.size == 0.75 and pruning.thresholds == thresholds


def test_cross_attention_backbone_with_layer_shapes_keeps_uniform_cross_attention():
    cfg = tiny_cfg(cross_attention=True, cross_attention_init="self_attention")
    shapes = [{"ffn": 7, "qk_dims": [32, 1, 0, 0], "v_dims": [32, 2, 5, 0]}] * cfg.layers
    small_cfg = dataclasses.replace(cfg, layer_shapes=shapes)
    model = BertBackbone(small_cfg).eval()
    assert parameter_shapes(small_cfg) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert model.layers[0].encoder_attn.q_proj.weight.shape == (128, 128)
    tokens, _, _ = batch()
    out = model(tokens, encoder_out=torch.randn(3, 4, 128))["hidden_states"]
    assert out.shape == (3, 9, 128) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------- command line (DEER)
EXPORT_UPDATES = 200


def _deer_train_args(data_bin, save_dir):
    from helpers_cli import ctc_train_args

    args = ctc_train_args(data_bin, save_dir, EXPORT_UPDATES, extra=("--prune", "--prune-refresh-interval", "50"))
    args[args.index("nat_ctc_transformer_tiny")] = "deer_tiny"
    args[args.index("no_noise")] = "random_delete"
    return args


@pytest.fixture(scope="module")
def pruned_deer_checkpoint(toy_data_bin, tmp_path_factory):
    """deer_tiny trained with --prune by fairseq-train on the toy task; returns checkpoint_last.pt."""
    from helpers_cli import run_cli

    save_dir = tmp_path_factory.mktemp("deer_pruned")
    run_cli("fairseq_cli.train", _deer_train_args(toy_data_bin, str(save_dir)))
    return str(save_dir / "checkpoint_last.pt")


def _export(argv):
    from scripts_loader import load_script

    return load_script("export_pruned").main(argv)


def _hypotheses(data_bin, ckpt, extra=()):
    """{sentence id: (score, hypothesis)} of fairseq-generate (CTC step + 2 editor iterations)."""
    from helpers_cli import USER_DIR, run_cli

    proc = run_cli("fairseq_cli.generate", [
        data_bin, "--user-dir", USER_DIR, "--task", "translation_lev_ctc", "--path", ckpt, "--gen-subset", "test",
        "--iter-decode-max-iter", "2", "--batch-size", "32", "--required-batch-size-multiple", "1", "--cpu", *extra])
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("H-"):
            sid, score, hyp = (line.split("\t") + [""])[:3]
            out[int(sid[2:])] = (float(score), hyp)
    return out


def test_exported_checkpoint_generates_what_the_masked_model_generates(pruned_deer_checkpoint, toy_data_bin,
                                                                       tmp_path, capsys):
    out = str(tmp_path / "deer_size0.5.pt")
    assert _export(["--checkpoint", pruned_deer_checkpoint, "--size", "0.5", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "parameters (stored elements)" in printed and "file size" in printed
    exported = torch.load(out, map_location="cpu")
    original = torch.load(pruned_deer_checkpoint, map_location="cpu")
    assert not any("scores" in k or "parametrizations" in k or "prune" in k for k in exported["model"])
    margs = exported["cfg"]["model"]
    assert margs.prune is False and margs.prune_size == 1.0
    shapes = json.loads(margs.backbone_layer_shapes)
    assert len(shapes) == 2 and all(s["ffn"] < 128 for s in shapes)
    count = lambda ckpt: sum(v.numel() for v in ckpt["model"].values())  # noqa: E731
    assert count(exported) < count(original)
    masked = _hypotheses(toy_data_bin, pruned_deer_checkpoint, ["--model-overrides", "{'prune_size': 0.5}"])
    compact = _hypotheses(toy_data_bin, out)
    assert len(masked) == len(compact) > 0
    assert sum(bool(h) for _, h in masked.values()) > len(masked) // 2, "the toy model should emit tokens"
    assert {i: h for i, (_, h) in compact.items()} == {i: h for i, (_, h) in masked.items()}
    assert all(abs(compact[i][0] - masked[i][0]) < 1e-3 for i in masked)


def test_export_refuses_bad_requests(pruned_deer_checkpoint, tmp_path, capsys):
    def refused(argv, message):
        with pytest.raises(SystemExit) as e:
            _export(argv)
        assert message in str(e.value), str(e.value)

    out = str(tmp_path / "x.pt")
    refused(["--checkpoint", pruned_deer_checkpoint, "--size", "0.6", "--out", out], "--size 0.6 is not one of")
    refused(["--checkpoint", pruned_deer_checkpoint, "--size", "0.5", "--out", pruned_deer_checkpoint],
            "refusing to overwrite")
    plain = str(tmp_path / "plain.pt")
    torch.save({"model": {"backbone.layers.0.fc1.weight": torch.zeros(2, 2)}, "cfg": {"model": None}}, plain)
    refused(["--checkpoint", plain, "--size", "0.5", "--out", out], "has no pruning scores")
    assert not any(p.name.startswith("x.pt") for p in tmp_path.iterdir())  # nothing (not even a temp file) left
