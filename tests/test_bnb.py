"""BERT-NAR-BERT: decoder never reads target tokens, bidirectional decoder, latent-to-position mapping, length
classification targets and beam, and end-to-end learning of a toy task in both length modes."""
import os
from argparse import Namespace

import pytest
import torch
from fairseq.data import Dictionary
from helpers_cli import USER_DIR, run_cli

from fairseq_nar_plugins.models.bnb import BnBModel, bnb_tiny
from fairseq_nar_plugins.modules.nat.length_predictor import LengthClassifier
from fairseq_nar_plugins.modules.nat.source_copy import gather_source, ratio_copy_index, uniform_copy_index


class _Task:
    def __init__(self, d, ctc=False):
        self.source_dictionary = self.target_dictionary = d
        if ctc:
            self.upsample_ratio, self.blank_idx = 2.0, d.unk()


def tiny_bnb(length_mode="lc", **flags):
    torch.manual_seed(0)
    d = Dictionary()
    for i in range(20):
        d.add_symbol(f"w{i}")
    args = Namespace(length_mode=length_mode, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, **flags)
    bnb_tiny(args)
    model = BnBModel.build_model(args, _Task(d, ctc=length_mode == "ctc"))
    return model.eval(), d


def batch(d, rows, left_pad=False):
    """rows of word ids -> [<s> ... </s>] LongTensor, right-padded (targets) or left-padded (fairseq's sources)."""
    seqs = [[d.bos()] + [d.index(f"w{i}") for i in r] + [d.eos()] for r in rows]
    width = max(map(len, seqs))
    out = torch.full((len(seqs), width), d.pad())
    for i, s in enumerate(seqs):
        if left_pad:
            out[i, width - len(s):] = torch.tensor(s)
        else:
            out[i, : len(s)] = torch.tensor(s)
    return out


def test_uniform_copy_maps_ends_to_ends_and_spreads_the_rest():
    index, pad = uniform_copy_index(torch.tensor([5, 3]), torch.tensor([9, 2]))
    assert index[0].tolist() == [0, 0, 1, 2, 2, 2, 3, 4, 4]  # round(i * 4 / 8)
    assert index[1, :2].tolist() == [0, 2] and pad[1].tolist() == [False, False] + [True] * 7
    index, _ = ratio_copy_index(torch.tensor([3]), 2.0)
    assert index[0].tolist() == [0, 0, 1, 1, 2, 2]
    # left-padded sources read their real tokens
    states = torch.tensor([[[0.0], [0.0], [7.0], [8.0]]])
    out = gather_source(states, torch.tensor([[True, True, False, False]]), torch.tensor([[0, 1, 1]]),
                        torch.zeros(1, 3, dtype=torch.bool))
    assert out[0, :, 0].tolist() == [7.0, 8.0, 8.0]


def test_decoder_never_sees_target_tokens():
    model, d = tiny_bnb()
    src = batch(d, [[1, 2, 3], [4, 5]])
    tgt = batch(d, [[6, 7, 8, 9], [10, 11, 12, 13]])
    other = batch(d, [[14, 15, 16, 17], [18, 19, 1, 2]])  # same lengths, different tokens
    prev = tgt.masked_fill(tgt.ne(d.pad()) & tgt.ne(d.bos()) & tgt.ne(d.eos()), d.unk())
    out1 = model(src, None, prev, tgt)["word_ins"]["out"]
    out2 = model(src, None, prev.clone(), other)["word_ins"]["out"]
    assert torch.equal(out1, out2)
    # ... but it does depend on the source
    out3 = model(batch(d, [[1, 2, 4], [4, 6]]), None, prev, tgt)["word_ins"]["out"]
    assert (out1 - out3).abs().max() > 1e-6


def test_decoder_self_attention_is_bidirectional():
    model, d = tiny_bnb()
    enc = model.encoder(batch(d, [[1, 2, 3, 4]]))
    dec = model.decoder.backbone
    x = torch.randn(1, 5, dec.embed_dim)
    pad = torch.zeros(1, 5, dtype=torch.bool)
    a = dec(token_embeddings=x, padding_mask=pad, encoder_out=enc["encoder_out"],
            encoder_padding_mask=enc["encoder_padding_mask"])["hidden_states"]
    x2 = x.clone()
    x2[0, 4] = torch.randn(dec.embed_dim)  # change the last position only
    b = dec(token_embeddings=x2, padding_mask=pad, encoder_out=enc["encoder_out"],
            encoder_padding_mask=enc["encoder_padding_mask"])["hidden_states"]
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-3  # position 0 sees the future


