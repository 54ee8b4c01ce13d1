"""The cheaper paths of DEER, BnB and the shared CTC pieces give what the full computation gives: the output layer at
scored/filled positions only, argmaxes without vocabulary-sized copies, libnat loaded once, one 2-D attention mask,
no source cache where no editor step follows, cached pruning masks (training and generation), and the bf16
autocast option; plus scripts/training_cost.py end to end on the toy data."""
import json
import os
import subprocess
import sys
from argparse import Namespace

import pytest
import torch
import torch.nn.functional as F
from fairseq.criterions.nat_loss import LabelSmoothedDualImitationCriterion
from fairseq.iterative_refinement_generator import IterativeRefinementGenerator
from fairseq.models.nat import levenshtein_utils
from test_deer import rows, tiny_deer

from fairseq_nar_plugins.modules.single_stack import levenshtein_editor
from fairseq_nar_plugins.modules.ctc.ctc_utils import ctc_greedy_collapse, max_excluding
from fairseq_nar_plugins.modules.single_stack.deer_input import build_input, source_blind_mask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _masked_max(values, excluded):
    """The definition: -inf at the excluded ids, then max (the copy the fast path avoids)."""
    masked = values.clone()
    masked[..., list(excluded)] = float("-inf")
    return masked.max(-1)


def _nat_loss(out, tgt, mask, ls):
    crit = LabelSmoothedDualImitationCriterion.__new__(LabelSmoothedDualImitationCriterion)
    return crit._compute_loss(out, tgt, mask, ls)["loss"]


# ------------------------------------------------------------------------------------------ argmax without copies
@pytest.mark.parametrize("excluded", [[], [0], [0, 1, 2], [2, 5], [0, 1, 2, 3, 9], [9], [4, 5, 6]])
def test_max_excluding_equals_masked_max_with_ties(excluded):
    torch.manual_seed(len(excluded))
    values = torch.randint(-3, 3, (4, 7, 10)).float()  # many ties: the lowest allowed id must win, as in max
    best, index = max_excluding(values, excluded)
    ref_best, ref_index = _masked_max(values, excluded)
    assert torch.equal(best, ref_best) and torch.equal(index, ref_index)
    assert not any(index.eq(i).any() for i in excluded)


def test_max_excluding_refuses_impossible_requests():
    with pytest.raises(ValueError, match="outside"):
        max_excluding(torch.zeros(2, 3), [3])
    with pytest.raises(ValueError, match="every one"):
        max_excluding(torch.zeros(2, 3), [0, 1, 2])


def test_greedy_collapse_with_excluded_ids_equals_collapse_of_masked_log_probs():
    torch.manual_seed(0)
    lprobs = torch.randn(3, 12, 9).log_softmax(-1)
    lprobs[:, :, 0] += 3.0  # <s> would win often
    pad_mask = torch.arange(12)[None, :] >= torch.tensor([[12], [9], [5]])
    masked = lprobs.clone()
    masked[:, :, [0, 1, 2]] = float("-inf")
    fast = ctc_greedy_collapse(lprobs, pad_mask, blank=8, pad=1, excluded=[0, 1, 2])
    slow = ctc_greedy_collapse(masked, pad_mask, blank=8, pad=1)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])


# --------------------------------------------------------------------------------------------------- libnat once
def test_levenshtein_targets_equal_fairseq_and_print_nothing(capfd):
    torch.manual_seed(0)
    pad, ph = 1, 3
    for _ in range(5):
        ins = torch.randint(4, 9, (4, 7))
        out = torch.randint(4, 9, (4, 9))
        ins[:, 0], out[:, 0] = 0, 0
        for r, (li, lo) in enumerate(zip(torch.randint(2, 7, (4,)).tolist(), torch.randint(2, 9, (4,)).tolist())):
            ins[r, li - 1], ins[r, li:] = 2, pad
            out[r, lo - 1], out[r, lo:] = 2, pad
        capfd.readouterr()
        ours = levenshtein_editor._get_ins_targets(ins, out, pad, ph)
        ours_del = levenshtein_editor._get_del_targets(ins, out, pad)
        assert capfd.readouterr().out == ""  # fairseq's load_libnat prints a line per call without libnat_cuda
        theirs = levenshtein_utils._get_ins_targets(ins, out, pad, ph)
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
        assert torch.equal(ours_del, levenshtein_utils._get_del_targets(ins, out, pad))


