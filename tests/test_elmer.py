"""ELMER (shared/papers/001): exit sampling, the LPLM loop against a brute-force per-layer loop, gradient locality
and the copy rule, hard exit on hand-made off-ramp distributions (exit layers, layer calls, live-position compute),
soft exit, the canvas (source-only length, labels, overflow, cut at the first </s>), no target leak, the generator
contract, checkpoint completion / refusal, the criterion's bookkeeping, and end to end: soft and hard ELMER learn the
toy task through fairseq-train -> fairseq-generate, and LPLM pretraining -> resume -> fine-tuning."""
import math
import os
import re
import shutil
from argparse import Namespace

import pytest
import torch
from fairseq.data import Dictionary
from fairseq.iterative_refinement_generator import IterativeRefinementGenerator
from helpers_cli import USER_DIR, run_cli

from fairseq_nar_plugins.criterions.layer_permutation import LayerPermutationCriterion
from fairseq_nar_plugins.models.elmer import ELMERModel, check_threshold, elmer_tiny
from fairseq_nar_plugins.modules.exits import (
    CanvasRule,
    canvas_labels,
    cut_at_first_eos,
    decoder_layer_at,
    entropy,
    pack_positions,
    run_hard_exit,
    run_lplm,
    sample_exit_layers,
)
from fairseq_nar_plugins.modules.exits.live_layer import scatter_positions


class _Task:
    def __init__(self, d):
        self.source_dictionary = self.target_dictionary = d


def toy_dictionary():
    d = Dictionary()
    for i in range(20):
        d.add_symbol(f"w{i}")
    return d


def tiny_elmer(seed=0, d=None, **flags):
    torch.manual_seed(seed)
    d = d or toy_dictionary()
    args = Namespace(**{"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "canvas_max_length": 8,
                        **flags})
    elmer_tiny(args)
    return ELMERModel.build_model(args, _Task(d)).eval(), d


def batch(d, rows, left=False):
    """rows of word ids -> [<s> ... </s>] LongTensor, right- (or left-) padded."""
    seqs = [[d.bos()] + [d.index(f"w{i}") for i in r] + [d.eos()] for r in rows]
    out = torch.full((len(seqs), max(map(len, seqs))), d.pad())
    for i, s in enumerate(seqs):
        if left:
            out[i, out.size(1) - len(s):] = torch.tensor(s)
        else:
            out[i, : len(s)] = torch.tensor(s)
    return out


def decoder_inputs(model, d, src_rows=((1, 2, 3), (4, 5))):
    src = batch(d, src_rows, left=True)
    enc = model.encoder(src)
    canvas, padding = model.decoder.canvas(enc)
    return src, enc, canvas, padding


# ------------------------------------------------------------------------------------------- exit sampling


def test_exit_layers_are_uniform_independent_and_reproducible():
    L = 4
    torch.manual_seed(3)
    draws = sample_exit_layers((5000, 4), L)  # 20k draws, 4 positions
    assert draws.min() == 1 and draws.max() == L and draws.dtype == torch.long
    n = draws.numel()
    sigma = math.sqrt(n * (1 / L) * (1 - 1 / L))
    counts = torch.bincount(draws.flatten(), minlength=L + 1)[1:]
    assert all(abs(c - n / L) < 4 * sigma for c in counts.tolist()), counts
    chi2 = float(((counts.double() - n / L) ** 2 / (n / L)).sum())
    assert chi2 < 16.3, chi2  # chi-square, 3 degrees of freedom, p = 0.001
    # the same law at every position, and no correlation between neighbouring positions
    per_position = draws.double().mean(0)
    assert (per_position - 2.5).abs().max() < 4 * math.sqrt(1.25 / 5000), per_position
    corr = torch.corrcoef(draws[:, :2].double().t())[0, 1]
    assert abs(float(corr)) < 4 / math.sqrt(5000), corr
    # reproducible: torch's global generator under manual_seed (what fairseq's trainer reseeds), or a generator
    torch.manual_seed(11)
    a = sample_exit_layers((3, 2, 7), L)
    torch.manual_seed(11)
    assert torch.equal(a, sample_exit_layers((3, 2, 7), L))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(sample_exit_layers((3, 9), L, g1), sample_exit_layers((3, 9), L, g2))


def test_entropy_matches_its_definition():
    logits = torch.randn(6, 11, dtype=torch.float64)
    p = torch.softmax(logits, -1)
    assert torch.allclose(entropy(logits), -(p * p.log()).sum(-1))
    one_hot = torch.full((1, 5), -1e4)
    one_hot[0, 2] = 1e4
    assert entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    assert entropy(torch.zeros(1, 7)).item() == pytest.approx(math.log(7))
    banned = torch.tensor([[0.0, 0.0, float("-inf")]])  # a banned symbol contributes nothing
    assert entropy(banned).item() == pytest.approx(math.log(2))


# -------------------------------------------------------------------------------------------------- LPLM


def brute_force_lplm(layers, x, exits):
    """ELMER section 4.1 read literally, one position at a time: h_t^l = Layer_l(h^{l-1})_t while l <= l_t, then
    h_t^l = h_t^{l_t}; returns h_t^{l_t} for every position."""
    bsz, width, _ = x.shape
    states = [[x[b, t] for t in range(width)] for b in range(bsz)]
    exit_state = [[None] * width for _ in range(bsz)]
    for layer in range(1, int(exits.max()) + 1):
        h = torch.stack([torch.stack(row) for row in states])
        y = layers(layer - 1, h)
        for b in range(bsz):
            for t in range(width):
                if layer <= exits[b, t]:
                    states[b][t] = y[b, t]
                if layer == exits[b, t]:
                    exit_state[b][t] = y[b, t]
    return torch.stack([torch.stack(row) for row in exit_state])