def test_length_classification_target_and_offset():
    lc = LengthClassifier(4, max_length=256)
    assert lc.target(torch.tensor([7, 300]), torch.tensor([5, 5])).tolist() == [7, 255]
    lc = LengthClassifier(4, max_length=256, pred_length_offset=True)
    assert lc.target(torch.tensor([7]), torch.tensor([5])).tolist() == [130]
    logits = torch.full((1, 256), -10.0)
    logits[0, 130] = 10.0
    assert lc.predict(logits, torch.tensor([5])).tolist() == [7]


def test_length_cap_takes_the_best_length_within_the_cap():
    """--max-length-ratio/--max-length-offset: the argmax over lengths <= A x source + B, not a clamp."""
    for offset_mode in (False, True):
        lc = LengthClassifier(4, max_length=64, pred_length_offset=offset_mode)
        src = torch.tensor([4, 10])
        lengths = lc.lengths_of_classes(src)
        logits = torch.zeros(2, 64)
        # sentence 0 prefers 30 (over its cap 2 x 4 + 3 = 11), then 9; sentence 1 prefers 20 (within 2 x 10 + 3)
        logits[0][lengths[0] == 30] = 5.0
        logits[0][lengths[0] == 9] = 4.0
        logits[1][lengths[1] == 20] = 5.0
        assert lc.predict(logits, src).tolist() == [30, 20]
        assert lc.predict(logits, src, max_ratio=2.0, max_offset=3.0).tolist() == [9, 20]


def test_generation_caps_the_predicted_length_by_the_model_flags():
    model, d = tiny_bnb()
    with torch.no_grad():  # the length classifier prefers 200 tokens, then 15, then 5
        model.decoder.length.proj.bias.fill_(-10.0)
        model.decoder.length.proj.bias[200] = 10.0
        model.decoder.length.proj.bias[15] = 5.0
        model.decoder.length.proj.bias[5] = 3.0
    src = batch(d, [[1, 2, 3]])  # 5 source tokens with <s> and </s>
    enc = model.forward_encoder([src, None])
    assert model.decoder.max_length_ratio == 2.5 and model.decoder.max_length_offset == 10.0  # the defaults
    length = lambda: int(model.initialize_output_tokens(enc, src).output_tokens.ne(d.pad()).sum())
    assert length() == 15  # cap 2.5 x 5 + 10 = 22
    model.decoder.max_length_ratio, model.decoder.max_length_offset = 1.0, 1.0
    assert length() == 5  # cap 6
    model.decoder.max_length_ratio = 100.0
    assert length() == 200


def test_length_beam_decodes_lengths_around_the_prediction():
    model, d = tiny_bnb()
    src = batch(d, [[1, 2, 3]])
    enc = model.forward_encoder([src, None])
    out = model.initialize_output_tokens(enc, src)
    predicted = int(out.output_tokens.ne(d.pad()).sum())
    beam = model.regenerate_length_beam(out, 3)
    lengths = beam.output_tokens.ne(d.pad()).sum(1).tolist()
    assert lengths == [max(predicted - 1, 2), predicted, predicted + 1]
    decoded = model.forward_decoder(beam._replace(step=0, max_step=1), model.encoder.reorder_encoder_out(
        enc, torch.zeros(3, dtype=torch.long)))
    toks = decoded.output_tokens
    assert (toks[:, 0] == d.bos()).all() and toks.ne(d.pad()).sum(1).tolist() == lengths
    inner = toks[:, 1:][toks[:, 1:].ne(d.pad())]
    assert (inner == d.eos()).sum() == 3  # exactly one </s> per row, at the end


def test_ctc_mode_frames_are_ratio_times_source():
    model, d = tiny_bnb("ctc")
    src = batch(d, [[1, 2, 3], [4]])
    terms = model(src, None, None, batch(d, [[5, 6], [7]]))["word_ins"]
    assert terms["ctc"] and terms["out"].shape[1] == 10  # 5 source tokens (with <s>, </s>) x 2
    assert terms["out_mask"].sum(1).tolist() == [10, 6]
    assert terms["tgt"].tolist() == [[d.index("w5"), d.index("w6")], [d.index("w7"), d.pad()]]