# ------------------------------------------------------------------------------------ output layer where needed
def test_editor_insertion_term_at_placeholders_equals_the_full_output_layer():
    model, d = tiny_deer()
    src = rows(d, [[1, 2, 3], [4, 5, 6, 7]], left_pad=True)
    tgt = rows(d, [[8, 9, 10, 11], [12, 13, 14, 15, 16]])
    prev = rows(d, [[9, 11], [13]])
    enc = model.encode(src, *model.initial_slots(src))
    features = lambda tokens: model.editor_features(enc, tokens)  # noqa: E731
    forbidden = model.never_inserted()
    terms = levenshtein_editor.editor_training_terms(features, model.lm_head, model.editor_heads, prev, tgt,
                                                     d.pad(), model.placeholder, forbidden=forbidden,
                                                     label_smoothing=0.1)
    # the full computation: the output layer at every position, the loss over the placeholders
    masks, masked_tgt, _ = levenshtein_utils._get_ins_targets(prev, tgt, d.pad(), model.placeholder)
    full = model.lm_head(features(masked_tgt))
    term = terms["word_ins"]
    assert term["out"].shape == (int(masks.sum()), len(d)) and torch.equal(term["positions"], masks)
    assert torch.allclose(_nat_loss(term["out"], term["tgt"], term["mask"], 0.1),
                          _nat_loss(full, tgt, masks, 0.1), atol=1e-6)
    # deletion targets from the full argmax (forbidden ids excluded) at the placeholders
    predictions = torch.where(masks, _masked_max(full.detach(), forbidden)[1], tgt)
    assert torch.equal(terms["word_del"]["tgt"], levenshtein_utils._get_del_targets(predictions, tgt, d.pad()))


def test_fill_step_at_placeholders_equals_the_full_output_layer():
    model, d = tiny_deer(seed=3)
    src = rows(d, [[1, 2, 3, 4], [5, 6], [7, 8, 9]], left_pad=True)
    enc = model.forward_encoder([src, None])
    ph = model.placeholder
    tokens = rows(d, [[1, 2, 3], [4, 5], [6, 7]])
    tokens[0, 2], tokens[0, 3], tokens[1, 1] = ph, ph, ph  # two holes in row 0, one in row 1, none in row 2
    scores = torch.randn(tokens.shape)
    forbidden = model.never_inserted()
    rows_all = torch.ones(3, dtype=torch.bool)
    fast = levenshtein_editor.fill_placeholders(lambda r, t: model.editor_features(enc, t, r), model.lm_head,
                                               tokens, scores, d.pad(), ph, forbidden)
    # the full computation: LevT's fill over the whole rows (fairseq's _apply_ins_words)
    lp = F.log_softmax(model.lm_head(model.editor_features(enc, tokens, rows_all)), -1)
    lp[:, :, forbidden] = float("-inf")
    best, pred = lp.max(-1)
    slow = levenshtein_utils._apply_ins_words(tokens, scores, pred, best, ph)
    assert torch.equal(fast[0], slow[0]) and torch.allclose(fast[1], slow[1], atol=1e-6)
    assert not fast[0].eq(ph).any()


def test_bnb_loss_at_scored_positions_equals_the_full_output_layer():
    """--loss-positions corrupted leaves most targets pad: the output layer runs at the scored positions only."""
    from test_bnb import batch, tiny_bnb

    model, d = tiny_bnb()
    src = batch(d, [[1, 2, 3], [4, 5]])
    tgt = batch(d, [[6, 7, 8, 9], [10, 11, 12, 13]])
    prev = tgt.masked_fill(tgt.ne(d.pad()) & tgt.ne(d.bos()) & tgt.ne(d.eos()), d.unk())
    tgt_partial = tgt.clone()
    tgt_partial[0, [1, 3]] = d.pad()  # only some positions scored, as with --loss-positions corrupted
    term = model(src, None, prev, tgt_partial)["word_ins"]
    enc = model.encoder(src, None)
    full, _ = model.decoder(enc, tgt_lengths=prev.ne(d.pad()).sum(1))
    scored = tgt_partial.ne(d.pad())
    assert torch.equal(term["positions"], scored) and term["out"].shape[0] == int(scored.sum())
    assert torch.allclose(_nat_loss(term["out"], term["tgt"], term["mask"], 0.1),
                          _nat_loss(full, tgt_partial, scored, 0.1), atol=1e-6)