def test_lplm_loop_equals_a_brute_force_per_layer_loop():
    model, d = tiny_elmer(exit_mode="lplm")
    _, enc, canvas, padding = decoder_inputs(model, d)
    layer_fn, _ = model.decoder.layer_functions(enc, padding)
    x = model.decoder.embed(canvas, padding)
    torch.manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            exits = sample_exit_layers(canvas.shape, model.num_layers)
            ours, run = run_lplm(layer_fn, x, exits)
            assert run == int(exits.max())
            assert torch.allclose(ours, brute_force_lplm(layer_fn, x, exits), atol=1e-6)
        # every token at layer L: the plain decoder, bit for bit
        full = torch.full_like(canvas, model.num_layers)
        assert torch.equal(model.decoder.run_lplm(enc, canvas, padding, full),
                           model.decoder.run_last(enc, canvas, padding))
        # every token at layer 1: only layer 1 runs, and the states are layer 1's
        calls = []
        hooks = [layer.register_forward_hook(lambda m, i, o, n=n: calls.append(n))
                 for n, layer in enumerate(model.decoder.backbone.layers)]
        ones = model.decoder.run_lplm(enc, canvas, padding, torch.ones_like(canvas))
        for h in hooks:
            h.remove()
        assert calls == [0]
        assert torch.equal(ones, layer_fn(0, x))


def test_lplm_gradient_locality_and_copy_rule():
    model, d = tiny_elmer(exit_mode="lplm")
    model.train()
    _, enc, canvas, padding = decoder_inputs(model, d, ((1, 2, 3),))
    width = canvas.size(1)
    exits = torch.full((1, width), 3)
    exits[0, 1] = 1  # token 1 exits at layer 1
    exits[0, 4] = 2
    layer_fn, _ = model.decoder.layer_functions(enc, padding)
    for detach in (True, False):
        outputs, inputs = [], []

        def recording(i, x):
            inputs.append(x)
            y = layer_fn(i, x)
            y.retain_grad()
            outputs.append(y)
            return y

        x = model.decoder.embed(canvas, padding)
        states, _ = run_lplm(recording, x, exits, detach=detach)
        # copy rule: what enters layers 2 and 3 at position 1 is h_1^1; at position 4, layer 3 reads h_4^2
        assert torch.equal(inputs[1][0, 1], outputs[0][0, 1]) and torch.equal(inputs[2][0, 1], outputs[0][0, 1])
        assert torch.equal(inputs[2][0, 4], outputs[1][0, 4])
        logits = model.decoder.off_ramps(0, states[0])
        loss_1 = logits[1].logsumexp(-1)  # any function of token 1's exit state
        upper = [p for n, p in model.decoder.backbone.layers.named_parameters() if not n.startswith("0.")]
        grads = torch.autograd.grad(loss_1, upper, retain_graph=True, allow_unused=True)
        assert all(g is None or g.abs().max() == 0 for g in grads), "token 1 reached layers 2..L"
        # token 6 (exit 3) reads token 1's copied state in layers 2 and 3
        loss_6 = logits[6].logsumexp(-1)
        g = torch.autograd.grad(loss_6, outputs[0], retain_graph=True)[0][0, 1]
        if detach:
            assert g.abs().max() == 0, "a detached copy passed gradient back to the exited state"
        else:
            assert g.abs().max() > 0


def test_k_permutations_are_k_independent_decoder_passes():
    model, d = tiny_elmer(exit_mode="lplm")
    src = batch(d, [[1, 2, 3], [4, 5]], left=True)
    tgt = batch(d, [[6, 7, 8], [9, 10]])
    width = model.decoder.canvas(model.encoder(src))[0].size(1)
    torch.manual_seed(2)
    exits = sample_exit_layers((3, 2, width), model.num_layers)
    with torch.no_grad():
        out = model(src, None, None, tgt, exit_layers=exits)
        n = out["positions"]
        assert out["logits"].size(0) == 3 * n and torch.allclose(out["weight"].sum(), torch.tensor(float(n)))
        for k in range(3):
            one = model(src, None, None, tgt, exit_layers=exits[k])
            assert torch.allclose(out["logits"][k * n:(k + 1) * n], one["logits"], atol=1e-5)
            assert torch.equal(out["layer"][k * n:(k + 1) * n], one["layer"])


# --------------------------------------------------------------------------------------------- hard exit


class HandMade:
    """A decoder whose layers copy their input and whose off-ramps return hand-made distributions: position ``t``
    at layer ``l`` gets logits with entropy ``H[l][t]`` (two-symbol mixtures over a 4-symbol vocabulary) and
    argmax symbol ``l`` (so the exit layer can be read from the prediction)."""

    def __init__(self, H):
        self.H = torch.tensor(H, dtype=torch.float64)  # (L, T)
        self.calls = []

    @staticmethod
    def logits_with_entropy(h, top):
        # p = (1 - q, q) on symbols (top, 3 - top); find q in (0, 0.5] with binary entropy h (bisection)
        lo, hi = 1e-12, 0.5
        for _ in range(200):
            mid = (lo + hi) / 2
            e = -(mid * math.log(mid) + (1 - mid) * math.log(1 - mid))
            lo, hi = (mid, hi) if e < h else (lo, mid)
        q = (lo + hi) / 2
        logits = torch.full((4,), -1e9, dtype=torch.float64)
        logits[top], logits[3 - top] = math.log(1 - q), math.log(q)
        return logits

    def layer_fn(self, i, x):
        self.calls.append(i)
        return x.clone()

    def ramp_fn(self, i, h):  # h (n, 1) holds each position's index
        return torch.stack([self.logits_with_entropy(float(self.H[i, int(t)]), top=i % 3)
                            for t in h[:, 0].tolist()]) if h.size(0) else torch.zeros(0, 4, dtype=torch.float64)