@pytest.mark.parametrize("mode", ["lc", "ctc"])
def test_batch_with_left_padded_sources_equals_single_sentences(mode):
    """fairseq left-pads sources: every sentence decodes in a batch as it does alone (latents, positions, lengths,
    CTC frames)."""
    model, d = tiny_bnb(mode)
    sentences = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    src = batch(d, sentences, left_pad=True)
    with torch.no_grad():
        enc = model.forward_encoder([src, src.ne(d.pad()).sum(1)])
        together = model.forward_decoder(model.initialize_output_tokens(enc, src), enc)
        for i, sentence in enumerate(sentences):
            one = batch(d, [sentence], left_pad=True)
            enc1 = model.forward_encoder([one, one.ne(d.pad()).sum(1)])
            alone = model.forward_decoder(model.initialize_output_tokens(enc1, one), enc1)
            row = together.output_tokens[i]
            assert row[row.ne(d.pad())].tolist() == alone.output_tokens[0].tolist()
            n = int(row.ne(d.pad()).sum())
            assert torch.allclose(together.output_scores[i, :n], alone.output_scores[0], atol=1e-5)
        if mode == "ctc":
            lprobs, frame_pad = model.ctc_frame_lprobs(enc)
            for i, sentence in enumerate(sentences):
                one = batch(d, [sentence], left_pad=True)
                lp1, _ = model.ctc_frame_lprobs(model.forward_encoder([one, None]))
                assert torch.allclose(lprobs[i][~frame_pad[i]], lp1[0], atol=1e-5)


def test_ctc_sources_are_capped_to_fit_the_decoder_positions():
    """With CTC the decoder has round(ratio x S) frames: max_positions() reports S <= floor(P / ratio), so fairseq
    skips longer sources instead of crashing on them; the longest allowed source decodes."""
    model, d = tiny_bnb("ctc", max_positions_table=17)
    assert model.max_positions() == (8, 17)  # floor(17 / 2)
    src = batch(d, [list(range(6))])  # 8 tokens with <s> and </s>: 16 frames
    assert model(src, None, None, batch(d, [[1, 2]]))["word_ins"]["out"].shape[1] == 16
    # a user's smaller limit stays
    model, d = tiny_bnb("ctc", max_positions_table=17, max_source_positions=5)
    assert model.max_positions() == (5, 17)
    model, d = tiny_bnb("lc", max_positions_table=17)
    assert model.max_positions() == (17, 17)


def test_predicted_lengths_stay_within_the_decoder_positions():
    """Length classes (absolute up to max-length-classes - 1, or source-relative) beyond the decoder's P positions
    are never chosen, also by the length beam."""
    model, d = tiny_bnb("lc", max_positions_table=12, pred_length_offset=True, max_length_ratio=100.0)
    src = batch(d, [[1, 2, 3, 4]])  # S = 6: class c stands for length c + 6 - 128
    with torch.no_grad():  # the classifier prefers length 40, then 11
        model.decoder.length.proj.bias.fill_(-10.0)
        model.decoder.length.proj.bias[40 - 6 + 128] = 10.0
        model.decoder.length.proj.bias[11 - 6 + 128] = 5.0
        enc = model.forward_encoder([src, None])
        out = model.initialize_output_tokens(enc, src)
        assert out.output_tokens.ne(d.pad()).sum().item() == 11
        model.decoder.length.proj.bias[11 - 6 + 128] = -10.0
        model.decoder.length.proj.bias[12 - 6 + 128] = 5.0
        out = model.initialize_output_tokens(enc, src)
        assert out.output_tokens.ne(d.pad()).sum().item() == 12
        beam = model.regenerate_length_beam(out, 3)
        assert beam.output_tokens.ne(d.pad()).sum(1).tolist() == [11, 12, 12]
        decoded = model.forward_decoder(beam, model.encoder.reorder_encoder_out(enc, torch.zeros(3).long()))
        assert decoded.output_tokens.ne(d.pad()).sum(1).tolist() == [11, 12, 12]