# ---------------------------------------------------------------------------------- attention mask, source cache
def test_one_2d_mask_gives_the_states_of_the_per_sentence_mask():
    model, d = tiny_deer()
    src = rows(d, [[1, 2, 3, 4], [5, 6]], left_pad=True)
    slots, slot_pad = model.initial_slots(src)
    inp = build_input(src, src.eq(d.pad()), slots, slot_pad, model.backbone.cfg.type_vocab_size)
    assert inp.attn_mask.dim() == 2
    per_sentence = source_blind_mask(src.eq(d.pad()), slot_pad)
    assert torch.equal(per_sentence, inp.attn_mask.expand_as(per_sentence))
    kwargs = dict(padding_mask=inp.padding_mask, token_type_ids=inp.token_type_ids)
    shared = model.backbone(inp.tokens, self_attn_mask=inp.attn_mask, **kwargs)["hidden_states"]
    old = model.backbone(inp.tokens, self_attn_mask=per_sentence, **kwargs)["hidden_states"]
    real = ~inp.padding_mask
    assert torch.allclose(shared[real], old[real], atol=1e-6)


def test_no_source_cache_without_editor_steps_and_rebuilt_if_needed():
    model, d = tiny_deer(seed=1)
    src = rows(d, [[1, 2, 3, 4], [5, 6]], left_pad=True)
    full = model.forward_encoder([src, None])
    model.set_editor_steps(0)
    lean = model.forward_encoder([src, None])
    assert "source_states" in full and "source_states" not in lean
    assert torch.equal(full["slot_states"], lean["slot_states"])
    # a source-only pass rebuilds the same cache (the source never sees the slots)
    assert torch.allclose(model.source_states(src), full["source_states"], atol=1e-5)
    # generation at 2 editor steps is the same with a cache rebuilt on demand
    sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1)}}
    gen = IterativeRefinementGenerator(d, max_iter=2)
    model.set_editor_steps(None)
    expected = [h[0]["tokens"].tolist() for h in gen.generate([model], sample)]
    model.set_editor_steps(0)
    assert [h[0]["tokens"].tolist() for h in gen.generate([model], sample)] == expected


def test_task_tells_deer_how_many_editor_steps_follow():
    from fairseq_nar_plugins.tasks.translation_lev_ctc import TranslationLevCTCTask

    model, d = tiny_deer()
    task = TranslationLevCTCTask.__new__(TranslationLevCTCTask)
    task.tgt_dict = d
    task.build_generator([model], Namespace(iter_decode_max_iter=0))
    assert model.editor_steps == 0
    task.build_generator([model], Namespace(iter_decode_max_iter=3))
    assert model.editor_steps == 3


# ------------------------------------------------------------------------------------------------- pruning masks
def _count_mask_calls(model, monkeypatch):
    calls = []
    original = model.pruning.weight_mask

    def counting(key, shape):
        calls.append(key)
        return original(key, shape)

    monkeypatch.setattr(model.pruning, "weight_mask", counting)
    return calls