def test_hard_exit_on_hand_made_distributions_for_a_grid_of_thresholds():
    # entropies (nats; max ln 2 = 0.693 for two symbols) of 5 positions at the off-ramps of layers 1, 2, 3
    H = [[0.10, 0.60, 0.60, 0.30, 0.69],
         [0.50, 0.20, 0.60, 0.45, 0.69],
         [0.60, 0.60, 0.60, 0.60, 0.69]]
    x = torch.arange(5, dtype=torch.float64)[None, :, None]
    padding = torch.zeros(1, 5, dtype=torch.bool)

    def expected(delta):
        return [next((l + 1 for l in range(2) if H[l][t] < delta), 3) for t in range(5)]

    previous = None
    for delta in (0.0, 0.05, 0.15, 0.25, 0.35, 0.5, 0.65, 0.7, math.log(4)):
        m = HandMade(H)
        res = run_hard_exit(m.layer_fn, m.ramp_fn, x, padding, 3, delta)
        want = expected(delta)
        assert res.exit_layers[0].tolist() == want, (delta, res.exit_layers, want)
        # prediction and score taken at the exit layer
        assert res.tokens[0].tolist() == [(layer - 1) % 3 for layer in want]
        for t, layer in enumerate(want):
            h = H[layer - 1][t]
            q_logp = HandMade.logits_with_entropy(h, 0).log_softmax(-1).max()
            assert res.scores[0, t].item() == pytest.approx(float(q_logp), abs=1e-5)
        # the loop stops when every token has exited: layer calls = the deepest exit
        assert m.calls == list(range(max(want))) and res.layers_run == max(want)
        if previous is not None:  # exit layers never increase with the threshold
            assert all(a <= b for a, b in zip(want, previous))
        previous = want
    assert previous == [1, 1, 1, 1, 1]  # ln V: everything exits at layer 1


def test_hard_exit_freezes_exited_states_and_gathers_live_positions():
    H = [[0.1, 0.6, 0.6, 0.1], [0.6, 0.1, 0.6, 0.6], [0.6] * 4]
    m = HandMade(H)
    x = torch.arange(4, dtype=torch.float64)[None, :, None]

    def moving_layer(i, x):  # a layer that changes every state (so freezing is visible)
        m.calls.append(i)
        return x + 10.0

    def ramp(i, h):
        return m.ramp_fn(i, h.remainder(10.0))

    live_calls = []

    def live_fn(i, x, live):
        live_calls.append(int(live.sum()))
        return torch.where(live[..., None], x + 10.0, x)

    dense = run_hard_exit(moving_layer, ramp, x, torch.zeros(1, 4, dtype=torch.bool), 3, 0.5, keep_states=True)
    assert dense.exit_layers[0].tolist() == [1, 2, 3, 1]
    final = dense.states[-1][0, :, 0].tolist()
    assert final == [10.0, 21.0, 32.0, 13.0]  # exited states keep the value of their exit layer
    gathered = run_hard_exit(moving_layer, ramp, x, torch.zeros(1, 4, dtype=torch.bool), 3, 0.5, live_fn=live_fn,
                             keep_states=True)
    assert torch.equal(gathered.exit_layers, dense.exit_layers) and torch.equal(gathered.tokens, dense.tokens)
    assert torch.equal(gathered.states[-1], dense.states[-1])
    assert live_calls == [2, 1] and gathered.work == [4, 2, 1] and dense.work == [4, 4, 4]


def test_live_position_layer_equals_the_full_layer():
    model, d = tiny_elmer()
    _, enc, canvas, padding = decoder_inputs(model, d)
    x = torch.randn(canvas.size(1), canvas.size(0), 64)
    layer = model.decoder.backbone.layers[1]
    e, e_pad = enc["encoder_out"].transpose(0, 1), enc["encoder_padding_mask"]
    with torch.no_grad():
        full, _, _ = layer(x, e, e_pad, self_attn_padding_mask=padding)
        torch.manual_seed(4)
        live = torch.rand(padding.shape) < 0.5
        live[1, :] = False  # a row with nothing live
        index, valid = pack_positions(live)
        assert valid.sum(1).tolist() == live.sum(1).tolist()
        out = decoder_layer_at(layer, x, index, valid, e, e_pad, padding)
        merged = scatter_positions(x, out, index, valid)
    lt = live.t()
    assert torch.allclose(merged[lt], full[lt], atol=1e-5)
    assert torch.equal(merged[~lt], x[~lt])


def test_hard_decoding_with_live_gather_equals_dense_and_does_less_work():
    model, d = tiny_elmer(exit_mode="hard")
    _, enc, canvas, padding = decoder_inputs(model, d)
    # a threshold at which some but not all tokens leave early (random weights: entropies near ln V)
    with torch.no_grad():
        dense_ent = [float(entropy(model.decoder.off_ramps(0, h)).median())
                     for h in [model.decoder.run_lplm(enc, canvas, padding, torch.ones_like(canvas))]]
        delta = dense_ent[0]
        a = model.decoder.run_hard(enc, canvas, padding, delta, banned=model.banned_symbols, live_gather=True)
        b = model.decoder.run_hard(enc, canvas, padding, delta, banned=model.banned_symbols, live_gather=False)
    assert 0 < int((a.exit_layers == 1).sum()) < int((~padding).sum())
    assert torch.equal(a.exit_layers, b.exit_layers) and torch.equal(a.tokens, b.tokens)
    assert torch.allclose(a.scores, b.scores, atol=1e-5)
    assert sum(a.work) < sum(b.work)


# --------------------------------------------------------------------------------------------- soft exit


def test_soft_exit_at_initialisation_equals_the_plain_decoder_and_fuses_as_eq_12():
    soft, d = tiny_elmer(exit_mode="soft")
    last, _ = tiny_elmer(exit_mode="last")
    src = batch(d, [[1, 2, 3], [4, 5]], left=True)
    tgt = batch(d, [[6, 7, 8], [9]])
    with torch.no_grad():
        a = soft(src, None, None, tgt)
        b = last(src, None, None, tgt)
        L, n = soft.num_layers, b["positions"]
        assert torch.allclose(a["logits"][(L - 1) * n:], b["logits"], atol=1e-5)
        assert a["layer"].tolist() == [l for l in range(1, L + 1) for _ in range(n)]
        assert torch.allclose(a["weight"], torch.full_like(a["weight"], 1 / L))  # the mean of the L layers
    # Eq. 12 on one position: W [E(y^) ; h]
    fusion = soft.decoder.soft_fusion
    with torch.no_grad():
        fusion.proj.weight.normal_()
    h = torch.randn(1, 1, 64)
    y = torch.tensor([[5]])
    e = soft.decoder.backbone.embeddings.embed_tokens.weight[5]
    by_hand = fusion.proj.weight @ torch.cat([e, h[0, 0]])
    assert torch.allclose(soft.decoder.fuse(y, h)[0, 0], by_hand, atol=1e-5)