def _criterion_loss(model, d, mode):
    from fairseq.criterions.nat_loss import LabelSmoothedDualImitationCriterion

    from fairseq_nar_plugins.criterions.ctc import CTCCriterion

    src = batch(d, [[1, 2, 3], [4, 5, 6, 7]], left_pad=True)
    tgt = batch(d, [[8, 9, 10, 11], [12, 13, 14]])
    prev = tgt.masked_fill(tgt.ne(d.pad()) & tgt.ne(d.bos()) & tgt.ne(d.eos()), d.unk())
    sample = {"nsentences": 2, "ntokens": 7, "target": tgt, "prev_target": None if mode == "ctc" else prev,
              "net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1)}}
    task = _Task(d, ctc=mode == "ctc")
    crit = CTCCriterion(task, 0.1) if mode == "ctc" else LabelSmoothedDualImitationCriterion(task, 0.1)
    return crit(model, sample)[0]


@pytest.mark.parametrize("mode", ["lc", "ctc"])
def test_every_parameter_gets_a_gradient_in_each_length_mode(mode):
    """fairseq's default DDP backend (pytorch_ddp, find_unused_parameters=False) fails on a parameter without
    gradient: CTC mode has no length classifier, LC mode uses every parameter it has."""
    model, d = tiny_bnb(mode)
    assert (model.decoder.length is None) == (mode == "ctc")
    model.train()
    _criterion_loss(model, d, mode).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_ctc_checkpoint_with_the_old_length_classifier_loads():
    model, d = tiny_bnb("ctc")
    state = model.state_dict()
    state["decoder.length.proj.weight"] = torch.zeros(256, 8)
    state["decoder.length.proj.bias"] = torch.zeros(256)
    model.load_state_dict(state)  # upgrade_state_dict drops them; strict otherwise


def test_length_classification_refuses_a_noise_that_shortens_prev_output_tokens():
    with pytest.raises(ValueError, match="--noise random_delete.*full_mask / random_mask / no_noise"):
        tiny_bnb("lc", noise="random_delete")
    tiny_bnb("lc", noise="full_mask")
    tiny_bnb("ctc", noise="random_delete")  # CTC does not read prev_output_tokens


def test_ctc_output_never_holds_bos_eos_or_pad():
    """Hand-made frame log-probabilities: frames whose best symbol is <s>, </s> or <pad> emit their next best."""
    model, d = tiny_bnb("ctc")
    bos, eos, pad, blank = d.bos(), d.eos(), d.pad(), model.blank
    a, b = d.index("w1"), d.index("w2")
    logits = torch.full((1, 6, len(d)), -5.0)
    for frame, (best, second) in enumerate([(bos, a), (a, bos), (eos, blank), (pad, b), (b, eos), (eos, blank)]):
        logits[0, frame, best], logits[0, frame, second] = 5.0, 4.0
    lprobs = logits.log_softmax(-1)
    model.ctc_frame_lprobs = lambda enc: (lprobs.clone(), torch.zeros(1, 6, dtype=torch.bool))
    out = model.forward_decoder(model.initialize_output_tokens({"encoder_padding_mask": torch.zeros(1, 3).bool()},
                                                               torch.ones(1, 3).long()), None)
    # frames: a a blank b b blank -> a b
    assert out.output_tokens[0].tolist() == [bos, a, b, eos]
    assert out.output_scores[0, 1].item() == pytest.approx(lprobs[0, 0, a].item())


def test_length_beam_rows_are_scored_by_their_words_only():
    """<s> and </s> carry the mean score of the row's words, so the generator's mean over non-pad positions is
    the mean over words: zeros there would favour the shorter row of a length beam."""
    model, d = tiny_bnb("lc")
    src = batch(d, [[1, 2, 3]])
    with torch.no_grad():
        enc = model.forward_encoder([src, None])
        beam = model.regenerate_length_beam(model.initialize_output_tokens(enc, src), 3)
        out = model.forward_decoder(beam, model.encoder.reorder_encoder_out(enc, torch.zeros(3).long()))
    tokens, scores = out.output_tokens, out.output_scores
    words = tokens.ne(d.pad()) & tokens.ne(d.bos()) & tokens.ne(d.eos())
    word_mean = (scores * words).sum(1) / words.sum(1)
    real = tokens.ne(d.pad())
    assert torch.allclose((scores * real).sum(1) / real.sum(1), word_mean, atol=1e-6)
    assert torch.equal(scores[~real], torch.zeros_like(scores[~real]))


def test_length_pooling_over_encoder_states():
    """--length-pooling encoder: the classifier reads the mean of the encoder's final states h over real source
    tokens (left padding ignored), not the P-dim latent."""
    model, d = tiny_bnb("lc", length_pooling="encoder")
    assert model.decoder.length.proj.in_features == model.encoder.backbone.embed_dim
    src = batch(d, [[1, 2, 3], [4]], left_pad=True)
    with torch.no_grad():
        enc = model.forward_encoder([src, None])
        h, real = enc["encoder_out"], src.ne(d.pad())
        pooled = torch.stack([h[i][real[i]].mean(0) for i in range(2)])
        assert torch.allclose(model.decoder.forward_length(enc), model.decoder.length.proj(pooled), atol=1e-6)
    model, _ = tiny_bnb("lc")
    assert model.decoder.length.proj.in_features == 8  # the paper's p(l | z)


def test_architecture_defaults_keep_a_given_zero():
    """A flag given as 0 is not replaced by the architecture's default (--max-length-ratio 0: lengths up to
    --max-length-offset), and a size that cannot be 0 is refused naming its flag."""
    model, d = tiny_bnb("lc", max_length_ratio=0.0, max_length_offset=6.0)
    assert model.decoder.max_length_ratio == 0.0
    with torch.no_grad():
        model.decoder.length.proj.bias.fill_(-10.0)  # prefers 20, then 15 (within 2.5 x 5 + 6), then 6
        model.decoder.length.proj.bias[20] = 10.0
        model.decoder.length.proj.bias[15] = 7.0
        model.decoder.length.proj.bias[6] = 5.0
        src = batch(d, [[1, 2, 3]])
        enc = model.forward_encoder([src, None])
        assert model.initialize_output_tokens(enc, src).output_tokens.ne(d.pad()).sum().item() == 6
    with pytest.raises(ValueError, match="--decoder-layers 0"):
        tiny_bnb("lc", decoder_layers=0)
    with pytest.raises(ValueError, match="--latent-dim 0"):
        tiny_bnb("lc", latent_dim=0)
    with pytest.raises(ValueError, match="--max-length-ratio -1"):
        tiny_bnb("lc", max_length_ratio=-1.0)


def test_length_statistics_definitions():
    from scripts_loader import load_script

    stats = load_script("length_accuracy").length_stats([5, 7, 9], [5, 8, 12])
    assert stats == pytest.approx({"sentences": 3, "exact": 1 / 3, "within_1": 2 / 3, "within_2": 2 / 3,
                                   "mae": 4 / 3, "mean_error": -4 / 3})


def test_length_accuracy_script_reports_the_model_s_own_lengths(toy_data_bin, tmp_path):
    """scripts/length_accuracy.py on an untrained bnb-lc checkpoint: references are the test targets' lengths (words
    + <s> + </s>), predictions are what the model predicts for each sentence alone, and the table is their
    statistics."""
    from fairseq import checkpoint_utils
    from scripts_loader import load_script

    ckpt = str(tmp_path / "init.pt")
    load_script("save_initial_checkpoint").main([
        toy_data_bin, "--output", ckpt, "--user-dir", USER_DIR, "--task", "translation_lev", "--noise", "full_mask",
        "--arch", "bnb_tiny", "--length-mode", "lc", "--pred-length-offset", "--criterion", "nat_loss",
        "--optimizer", "adam", "--lr", "1e-4", "--max-tokens", "1024", "--cpu", "--seed", "1"])
    script = load_script("length_accuracy")
    argv = [toy_data_bin, ckpt, "--gen-subset", "test", "--cpu", "--json", str(tmp_path / "lengths.json")]
    lengths = script.predict_lengths(ckpt, script.get_parser().parse_args(argv))
    refs = [len(line.split()) + 2 for line in open(os.path.join(os.path.dirname(toy_data_bin), "raw", "test.tgt"))]
    assert lengths["reference"] == refs
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": toy_data_bin})
    model = models[0].eval()
    task.load_dataset("test")
    for i in range(5):
        src = task.dataset("test")[i]["source"][None, :]
        with torch.no_grad():
            enc = model.forward_encoder([src, None])
            alone = int(model.initialize_output_tokens(enc, src).output_tokens.ne(task.target_dictionary.pad()).sum())
        assert lengths["generated"][i] == alone
    results, baselines = script.main(argv)
    assert results[ckpt]["generated"] == script.length_stats(lengths["generated"], refs)
    assert baselines["source"] == script.length_stats(lengths["source"], refs)
    import json
    assert json.load(open(tmp_path / "lengths.json"))["checkpoints"][ckpt]["argmax"]["sentences"] == len(refs)


def _train_and_generate(toy_data_bin, tmp_path, task, criterion, mode, extra_gen=()):
    save = str(tmp_path / mode)
    run_cli("fairseq_cli.train", [
        toy_data_bin, "--user-dir", USER_DIR, "--task", task, "--noise", "full_mask", "--arch", "bnb_tiny",
        "--length-mode", mode, "--criterion", criterion, "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
        "--lr", "0.003", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--warmup-init-lr", "1e-07",
        "--max-tokens", "2048", "--max-update", "400", "--dropout", "0.0", "--save-dir", save,
        "--no-epoch-checkpoints", "--cpu", "--num-workers", "0", "--data-buffer-size", "0", "--seed", "1",
    ])
    proc = run_cli("fairseq_cli.generate", [
        toy_data_bin, "--user-dir", USER_DIR, "--task", task, "--path", os.path.join(save, "checkpoint_last.pt"),
        "--gen-subset", "test", "--iter-decode-max-iter", "0", "--batch-size", "64",
        "--required-batch-size-multiple", "1", "--cpu", *extra_gen])
    from fairseq_nar_plugins.scoring import check_coverage, sacrebleu_score
    import re
    hyps = {int(m.group(1)): m.group(2) for m in re.finditer(r"^H-(\d+)\t[^\t]*\t(.*)$", proc.stdout, re.M)}
    refs = [line.strip() for line in open(os.path.join(os.path.dirname(toy_data_bin), "raw", "test.tgt"))]
    return sacrebleu_score(check_coverage(hyps, len(refs)), refs)[0].score


def test_bnb_ctc_learns_toy_task(toy_data_bin, tmp_path):
    bleu = _train_and_generate(toy_data_bin, tmp_path, "translation_lev_ctc", "ctc", "ctc")
    assert bleu > 80, f"BnB-CTC toy BLEU {bleu:.1f}"


def test_bnb_length_classification_learns_toy_task_with_length_beam(toy_data_bin, tmp_path):
    bleu = _train_and_generate(toy_data_bin, tmp_path, "translation_lev", "nat_loss", "lc",
                               extra_gen=["--iter-decode-with-beam", "3"])
    assert bleu > 45, f"BnB-LC toy BLEU {bleu:.1f}"


def test_reload_rebuilds_the_recorded_backbone_conventions():
    """A model built from a RoBERTa-style config must come back with RoBERTa conventions (position offset, no token
    types), not BERT's: build_backbone records each backbone's config in the args fairseq saves."""
    import json

    model, d = tiny_bnb()
    args = model.args
    cfg = json.loads(args.encoder_backbone_config)
    assert cfg["layers"] == 2 and cfg["embed_dim"] == 64 and json.loads(args.decoder_backbone_config)["cross_attention"]
    # pretend the first build came from a RoBERTa-family checkpoint: positions start after padding_idx, no types
    for side in ("encoder", "decoder"):
        saved = json.loads(getattr(args, f"{side}_backbone_config"))
        saved.update(position_offset=d.pad() + 1, num_positions=saved["num_positions"] + d.pad() + 1,
                     type_vocab_size=0, layer_norm_eps=1e-5)
        setattr(args, f"{side}_backbone_config", json.dumps(saved))
    reloaded = BnBModel.build_model(args, _Task(d))
    for backbone in (reloaded.encoder.backbone, reloaded.decoder.backbone):
        assert (backbone.cfg.position_offset, backbone.cfg.type_vocab_size, backbone.cfg.layer_norm_eps) == (
            d.pad() + 1, 0, 1e-5)
    # a dictionary of another size is refused with what to do
    d.add_symbol("extra")
    with pytest.raises(ValueError, match="task dictionary has 25 symbols"):
        BnBModel.build_model(args, _Task(d))