def test_generation_masks_are_computed_once_and_follow_weight_changes(monkeypatch):
    model, d = tiny_deer(prune=True, prune_size=0.5)
    src = rows(d, [[1, 2, 3, 4], [5, 6]], left_pad=True)
    with torch.no_grad():
        first = model.forward_encoder([src, None])["slot_states"]
        calls = _count_mask_calls(model, monkeypatch)
        again = model.forward_encoder([src, None])["slot_states"]
        assert calls == [] and torch.equal(first, again)  # every masked weight came from the cache
    # the cached weights are the masked ones: the uncached computation (with gradient enabled) agrees
    with torch.enable_grad():
        assert torch.allclose(model.forward_encoder([src, None])["slot_states"].detach(), first, atol=1e-5)
    with torch.no_grad():
        fc1 = model.backbone.layers[0].fc1
        fc1.parametrizations.weight.original.mul_(2.0)  # in place, as load_state_dict does
        changed = model.forward_encoder([src, None])["slot_states"]
        assert not torch.equal(changed, first) and len(calls) > 0
        calls.clear()
        model.train()  # training updates weights through .data, unseen by version counters: train() clears
        model.eval()
        model.forward_encoder([src, None])
        assert len(calls) > 0


def test_training_with_cached_masks_gives_the_same_loss_and_gradients(monkeypatch):
    import contextlib

    from fairseq_nar_plugins.criterions.ctc import CTCCriterion
    from test_deer import _Task

    src_words, tgt_words = [[1, 2, 3], [4, 5, 6, 7]], [[8, 9, 10, 11], [12, 13, 14, 15, 16]]
    results = []
    for cached in (True, False):
        model, d = tiny_deer(prune=True, glancing_ratio="0.5")
        model.train()
        model.set_num_updates(next(n for n in range(100) if model.pruning.sample_size(n, seed=1) == 0.5))
        if not cached:
            monkeypatch.setattr(model.pruning, "cached_masks", contextlib.nullcontext)
        calls = _count_mask_calls(model, monkeypatch)
        src, tgt = rows(d, src_words, left_pad=True), rows(d, tgt_words)
        sample = {"nsentences": 2, "ntokens": 9, "target": tgt, "prev_target": rows(d, [[9, 11], [13]]),
                  "net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1)}}
        torch.manual_seed(5)
        loss = CTCCriterion(_Task(d, model.blank), 0.1)(model, sample)[0]
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)))
    (loss_c, grads_c, calls_c), (loss_u, grads_u, calls_u) = results
    assert torch.allclose(loss_c, loss_u, atol=1e-6)
    for name, g in grads_u.items():
        assert torch.allclose(grads_c[name], g, atol=1e-5, rtol=1e-4), name
    n_masked = sum(1 for _, name in model.pruning._masked_modules if name == "weight")
    assert calls_c == n_masked  # once per masked weight for the whole update (glancing, main and editor passes)
    assert calls_u > 3 * n_masked


# ---------------------------------------------------------------------------------------------- bf16 autocast
def test_autocast_bf16_runs_the_forward_in_bf16_and_the_loss_in_fp32():
    from fairseq_nar_plugins.tasks.autocast import AutocastMixin

    seen = {}

    class Base:
        def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
            return criterion(model, sample)

    class Task(AutocastMixin, Base):
        cfg = Namespace(autocast_bf16=True)

    model = torch.nn.Linear(8, 4)
    model.register_forward_hook(lambda m, i, o: seen.update(inside=o.dtype))

    def criterion(m, sample):
        out = m(sample)
        seen["criterion"] = out.dtype
        return F.log_softmax(out, -1).sum()

    x = torch.randn(3, 8)
    loss = Task().train_step(x, model, criterion, None, 0)
    assert seen == {"inside": torch.bfloat16, "criterion": torch.float32}
    assert torch.allclose(loss, F.log_softmax(model(x), -1).sum(), rtol=2e-2)
    Task.cfg = Namespace(autocast_bf16=False)
    seen.clear()
    Task().train_step(x, model, criterion, None, 0)
    assert seen == {"inside": torch.float32, "criterion": torch.float32}


def test_bf16_autocast_trains_attention_with_the_math_kernel_on_the_cpu():
    """The CPU flash-attention backward is slow in bfloat16: a training forward under bf16_autocast takes torch's math
    kernel (no flash op, bf16 matrix products), generation keeps the flash kernel."""
    from torch.profiler import profile

    from fairseq_nar_plugins.tasks.autocast import bf16_autocast

    q = torch.randn(2, 2, 5, 8, requires_grad=True)

    def ops(training):
        with profile() as prof, bf16_autocast("cpu", training=training):
            out = F.scaled_dot_product_attention(q, q, q)
        return out.dtype, {e.key for e in prof.key_averages()}

    dtype, names = ops(training=True)
    assert dtype == torch.bfloat16 and not any("flash" in n for n in names) and "aten::bmm" in names
    dtype, names = ops(training=False)
    assert dtype == torch.bfloat16 and "aten::_scaled_dot_product_flash_attention_for_cpu" in names


