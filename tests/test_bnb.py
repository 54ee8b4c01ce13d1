"""BERT-NAR-BERT: decoder never reads target tokens, bidirectional decoder, latent-to-position mapping, length
classification targets and beam, and end-to-end learning of a toy task in both length modes."""
import os
from argparse import Namespace

import pytest
import torch
from fairseq.data import Dictionary
from helpers_cli import USER_DIR, run_cli

from fairseq_nar_plugins.models.bnb import BnBModel, bnb_tiny
from fairseq_nar_plugins.modules.length_predictor import LengthClassifier
from fairseq_nar_plugins.modules.source_copy import gather_source, ratio_copy_index, uniform_copy_index


class _Task:
    def __init__(self, d, ctc=False):
        self.source_dictionary = self.target_dictionary = d
        if ctc:
            self.upsample_ratio, self.blank_idx = 2.0, d.unk()


def tiny_bnb(length_mode="lc"):
    torch.manual_seed(0)
    d = Dictionary()
    for i in range(20):
        d.add_symbol(f"w{i}")
    args = Namespace(length_mode=length_mode, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    bnb_tiny(args)
    model = BnBModel.build_model(args, _Task(d, ctc=length_mode == "ctc"))
    return model.eval(), d


def batch(d, rows):
    """rows of word ids -> [<s> ... </s>] right-padded LongTensor."""
    seqs = [[d.bos()] + [d.index(f"w{i}") for i in r] + [d.eos()] for r in rows]
    out = torch.full((len(seqs), max(map(len, seqs))), d.pad())
    for i, s in enumerate(seqs):
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