def test_soft_exit_argmax_passes_no_gradient_to_the_logits():
    soft, d = tiny_elmer(exit_mode="soft")
    soft.train()
    _, enc, canvas, padding = decoder_inputs(soft, d, ((1, 2),))
    keep = ~padding
    per_layer, _ = soft.decoder.run_soft(enc, canvas, padding, keep=keep)
    for p in per_layer:
        p.retain_grad()
    per_layer[-1].sum().backward()  # only the last layer's term
    assert per_layer[0].grad is None or per_layer[0].grad.abs().max() == 0


# ------------------------------------------------------------------------------------------------ canvas


def test_canvas_rule_fixed_and_ratio_with_caps():
    src = torch.tensor([3, 10, 40])
    assert CanvasRule(0, 5, 16).lengths(src).tolist() == [16, 16, 16]
    assert CanvasRule(1.5, 2, 40).lengths(src).tolist() == [6, 17, 40]  # floor(4.5 + 2), floor(17), cap
    assert CanvasRule(0.1, 0, 40).lengths(src).tolist() == [1, 1, 4]  # at least 1
    assert CanvasRule(0, 0, 64).lengths(src, limit=20).tolist() == [20, 20, 20]  # the position table
    for bad in (dict(ratio=-1), dict(ratio=float("nan")), dict(max_length=0), dict(offset=float("inf"))):
        with pytest.raises(ValueError, match="--canvas"):
            CanvasRule(**bad)


def test_canvas_labels_fill_and_overflow():
    bos, pad, eos, a, b, c = 0, 1, 2, 5, 6, 7
    tgt = torch.tensor([[bos, a, b, eos, pad], [bos, a, b, c, eos]])
    lab = canvas_labels(tgt, torch.tensor([5, 3]), bos, eos, pad, "eos")
    assert lab.labels[0].tolist() == [a, b, eos, eos, eos]
    assert lab.supervised[0].tolist() == [True] * 5 and lab.fill[0].tolist() == [False, False, False, True, True]
    assert lab.needed.tolist() == [3, 4] and lab.fits.tolist() == [True, False]
    assert not lab.supervised[1].any()  # a target longer than its canvas is skipped
    ign = canvas_labels(tgt, torch.tensor([5, 5]), bos, eos, pad, "ignore")
    assert ign.labels[0].tolist() == [a, b, eos, pad, pad] and ign.supervised[0].tolist() == [True] * 3 + [False] * 2
    assert ign.labels[1].tolist() == [a, b, c, eos, pad]
    # unsupervised <pad> inside the target (--loss-positions corrupted): lengths from full_target
    corrupted = torch.tensor([[bos, pad, b, pad, pad]])
    full = torch.tensor([[bos, a, b, eos, pad]])
    lab = canvas_labels(corrupted, torch.tensor([4]), bos, eos, pad, "eos", full_target=full)
    assert lab.labels[0].tolist() == [pad, b, eos, eos] and lab.supervised[0].tolist() == [False, True, True, True]


def test_cut_at_first_eos():
    bos, pad, eos, a, b = 0, 1, 2, 5, 6
    tokens = torch.tensor([[a, b, eos, a, eos], [eos, a, a, a, a], [a, b, a, b, pad]])
    scores = -torch.arange(15, dtype=torch.float).view(3, 5) / 10
    padding = torch.tensor([[False] * 5, [False] * 5, [False] * 4 + [True]])
    rows, sc = cut_at_first_eos(tokens, scores, padding, bos, eos, pad)
    assert rows.tolist() == [[bos, a, b, eos, pad, pad], [bos, eos, pad, pad, pad, pad], [bos, a, b, a, b, eos]]
    assert sc[0].tolist()[:4] == pytest.approx([0.0, 0.0, -0.1, -0.2]) and sc[1].tolist()[:2] == pytest.approx(
        [0.0, -0.5])
    assert sc[2].tolist() == pytest.approx([0.0, -1.0, -1.1, -1.2, -1.3, 0.0])  # no </s>: appended, score 0
    forced, _ = cut_at_first_eos(tokens, scores, padding, bos, eos, pad, lengths=torch.tensor([3, 1, 2]))
    assert forced.tolist() == [[bos, a, b, eos, eos], [bos, eos, eos, pad, pad], [bos, a, b, eos, pad]]


def test_decoder_never_sees_the_target_and_its_length_comes_from_the_source():
    for mode in ("lplm", "hard", "soft", "last"):
        model, d = tiny_elmer(exit_mode=mode, canvas_ratio=1.5, canvas_offset=2.0, canvas_max_length=32)
        src = batch(d, [[1, 2, 3], [4, 5]], left=True)
        tgt = batch(d, [[6, 7, 8, 9], [10, 11]])
        other = batch(d, [[12, 13, 14, 15], [16, 17]])  # same lengths, other symbols
        prev = torch.full_like(tgt, d.unk())
        torch.manual_seed(0)
        exits = sample_exit_layers((1, 2, 9), model.num_layers)
        with torch.no_grad():
            a = model(src, None, prev, tgt, exit_layers=exits)["logits"]
            b = model(src, None, tgt, other, exit_layers=exits)["logits"]  # targets as decoder input: ignored
            assert torch.equal(a, b), mode
            # ... the canvas depends on the source lengths only (5 and 4 tokens -> 9 and 8 positions)
            enc = model.encoder(src)
            assert model.decoder.canvas_lengths(enc).tolist() == [9, 8]
            longer = batch(d, [[6, 7, 8, 9, 10, 11, 12], [10]])
            assert model.decoder.canvas(enc)[0].shape == (2, 9)
            model(src, None, None, longer, exit_layers=exits)  # targets of other lengths, same canvas
            # ... and the logits depend on the source
            c = model(batch(d, [[1, 2, 4], [4, 6]], left=True), None, prev, tgt, exit_layers=exits)["logits"]
            assert (a - c).abs().max() > 1e-6, mode