@pytest.mark.parametrize("via", ["task flag", "benchmark"])
def test_bf16_generation_of_fairseq_cmlm_and_ours_returns_fp32_scores(toy_data_bin, via):
    """Decoding under bf16 autocast, through the task's --autocast-bf16 (fairseq-generate, validation BLEU) or
    benchmark.py --autocast-bf16: fairseq's cmlm_transformer mixes the decoder's scores into fp32 state (it stopped
    with a masked_scatter dtype error), so encoder and decoder outputs come back as fp32; CTC and AR models too."""
    from fairseq_nar_plugins.evaluation import registry
    from fairseq_nar_plugins.evaluation.systems import build_model_systems

    for name in ("cmlm_transformer", "nat_ctc_transformer", "transformer"):
        spec = registry.MODELS[name]
        extra = []
        if via == "task flag" and spec.kind == "nar":  # fairseq's NAR models: under our translation_lev_bleu
            extra = ["--autocast-bf16"] + (["--task", "translation_lev_bleu"] if spec.task == "translation_lev" else [])
        systems = build_model_systems(spec, toy_data_bin, "src", "tgt", "valid", size=registry.SIZES["tiny"],
                                      extra_args=extra, autocast_bf16=via == "benchmark")
        seen = []
        layer = systems[0].model.decoder.layers[0]  # (SequenceGenerator calls decoder.forward: no hook on it runs)
        hook = layer.register_forward_pre_hook(lambda m, a: seen.append(torch.is_autocast_enabled("cpu")))
        for system in systems:
            system.activate()
            hypos = system.inference(system.batches("valid", None, 8)[0])
            assert hypos[0][0]["positional_scores"].dtype == torch.float32, system.name
        hook.remove()
        assert seen and all(seen) or (via == "task flag" and spec.kind == "ar"), name


# -------------------------------------------------------------------------------------- training-cost benchmark
def test_training_cost_script_times_every_system_on_the_same_batches(toy_data_bin, tmp_path):
    tiny = ("--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32 "
            "--encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 "
            "--decoder-attention-heads 2")
    out_json = tmp_path / "cost.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "training_cost.py"), toy_data_bin,
         "--system", f"transformer=--task translation --arch transformer {tiny} --share-all-embeddings "
                     "--criterion label_smoothed_cross_entropy --label-smoothing 0.1 --lr 0.001",
         "--system", "deer_small=--task translation_lev_ctc --noise random_delete --arch deer_tiny --prune "
                     "--criterion ctc --lr 0.001",
         "--systems", "deer_small", "--updates", "2", "--warmup", "1", "--max-tokens", "256",
         "--json-out", str(out_json)],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out_json.read_text())
    runs = {r["system"]: r for r in result["runs"]}
    assert set(runs) == {"transformer", "deer_small"}  # the AR reference is always added
    for r in runs.values():
        assert len(r["times"]) == len(r["cpu_times"]) == len(r["losses"]) == 3
        assert all(t > 0 for t in r["cpu_times"]) and all(loss == loss for loss in r["losses"])
        assert r["plugin"].startswith(os.path.join(ROOT, "fairseq_nar_plugins"))
    assert len(result["batches"]) == 3 and len(result["tokens"]) == 3
    summary = {s["system"]: s for s in result["summary"]}
    timed_tokens = sum(result["tokens"][1:])
    for s in summary.values():  # tokens per CPU second over the timed updates
        assert s["tok_per_s_per_core"] == pytest.approx(timed_tokens / (2 * s["cpu_s_per_update"]))
    assert "| transformer |" in proc.stdout and "| deer_small |" in proc.stdout and "1.00x" in proc.stdout