# ------------------------------------------------------------------------------------------- generation


def test_generator_contract_rows_scores_and_unchanged_later_steps():
    model, d = tiny_elmer(exit_mode="soft", canvas_ratio=1.0, canvas_offset=1.0, canvas_max_length=16)
    src = batch(d, [[1, 2, 3, 4], [5], [6, 7]], left=True)
    sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1)}}
    with torch.no_grad():  # every position prefers w3 (never </s>)
        head = model.decoder.off_ramps.heads[0]
        head.bias.zero_()
        head.bias[d.index("w3")] = 50.0
    hyps = IterativeRefinementGenerator(d, max_iter=0).generate([model], sample)
    canvas = model.decoder.canvas_lengths(model.encoder(src)).tolist()
    assert canvas == [7, 4, 5]  # 1.0 x (source with <s>, </s>) + 1
    for h, length in zip(hyps, canvas):
        tokens, scores = h[0]["tokens"], h[0]["positional_scores"]
        # no </s> predicted: the whole canvas, then </s>
        assert tokens.tolist() == [d.bos()] + [d.index("w3")] * length + [d.eos()]
        assert scores.shape == tokens.shape and (scores <= 0).all()
    # a step after the first changes nothing, so --iter-decode-max-iter 3 stops after step 0 with the same rows
    again = IterativeRefinementGenerator(d, max_iter=3).generate([model], sample)
    assert [h[0]["tokens"].tolist() for h in again] == [h[0]["tokens"].tolist() for h in hyps]
    assert all(h[0]["steps"] == 1 for h in again)
    # </s> preferred everywhere: every row ends at once (the cut itself is tested on hand-made rows above)
    with torch.no_grad():
        model.decoder.off_ramps.heads[0].bias[d.eos()] = 60.0
    short = IterativeRefinementGenerator(d, max_iter=0).generate([model], sample)
    assert all(h[0]["tokens"].tolist() == [d.bos(), d.eos()] for h in short)


def test_hard_decoding_reports_exit_statistics_and_forced_lengths():
    model, d = tiny_elmer(exit_mode="hard", canvas_max_length=10)
    src = batch(d, [[1, 2, 3], [4, 5]], left=True)
    sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1)}}
    gen = IterativeRefinementGenerator(d, max_iter=0)
    model.apply_model_overrides({"exit_threshold": 0.0})
    gen.generate([model], sample)
    s = model.exit_stats.summary()
    assert s["mean_exit_layer"] == 3.0 and s["work_share"] == 1.0 and s["mean_layers_run"] == 3.0
    model.exit_stats.reset()
    model.apply_model_overrides({"exit_threshold": math.log(len(d))})  # everything at layer 1
    gen.generate([model], sample)
    s = model.exit_stats.summary()
    assert s["mean_exit_layer"] == 1.0 and s["work_share"] == pytest.approx(1 / 3) and s["mean_layers_run"] == 1
    with pytest.raises(ValueError, match=r"outside \[0, ln V\]"):
        model.apply_model_overrides({"exit_threshold": -0.1})
    with pytest.raises(ValueError, match="soft needs its fusion"):
        model.apply_model_overrides({"exit_mode": "soft"})
    model.force_output_lengths(torch.tensor([4, 2]))
    hyps = gen.generate([model], sample)
    assert [len(h[0]["tokens"]) for h in hyps] == [6, 4]  # <s> + forced tokens + </s>
    assert all(d.eos() not in h[0]["tokens"][1:-1].tolist() for h in hyps)
    model.force_output_lengths(None)


# ---------------------------------------------------------------------------------- checkpoints, flags


def test_lplm_checkpoint_completes_into_soft_and_independent_models_and_others_are_refused(caplog):
    lplm, d = tiny_elmer(exit_mode="lplm")
    state = {k: v.clone() for k, v in lplm.state_dict().items()}
    soft, _ = tiny_elmer(seed=1, d=d, exit_mode="soft", off_ramps="independent")
    with caplog.at_level("INFO"):
        soft.load_state_dict({k: v.clone() for k, v in state.items()})
    log = caplog.text
    assert "decoder.soft_fusion.proj.weight (new: soft-exit fusion, identity init)" in log
    assert "decoder.off_ramps.heads.2.dense.weight (copy of the shared off-ramp's" in log
    new = soft.state_dict()
    for k, v in state.items():  # every checkpoint tensor arrives unchanged
        assert torch.equal(new[k], v), k
    for i in range(3):
        assert torch.equal(new[f"decoder.off_ramps.heads.{i}.dense.weight"],
                           state["decoder.off_ramps.heads.0.dense.weight"])
    # the soft model at its first update decodes like the LPLM model run to full depth
    src = batch(d, [[1, 2, 3]])
    tgt = batch(d, [[4, 5]])
    with torch.no_grad():
        a = soft(src, None, None, tgt)["logits"]
        lplm.exit_mode = "last"
        b = lplm(src, None, None, tgt)["logits"]
    assert torch.allclose(a[-b.size(0):], b, atol=1e-5)  # the last layer's rows
    # a soft checkpoint into a non-soft model, independent into shared, a BnB checkpoint: refused with the reason
    hard, _ = tiny_elmer(d=d, exit_mode="hard")
    with pytest.raises(ValueError, match="trained with --exit-mode soft"):
        hard.load_state_dict({k: v.clone() for k, v in soft.state_dict().items() if "off_ramps.heads.1" not in k
                              and "off_ramps.heads.2" not in k})
    with pytest.raises(ValueError, match="--off-ramps independent"):
        lplm.load_state_dict({k: v.clone() for k, v in soft.state_dict().items() if "soft_fusion" not in k})
    from test_bnb import tiny_bnb

    bnb, _ = tiny_bnb()
    with pytest.raises(ValueError, match="does not hold an ELMER model .*bnb"):
        lplm.load_state_dict(bnb.state_dict())
    small_state = tiny_elmer(d=d, decoder_layers=2)[0].state_dict()
    with pytest.raises(ValueError, match="does not fit this model: missing .*layers.2"):
        lplm.load_state_dict(small_state)


def test_flags_have_help_defaults_and_bad_values_are_refused():
    import argparse

    parser = argparse.ArgumentParser()
    ELMERModel.add_args(parser)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and len(action.help) > 10, action.dest
    args = Namespace()
    from fairseq_nar_plugins.models.elmer import elmer_base, elmer_small

    elmer_base(args)
    assert (args.encoder_layers, args.decoder_layers, args.encoder_embed_dim, args.encoder_attention_heads,
            args.encoder_ffn_embed_dim) == (6, 6, 768, 12, 3072)
    assert (args.exit_mode, args.off_ramps, args.exit_threshold, args.canvas_ratio, args.canvas_max_length,
            args.canvas_fill, args.no_detach_exited, args.soft_exit_init) == (
        "lplm", "shared", 0.5, 0.0, 64, "eos", False, "identity")
    small = Namespace(exit_threshold=0.0, eos_fill_weight=0.0)  # an explicit 0 stays 0
    elmer_small(small)
    assert (small.decoder_layers, small.decoder_embed_dim, small.decoder_attention_heads,
            small.decoder_ffn_embed_dim) == (3, 256, 4, 1024)
    assert small.exit_threshold == 0.0 and small.eos_fill_weight == 0.0
    with pytest.raises(ValueError, match=r"--exit-threshold 7.0 is outside \[0, ln V\] = \[0, 3.219\]"):
        check_threshold(7.0, 25)
    with pytest.raises(ValueError, match="--exit-threshold"):
        tiny_elmer(exit_threshold=-1.0)
    with pytest.raises(ValueError, match="--canvas-max-length 600 exceeds the decoder's 512 positions"):
        tiny_elmer(canvas_max_length=600)
    with pytest.raises(ValueError, match="--soft-exit-gold-prob"):
        tiny_elmer(soft_exit_gold_prob=1.5)


def test_canvas_overflow_is_counted_and_refused_when_too_frequent():
    model, d = tiny_elmer(exit_mode="last", canvas_max_length=4)
    model.train()
    src = batch(d, [[1], [2], [3], [4]])
    fits, too_long = [5], [5, 6, 7, 8]  # 1 + </s> = 2 <= 4; 4 + </s> = 5 > 4
    out = model(src, None, None, batch(d, [fits, fits, fits, too_long]))
    assert out["canvas_overflow"] == 1 and out["positions"] == 3 * 4
    with pytest.raises(ValueError, match=r"5 of the 8 training rows seen so far \(62%\).*"
                                         r"--max-canvas-overflow-fraction 0.5"):
        model(src, None, None, batch(d, [too_long] * 4))
    model.eval()  # validation rows are counted, never refused
    assert model(src, None, None, batch(d, [too_long] * 4))["canvas_overflow"] == 4


def test_criterion_bookkeeping_per_layer_losses_and_exit_shares():
    from fairseq.logging import metrics

    model, d = tiny_elmer(exit_mode="lplm")
    model.train()
    src = batch(d, [[1, 2, 3], [4, 5]], left=True)
    tgt = batch(d, [[6, 7, 8], [9]])
    sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1), "prev_output_tokens": None},
              "target": tgt, "ntokens": 6, "id": torch.tensor([0, 1])}
    crit = LayerPermutationCriterion(_Task(d), lplm_samples=4, label_smoothing=0.0)
    torch.manual_seed(9)
    loss, sample_size, log = crit(model, sample)
    torch.manual_seed(9)
    out = model(src, None, None, tgt, lplm_samples=4)
    nll = torch.nn.functional.cross_entropy(out["logits"], out["target"], reduction="none")
    assert loss.item() == pytest.approx(float((nll * out["weight"]).sum()), rel=1e-5)
    assert sample_size == pytest.approx(out["positions"])  # every supervised position counts once
    for layer in range(1, 4):
        rows = out["layer"] == layer
        assert log[f"layer_nll_{layer}"] == pytest.approx(float((nll * out["weight"])[rows].sum()), rel=1e-5)
        assert log[f"exit_n_{layer}"] == int(rows.sum())
    with metrics.aggregate(new_root=True) as agg:
        LayerPermutationCriterion.reduce_metrics([log])
        values = agg.get_smoothed_values()
    assert values["loss"] == pytest.approx(loss.item() / sample_size / math.log(2), abs=1e-3)
    assert sum(values[f"exit_l{layer}"] for layer in range(1, 4)) == pytest.approx(1.0, abs=2e-3)
    assert "loss_l1" in values and values["canvas_overflow"] == 0
    # validation draws depend on the batch only
    model.eval()
    a = crit(model, sample)[0]
    torch.manual_seed(123)
    assert crit(model, sample)[0].item() == a.item()


def test_benchmark_entries_force_lengths_and_apply_each_decodings_threshold(tmp_path):
    """Quick mode (random weights) through the benchmark's own system builder: the canvas forcer gives every sentence
    exactly the forced length, and each elmer_hard decoding runs at its own --model-overrides threshold."""
    from fairseq_nar_plugins.evaluation import registry
    from fairseq_nar_plugins.evaluation.speed import decode
    from fairseq_nar_plugins.evaluation.systems import (
        CanvasLength,
        build_model_systems,
        forced_lengths,
        prepare_quick_data,
        synthetic_lines,
    )

    src = synthetic_lines(6, 3, 8, vocab=50)
    tgt = synthetic_lines(6, 2, 9, vocab=50, seed=2)
    data = prepare_quick_data(str(tmp_path / "data"), src, tgt, "en", "de", 120)
    assert registry.MODELS["elmer"].model_args == ("--exit-mode", "soft")
    for name in ("elmer", "elmer_hard"):
        systems = build_model_systems(registry.MODELS[name], data, "en", "de", "test", size=registry.SIZES["tiny"],
                                      force_lengths=True)
        model = systems[0].model
        assert model.exit_mode == ("soft" if name == "elmer" else "hard")
        batches = systems[0].batches("test", None, 4)
        for system in systems:
            assert isinstance(system.forcer, CanvasLength)
            _, hyps = decode(system, batches, force_length=True, keep_hypotheses=True)
            dictionary = system.task.target_dictionary
            want = {int(i): int(n) for b in batches for i, n in zip(b["id"], forced_lengths(b, dictionary))}
            assert {i: len(h["tokens"]) - 2 for i, h in hyps.items()} == want
            if name == "elmer_hard":
                expected = {"full depth": 0.0, "exit 0.5": 0.5, "exit 1.0": 1.0}[system.decoding.label]
                assert model.exit_threshold == expected


# ------------------------------------------------------------------------------------------------ end to end

TOY_UPDATES = 400


def toy_train_args(data_bin, save_dir, *model_flags, max_update=TOY_UPDATES):
    return [
        data_bin, "--user-dir", USER_DIR, "--task", "translation_lev", "--noise", "full_mask", "--arch", "elmer_tiny",
        "--canvas-ratio", "1.5", "--canvas-offset", "2", *model_flags, "--criterion", "layer_permutation",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "100", "--warmup-init-lr", "1e-07", "--max-tokens", "2048", "--max-update",
        str(max_update), "--dropout", "0.0", "--save-dir", save_dir, "--no-epoch-checkpoints", "--cpu",
        "--num-workers", "0", "--data-buffer-size", "0", "--seed", "1", "--log-format", "simple",
        "--log-interval", "100",
    ]


def toy_refs(data_bin):
    with open(os.path.join(os.path.dirname(data_bin), "raw", "test.tgt")) as f:
        return [line.strip() for line in f]


def generate_toy(data_bin, ckpt, *extra):
    from fairseq_nar_plugins.scoring import check_coverage, sacrebleu_score

    proc = run_cli("fairseq_cli.generate", [
        data_bin, "--user-dir", USER_DIR, "--task", "translation_lev", "--path", ckpt, "--gen-subset", "test",
        "--iter-decode-max-iter", "0", "--batch-size", "64", "--required-batch-size-multiple", "1", "--cpu", *extra])
    hyps = {int(m.group(1)): m.group(2) for m in re.finditer(r"^H-(\d+)\t[^\t]*\t(.*)$", proc.stdout, re.M)}
    refs = toy_refs(data_bin)
    ordered = check_coverage(hyps, len(refs))
    return sacrebleu_score(ordered, refs)[0].score, ordered, proc.stdout


@pytest.fixture(scope="module")
def soft_checkpoint(toy_data_bin, tmp_path_factory):
    save = str(tmp_path_factory.mktemp("elmer_soft"))
    proc = run_cli("fairseq_cli.train", toy_train_args(toy_data_bin, save, "--exit-mode", "soft"))
    return os.path.join(save, "checkpoint_last.pt"), proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def hard_checkpoint(toy_data_bin, tmp_path_factory):
    save = str(tmp_path_factory.mktemp("elmer_hard"))
    # --hard-exit-loss exit (the default; the paper's loss at each token's exit layer): measured with these flags after
    # 400 updates, sacreBLEU 63.1 at threshold 0.5, against 18.6 with 'upto' (18.8 at full depth), which also trains
    # the lower off-ramps on the tokens that go deeper, until some turn confidently wrong and leave early
    proc = run_cli("fairseq_cli.train", toy_train_args(toy_data_bin, save, "--exit-mode", "hard",
                                                       "--hard-exit-loss", "exit"))
    return os.path.join(save, "checkpoint_last.pt"), proc.stdout + proc.stderr


def test_soft_elmer_learns_the_toy_task_and_stops_at_its_end_token(toy_data_bin, soft_checkpoint):
    ckpt, log = soft_checkpoint
    assert re.search(r"loss_l1 [\d.]+ \| loss_l2 [\d.]+ \| loss_l3 [\d.]+", log), "per-layer losses not logged"
    bleu, hyps, out = generate_toy(toy_data_bin, ckpt)
    print(f"ELMER soft, toy task, {TOY_UPDATES} updates: BLEU {bleu:.1f}")
    assert bleu > 45, f"ELMER-soft toy BLEU {bleu:.1f}: it did not learn"
    # the canvas is ~1.5x the source + 2 (the targets are ~1.25x): the first </s> must end the outputs near the
    # references' length
    refs = toy_refs(toy_data_bin)
    ratio = sum(len(h.split()) for h in hyps) / sum(len(r.split()) for r in refs)
    assert 0.7 < ratio < 1.3, f"hypotheses are {ratio:.2f}x the references' length"
    p_line = next(line for line in out.splitlines() if line.startswith("P-"))
    assert all(float(x) <= 0 for x in p_line.split("\t")[1].split())


def load_exit_report():
    import importlib.util

    path = os.path.join(os.path.dirname(USER_DIR), "examples", "elmer", "exit_report.py")
    spec = importlib.util.spec_from_file_location("exit_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hard_elmer_learns_and_exits_earlier_at_larger_thresholds(toy_data_bin, hard_checkpoint, tmp_path):
    ckpt, log = hard_checkpoint
    assert re.search(r"exit_l1 [\d.]+ \| exit_l2 [\d.]+ \| exit_l3 [\d.]+ \| exit_mean", log), "exits not logged"
    refs = str(tmp_path / "refs.txt")
    with open(refs, "w") as f:
        f.writelines(r + "\n" for r in toy_refs(toy_data_bin))
    rows = load_exit_report().main([
        "--data", toy_data_bin, "--path", ckpt, "--thresholds", "0.5", "2.5", "--reference", refs,
        "--latency-sentences", "4", "--repeats", "1", "--json", str(tmp_path / "report.json")])
    by = {r["threshold"]: r for r in rows}
    assert sorted(by) == [0.0, 0.5, 2.5]
    for r in rows:
        print(f"threshold {r['threshold']}: BLEU {r['bleu']:.1f}, mean exit layer {r['mean_exit_layer']:.2f}, "
              f"work {r['work_share']:.1%}, batch-1 x{r['speedup batch 1']:.2f}, batch-64 x{r['speedup batch 64']:.2f}")
    assert by[0.0]["mean_exit_layer"] == 3.0 and by[0.0]["work_share"] == 1.0  # full depth
    assert by[0.0]["mean_exit_layer"] >= by[0.5]["mean_exit_layer"] >= by[2.5]["mean_exit_layer"]
    assert by[2.5]["mean_exit_layer"] < 3.0 and by[2.5]["work_share"] < 1.0
    assert by[0.5]["bleu"] > 40, f"ELMER-hard toy BLEU {by[0.5]['bleu']:.1f} at threshold 0.5"
    # threshold 0 is the plain decoder: the same output as --exit-mode last
    bleu_last, hyps_last, _ = generate_toy(toy_data_bin, ckpt, "--model-overrides", "{'exit_mode': 'last'}")
    _, hyps_zero, _ = generate_toy(toy_data_bin, ckpt, "--model-overrides", "{'exit_threshold': 0.0}")
    assert hyps_zero == hyps_last and bleu_last == pytest.approx(by[0.0]["bleu"])


def test_lplm_pretraining_resumes_exactly_and_fine_tunes_into_soft_exit(toy_data_bin, tmp_path):
    """masked_autoencoder_pretrain (shuffle + infill) with LPLM on the toy corpus's text: 16 updates straight and 8
    more resumed from update 8 give identical losses (exit layers are drawn from the generator fairseq reseeds per
    update); the loss falls; the checkpoint then fine-tunes on the toy translation task with --restore-file into
    --exit-mode soft with independent off-ramps, new tensors initialised and logged, every checkpoint tensor kept."""
    from fairseq import checkpoint_utils

    raw = os.path.join(os.path.dirname(toy_data_bin), "raw")
    text = tmp_path / "text"
    text.mkdir()
    for split, part in (("train", "train"), ("valid", "valid")):
        with open(text / f"{split}.txt", "w") as out:
            for side in ("src", "tgt"):
                out.writelines(open(os.path.join(raw, f"{part}.{side}")).readlines()[:2000])
    bin_dir = str(tmp_path / "bin")
    run_cli("fairseq_cli.preprocess", ["--only-source", "--srcdict", os.path.join(toy_data_bin, "dict.src.txt"),
                                       "--trainpref", str(text / "train.txt"), "--validpref", str(text / "valid.txt"),
                                       "--destdir", bin_dir, "--workers", "1"])
    common = [
        bin_dir, "--user-dir", USER_DIR, "--task", "masked_autoencoder_pretrain", "--tokens-per-sample", "32",
        "--sample-break-mode", "complete", "--corruptions", "shuffle,infill", "--loss-positions", "all",
        "--arch", "elmer_tiny", "--exit-mode", "lplm", "--canvas-max-length", "32", "--criterion",
        "layer_permutation", "--lplm-samples", "2", "--optimizer", "adam", "--lr", "0.003", "--lr-scheduler",
        "inverse_sqrt", "--warmup-updates", "4", "--max-tokens", "512", "--max-update", "16", "--dropout", "0.0",
        "--no-epoch-checkpoints", "--save-interval-updates", "8", "--keep-interval-updates", "5",
        "--disable-validation", "--cpu", "--num-workers", "0", "--data-buffer-size", "0", "--seed", "1",
        "--log-format", "simple", "--log-interval", "1",
    ]
    straight = run_cli("fairseq_cli.train", common + ["--save-dir", str(tmp_path / "a")])
    resumed = run_cli("fairseq_cli.train", common + ["--save-dir", str(tmp_path / "b"), "--restore-file",
                                                     str(tmp_path / "a" / "checkpoint_1_8.pt")])

    def losses(proc):
        log = proc.stdout + proc.stderr
        return {int(u): float(v) for v, u in re.findall(r"train_inner \| .*?loss=([\d.]+).*?num_updates=(\d+)", log)}

    a, b = losses(straight), losses(resumed)
    assert sorted(a) == list(range(1, 17)) and sorted(b) == list(range(9, 17)), (a, b)
    assert all(a[u] == b[u] for u in range(9, 17)), (a, b)
    assert a[16] < a[1] - 0.5, a  # bits per token
    assert re.search(r"exit_l1=[\d.]+, exit_l2=[\d.]+, exit_l3=[\d.]+, exit_mean=", straight.stdout)

    pretrained = str(tmp_path / "a" / "checkpoint_last.pt")
    finetune = run_cli("fairseq_cli.train", toy_train_args(
        toy_data_bin, str(tmp_path / "ft"), "--exit-mode", "soft", "--off-ramps", "independent", "--restore-file",
        pretrained, "--reset-optimizer", "--reset-lr-scheduler", "--reset-meters", "--reset-dataloader",
        "--disable-validation", max_update=1) + ["--lr", "0", "--warmup-init-lr", "0", "--log-interval", "1"])
    # the later flags win; inverse_sqrt would otherwise start its warmup at --warmup-init-lr 1e-07, not 0
    log = finetune.stdout + finetune.stderr
    assert "decoder.soft_fusion.proj.weight (new: soft-exit fusion, identity init)" in log
    assert "decoder.off_ramps.heads.2.dense.weight (copy of the shared off-ramp's" in log
    before = checkpoint_utils.load_checkpoint_to_cpu(pretrained)["model"]
    after = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "ft" / "checkpoint_last.pt"))["model"]
    for name, value in before.items():  # learning rate 0: every pretrained tensor arrives unchanged
        assert torch.equal(after[name], value), name
    dim = after["decoder.soft_fusion.proj.weight"].size(0)
    assert torch.equal(after["decoder.soft_fusion.proj.weight"][:, dim:], torch.eye(dim))
