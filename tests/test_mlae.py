"""MLAE (models/mlae/): pretraining input and loss, the pretraining -> fine-tuning loader, Seq2seq / UniLM AR
decoders (causal, incremental = full recomputation), scheduled masking, CMLM mask-predict with the pretraining mask,
merge-repeats, length beam, [EOS] pooling; end to end on the toy task (tests/toy_data.py) through fairseq-train and
fairseq-generate: pretraining learns and resumes identically, NAR (1 and 10 iterations) and AR fine-tuning learn, the
classifier beats the majority class."""
import argparse
import logging
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from fairseq.criterions.nat_loss import LabelSmoothedDualImitationCriterion
from fairseq.data import Dictionary
from fairseq.iterative_refinement_generator import DecoderOut
from helpers_cli import ROOT, USER_DIR, run_cli

from fairseq_nar_plugins.models.mlae import ar, classifier, nar, pretrain
from fairseq_nar_plugins.models.mlae.ar import MLAESeq2SeqModel, MLAEUniLMModel
from fairseq_nar_plugins.models.mlae.checkpoint import MLAECheckpoint
from fairseq_nar_plugins.models.mlae.classifier import MLAEClassifierModel, last_eos_states
from fairseq_nar_plugins.models.mlae.common import SIZES, compact_visible, prepend_bos
from fairseq_nar_plugins.models.mlae.nar import MLAECMLMModel
from fairseq_nar_plugins.models.mlae.pretrain import MLAEModel
from fairseq_nar_plugins.modules.nat.mask_predict import mask_predict_update, merge_repeats, remask_count
from fairseq_nar_plugins.modules.pretrained.pretrained_import import PretrainedCheckpointError
from fairseq_nar_plugins.modules.nat.scheduled_masking import MaskSchedule, mask_decoder_input
from fairseq_nar_plugins.modules.single_stack.seq2seq_masks import causal_mask, unilm_seq2seq_mask

NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


# ------------------------------------------------------------------------------------------------------ helpers
def vocabulary(words=20, mask=True):
    """A fairseq dictionary of ``w0 ..``, with ``<mask>`` appended as masked_autoencoder_pretrain appends it."""
    d = Dictionary()
    for i in range(words):
        d.add_symbol(f"w{i}")
    if mask:
        d.add_symbol("<mask>")
    return d


class PretrainTask:
    """What MLAEModel.build_model reads of masked_autoencoder_pretrain."""

    def __init__(self, d, corruptions=("span",), loss_positions="corrupted"):
        self.source_dictionary = self.target_dictionary = d
        self.mask_idx = d.index("<mask>")
        self.corruption_names = list(corruptions)
        self.cfg = argparse.Namespace(loss_positions=loss_positions)


class TranslationTask:
    """What the fine-tuning models read of translation / translation_lev: two dictionaries (equal content)."""

    def __init__(self, d):
        self.source_dictionary = d
        self.target_dictionary = Dictionary.load(_round_trip(d))


def _round_trip(d):
    import io

    f = io.StringIO()
    d.save(f)
    f.seek(0)
    return f


def build(model_cls, arch, task, seed=0, **flags):
    args = argparse.Namespace(**{**NO_DROPOUT, **flags})
    arch(args)
    torch.manual_seed(seed)
    return model_cls.build_model(args, task).eval()


def rows(d, *rows, left=False):
    """Lists of symbols -> a padded LongTensor (right-padded, or left-padded)."""
    ids = [[d.index(s) if isinstance(s, str) else s for s in r] for r in rows]
    out = torch.full((len(ids), max(map(len, ids))), d.pad())
    for i, r in enumerate(ids):
        if left:
            out[i, out.size(1) - len(r):] = torch.tensor(r)
        else:
            out[i, : len(r)] = torch.tensor(r)
    return out


def save_checkpoint(model, path):
    """A fairseq checkpoint of ``model`` (what checkpoint_utils.load_checkpoint_to_cpu reads)."""
    torch.save({"cfg": {"model": dict(vars(model.args))}, "model": model.state_dict(),
                "optimizer_history": [{"criterion_name": "nat_loss", "optimizer_name": "adam",
                                       "lr_scheduler_state": {}, "num_updates": 0}],
                "extra_state": {"train_iterator": {}}}, path)
    return str(path)


def pretrained(tmp_path, cross_attention=False, d=None):
    d = d or vocabulary()
    model = build(MLAEModel, pretrain.ARCHS["tiny"], PretrainTask(d), mlae_cross_attention=cross_attention)
    with torch.no_grad():  # no tensor keeps its initial value: a copied tensor is recognisable
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model, save_checkpoint(model, tmp_path / f"mlae_{int(cross_attention)}.pt"), d


# --------------------------------------------------------------------------------------- pretraining mechanics
def test_compaction_keeps_visible_tokens_at_their_original_positions():
    d = vocabulary()
    m = "<mask>"
    block = rows(d, ["<s>", "w1", m, m, "w4", "w5", m, "</s>"], ["<s>", "w2", m, "</s>"])
    tokens, positions, padding, index = compact_visible(block, block.ne(d.index(m)), d.pad())
    assert tokens.tolist() == rows(d, ["<s>", "w1", "w4", "w5", "</s>"], ["<s>", "w2", "</s>"]).tolist()
    assert positions[0].tolist() == [0, 1, 4, 5, 7] and positions[1, :3].tolist() == [0, 1, 3]
    assert padding.tolist() == [[False] * 5, [False] * 3 + [True] * 2]
    visible = block.ne(d.index(m)) & block.ne(d.pad())
    assert torch.equal(tokens.gather(1, index)[visible], block[visible])  # index finds each visible token
    # left padding: the same compact rows, the same (rank-based) positions
    left = rows(d, ["<s>", "w1", m, m, "w4", "w5", m, "</s>"], ["<s>", "w2", m, "</s>"], left=True)
    t2, p2, pad2, _ = compact_visible(left, left.ne(d.index(m)), d.pad())
    assert torch.equal(t2, tokens) and torch.equal(p2[~pad2], positions[~padding])


def test_prepend_bos_frames_sources_like_pretraining_blocks():
    d = vocabulary()
    left = rows(d, ["w1", "w2", "</s>"], ["w3", "</s>"], left=True)  # fairseq translation: left-padded, no <s>
    assert prepend_bos(left, d.bos(), d.pad()).tolist() == rows(d, ["<s>", "w1", "w2", "</s>"],
                                                                ["<s>", "w3", "</s>"]).tolist()
    framed = rows(d, ["<s>", "w1", "</s>"], ["<s>", "</s>"])  # translation_lev: already framed, unchanged
    assert prepend_bos(framed, d.bos(), d.pad()) is framed
    mixed = rows(d, ["<s>", "w1", "</s>"], ["w2", "</s>"])
    assert prepend_bos(mixed, d.bos(), d.pad()).tolist() == rows(d, ["<s>", "w1", "</s>"],
                                                                 ["<s>", "w2", "</s>"]).tolist()


def test_explicit_positions_index_the_position_table():
    model = build(MLAEModel, pretrain.ARCHS["tiny"], PretrainTask(vocabulary()))
    emb = model.encoder.backbone.embeddings
    tokens = torch.tensor([[0, 5, 6, 2]])
    positions = torch.tensor([[0, 3, 4, 9]])
    out = emb(tokens, positions=positions)
    by_hand = emb.layernorm_embedding(emb.embed_tokens(tokens) + emb.embed_positions.weight[positions[0]][None]
                                      + emb.embed_token_types.weight[0])
    assert torch.allclose(out, by_hand, atol=1e-6)
    assert torch.equal(emb(tokens), emb(tokens, positions=torch.arange(4)[None]))  # default = ranks
    with pytest.raises(ValueError, match="outside the 512 positions"):
        emb(tokens, positions=torch.tensor([[0, 1, 2, 512]]))


@pytest.mark.parametrize("encoder_input", ["drop", "mask"])
def test_encoder_reads_only_the_visible_tokens(encoder_input):
    """drop: the encoder's output equals the backbone run on each row's visible tokens alone, at their positions in
    the block (nothing of a masked position reaches it); mask: the backbone over the raw block."""
    d = vocabulary()
    model = build(MLAEModel, pretrain.ARCHS["tiny"], PretrainTask(d), mlae_encoder_input=encoder_input)
    m = "<mask>"
    block = rows(d, ["<s>", "w1", m, m, "w4", "w5", m, "</s>"], ["<s>", "w2", m, "w3", "</s>"])
    enc, visible, index = model.encode_visible(block)
    backbone = model.encoder.backbone
    for i in range(block.size(0)):
        real = block[i].ne(d.pad())
        keep = visible[i] if encoder_input == "drop" else real
        where = keep.nonzero().squeeze(1)
        alone = backbone(block[i, where][None], positions=where[None])["hidden_states"][0]
        assert torch.allclose(enc["encoder_out"][i, : where.numel()], alone, atol=1e-5)
        if encoder_input == "mask":
            raw = backbone(block[i, real][None])["hidden_states"][0]
            assert torch.allclose(enc["encoder_out"][i, : where.numel()], raw, atol=1e-5)
    if encoder_input == "drop":  # whatever token a masked position held, the encoder's output is the same
        other = block.masked_fill(block.eq(d.index(m)), d.index("w7"))
        tokens, positions, _, _ = compact_visible(other, visible, d.pad())
        assert torch.equal(model.encoder(tokens, positions=positions)["encoder_out"], enc["encoder_out"])


def test_decoder_input_is_latents_at_visible_and_mask_embedding_at_masked_positions():
    d = vocabulary()
    model = build(MLAEModel, pretrain.ARCHS["tiny"], PretrainTask(d))
    m = "<mask>"
    block = rows(d, ["<s>", "w1", m, m, "w4", "</s>"], ["<s>", m, "w3", "</s>"])
    enc, visible, index = model.encode_visible(block)
    x = model.decoder_input(enc, visible, index)
    mask_vector = model.decoder.backbone.embeddings.embed_tokens.weight[d.index(m)]
    for i in range(block.size(0)):
        slot = 0
        for t in range(block.size(1)):
            if block[i, t] == d.pad():
                continue
            if block[i, t] == d.index(m):
                assert torch.equal(x[i, t], mask_vector)
            else:
                assert torch.equal(x[i, t], enc["encoder_out"][i, slot])
                slot += 1


def test_pretraining_loss_covers_the_masked_positions_only():
    d = vocabulary()
    model = build(MLAEModel, pretrain.ARCHS["tiny"], PretrainTask(d)).eval()  # no dropout: outputs comparable
    m = d.index("<mask>")
    block = rows(d, ["<s>", "w1", "<mask>", "<mask>", "w4", "</s>"], ["<s>", "<mask>", "w3", "</s>"])
    target = torch.full_like(block, d.pad())
    target[block.eq(m)] = torch.tensor([d.index("w2"), d.index("w3"), d.index("w9")])
    terms = model(block, None, None, target)["word_ins"]
    # the head runs at the masked positions only: the rows equal the whole block's logits there, in row-major order
    encoder_out, visible, index = model.encode_visible(block)
    full = model.decoder(token_embeddings=model.decoder_input(encoder_out, visible, index), encoder_out=encoder_out,
                         padding_mask=block.eq(d.pad()))
    assert terms["out"].shape == (3, len(d))
    assert torch.allclose(terms["out"], full[block.eq(m)], atol=1e-6)
    assert terms["tgt"].tolist() == [d.index("w2"), d.index("w3"), d.index("w9")]
    criterion = LabelSmoothedDualImitationCriterion(PretrainTask(d), 0.0)
    loss = criterion._compute_loss(terms["out"], terms["tgt"], terms["mask"], terms["ls"])["loss"]
    expected = F.cross_entropy(full[block.eq(m)], terms["tgt"])
    assert torch.allclose(loss, expected, atol=1e-6)
    assert int(terms["mask"].sum()) == 3  # the task's ntokens
    no_masks = model(block, None, None, torch.full_like(block, d.pad()))["word_ins"]
    assert no_masks["out"].shape == (0, len(d))
    assert float(criterion._compute_loss(no_masks["out"], no_masks["tgt"], no_masks["mask"], 0.0)["loss"]) == 0.0


def test_pretraining_refuses_corruptions_that_hide_the_masks():
    d = vocabulary()
    with pytest.raises(ValueError, match="--corruptions span"):
        build(MLAEModel, pretrain.ARCHS["tiny"], PretrainTask(d, corruptions=("mask",)))
    with pytest.raises(ValueError, match="--corruptions span.*shuffle,infill"):
        build(MLAEModel, pretrain.ARCHS["tiny"], PretrainTask(d, corruptions=("shuffle", "infill")))
    with pytest.raises(ValueError, match="--loss-positions corrupted"):
        build(MLAEModel, pretrain.ARCHS["tiny"], PretrainTask(d, loss_positions="all"))
    with pytest.raises(ValueError, match="masked_autoencoder_pretrain"):
        build(MLAEModel, pretrain.ARCHS["tiny"], TranslationTask(d))


def test_initialisation_from_a_bert_family_checkpoint(tmp_path):
    """--pretrained-encoder: the encoder (and the shared token embeddings) is the checkpoint's, with its sizes and
    conventions; --pretrained-decoder: the decoder's embeddings, first --decoder-layers layers and the LM head."""
    from fairseq_nar_plugins.modules.backbone.bert_backbone import BertBackbone, BertBackboneConfig
    from fairseq_nar_plugins.modules.pretrained.pretrained_import import ImportedCheckpoint, save_converted
    from fairseq_nar_plugins.modules.pretrained.pretrained_vocab import PretrainedDictionary
    from fairseq_nar_plugins.tasks.masked_autoencoder_pretrain import MaskedAutoencoderPretrainTask

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(20)]
    vocab = PretrainedDictionary.from_tokens(tokens, dict(bos="[CLS]", pad="[PAD]", eos="[SEP]", unk="[UNK]",
                                                          mask="[MASK]"), family="bert")
    cfg = BertBackboneConfig.bert(vocab_size=len(tokens), embed_dim=32, ffn_embed_dim=48, layers=3,
                                  attention_heads=2, num_positions=64, family="bert")
    torch.manual_seed(3)
    bert = BertBackbone(cfg)
    lm_head = {"dense.weight": torch.randn(32, 32), "dense.bias": torch.randn(32), "layer_norm.weight": torch.rand(32),
               "layer_norm.bias": torch.randn(32), "bias": torch.randn(len(tokens))}
    folder = str(tmp_path / "bert")
    save_converted(ImportedCheckpoint(cfg, bert.state_dict(), vocab, lm_head, {"format": "test"}), folder)
    d = PretrainedDictionary.load(os.path.join(folder, "dict.txt"))
    task = PretrainTask(d)
    task.mask_idx = MaskedAutoencoderPretrainTask.add_mask_symbol(d, "<mask>")
    assert task.mask_idx == 4 and len(d) == len(tokens)  # the checkpoint's [MASK] row, no new row
    model = build(MLAEModel, pretrain.ARCHS["12_4"], task, pretrained_encoder=folder, pretrained_decoder=folder,
                  decoder_layers=2)
    assert (model.args.encoder_layers, model.args.encoder_embed_dim, model.args.decoder_embed_dim) == (3, 32, 32)
    for k, v in bert.state_dict().items():
        assert torch.equal(model.encoder.backbone.state_dict()[k], v), k
        if not k.startswith("layers.") or int(k.split(".")[1]) < 2:
            assert torch.equal(model.decoder.backbone.state_dict()[k], v), k
    assert len(model.decoder.backbone.layers) == 2
    assert torch.equal(model.decoder.lm_head.dense.weight, lm_head["dense.weight"])
    assert model.decoder.lm_head.weight is model.encoder.backbone.embeddings.embed_tokens.weight
    with pytest.raises(PretrainedCheckpointError, match="fewer than the 4 decoder layers"):
        build(MLAEModel, pretrain.ARCHS["12_4"], task, pretrained_encoder=folder, pretrained_decoder=folder)


# ----------------------------------------------------------------------------------------- checkpoint loading
def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("cross_attention", [False, True])
def test_pretraining_checkpoint_loads_into_every_fine_tuning_model(tmp_path, caplog, cross_attention):
    source, path, d = pretrained(tmp_path, cross_attention)
    ckpt = _state(source)
    task = TranslationTask(vocabulary(mask=False))  # fine-tuning data: dict.txt without <mask>, added at build
    caplog.set_level(logging.INFO)
    for cls, arch in ((MLAESeq2SeqModel, ar.SEQ2SEQ_ARCHS["small"]), (MLAECMLMModel, nar.ARCHS["small"]),
                      (MLAEUniLMModel, ar.UNILM_ARCHS["small"])):
        task = TranslationTask(vocabulary(mask=False))
        caplog.clear()
        # the architecture says "small", the checkpoint "tiny": the checkpoint's sizes win
        model = build(cls, arch, task, seed=1, init_from_mlae=path, max_update=10)
        assert len(task.source_dictionary) == len(d) and model.mask_idx == d.index("<mask>")
        state = model.state_dict()
        new = [k for k in state if k not in ckpt]
        for k in state:
            if k in ckpt:
                assert torch.equal(state[k], ckpt[k]), k
        cross = [k for k in state if ".encoder_attn" in k]
        if cls is MLAEUniLMModel:
            assert not cross and new == []
            assert "not used: ['decoder.backbone.layers.*.encoder_attn" in caplog.text or not cross_attention
            continue
        assert cross
        for k in cross:
            if cross_attention:  # pretrained with cross-attention: taken as they are
                assert k in ckpt
            else:  # copied from the same layer's (pretrained) self-attention
                assert torch.equal(state[k], ckpt[k.replace("encoder_attn", "self_attn")]), k
        expected_new = ([] if cross_attention else cross) + (
            ["decoder.length.proj.weight", "decoder.length.proj.bias"] if cls is MLAECMLMModel else [])
        assert sorted(new) == sorted(expected_new)
        assert "new: " in caplog.text and ("copied from each layer's self-attention" in caplog.text) == (
            not cross_attention)
        # the loader is read once: the saved args rebuild the same network without the checkpoint
        assert model.args.init_from_mlae is None
        assert len(model.decoder.backbone.layers) == SIZES["tiny"][1]


def test_classifier_takes_the_encoder_and_lists_the_decoder_as_unused(tmp_path, caplog):
    source, path, d = pretrained(tmp_path)
    caplog.set_level(logging.INFO)
    task = argparse.Namespace(source_dictionary=d, cfg=argparse.Namespace(init_token=d.bos(), separator_token=None))
    model = build(MLAEClassifierModel, classifier.ARCHS["tiny"], task, init_from_mlae=path)
    ckpt = _state(source)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt[k]), k
    assert "not used: ['decoder.backbone" in caplog.text


def test_loader_stops_on_vocabulary_and_shape_mismatches_naming_the_tensor(tmp_path):
    source, path, d = pretrained(tmp_path)
    bigger = vocabulary(21, mask=False)
    with pytest.raises(PretrainedCheckpointError, match=r"encoder\.backbone\.embeddings\.embed_tokens\.weight\) have "
                                                       r"25 rows but the task dictionary has 26 symbols"):
        build(MLAESeq2SeqModel, ar.SEQ2SEQ_ARCHS["tiny"], TranslationTask(bigger), init_from_mlae=path)
    state = torch.load(path, weights_only=False)
    state["model"]["decoder.lm_head.dense.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(PretrainedCheckpointError, match=r"tensor decoder\.lm_head\.dense\.bias has shape \(3,\) in the "
                                                       r"checkpoint but \(64,\) in the model"):
        build(MLAECMLMModel, nar.ARCHS["tiny"], TranslationTask(vocabulary(mask=False)),
              init_from_mlae=str(tmp_path / "broken.pt"))
    with pytest.raises(FileNotFoundError, match="--init-from-mlae"):
        MLAECheckpoint(str(tmp_path / "missing.pt"))


# ------------------------------------------------------------------------------------------------ AR decoders
def _ar_inputs(d):
    src = rows(d, ["w1", "w2", "w3", "</s>"], ["w4", "</s>"], left=True)
    prev = rows(d, ["</s>", "w5", "w6", "w7", "w8"], ["</s>", "w9", "w10"])
    return src, prev


@pytest.mark.parametrize("cls,archs", [(MLAESeq2SeqModel, ar.SEQ2SEQ_ARCHS), (MLAEUniLMModel, ar.UNILM_ARCHS)])
def test_ar_decoder_is_causal_and_incremental_decoding_equals_full_recomputation(cls, archs):
    d = vocabulary()
    model = build(cls, archs["tiny"], TranslationTask(d), max_update=10)
    src, prev = _ar_inputs(d)
    enc = model.encoder(src)
    full, _ = model.decoder(prev, encoder_out=enc)
    changed = prev.clone()
    changed[0, 3:] = d.index("w11")  # tokens after position 2
    again, _ = model.decoder(changed, encoder_out=enc)
    assert torch.allclose(full[0, :3], again[0, :3], atol=1e-6) and not torch.allclose(full[0, 3], again[0, 3])
    # incremental, as SequenceGenerator runs it: one position per step, the prefix cached, a beam reorder midway
    # (two hypotheses of one sentence swap places; fairseq does not reorder cached encoder keys/values then)
    src = src[:1].expand(2, -1)
    enc = model.encoder(src)
    full, _ = model.decoder(prev, encoder_out=enc)
    state = {}
    order = torch.tensor([1, 0])
    for t in range(prev.size(1)):
        step, _ = model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
        real = prev[:, t].ne(d.pad())
        expected = full[:, t].clone()
        expected[:, d.index("<mask>")] = float("-inf")  # never generated
        assert torch.allclose(step[real, 0], expected[real], atol=1e-5), t
        if t == 2:  # swap the two rows everywhere, as a beam reorder does
            model.decoder.reorder_incremental_state_scripting(state, order)
            enc = model.encoder.reorder_encoder_out(enc, order)
            prev, full = prev[order], full[order]


def test_unilm_mask_and_causal_mask_against_brute_force():
    src_pad = torch.tensor([[True, False, False], [False, False, False]])
    tgt_pad = torch.tensor([[False, False], [False, True]])
    mask = unilm_seq2seq_mask(src_pad, tgt_pad)
    s = 3
    for b in range(2):
        for q in range(5):
            for k in range(5):
                blind = (q < s and k >= s) or (q >= s and k >= s and k > q)
                assert bool(mask[b, q, k]) == blind, (b, q, k)
    assert causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]


def test_unilm_source_states_do_not_depend_on_the_target():
    d = vocabulary()
    model = build(MLAEUniLMModel, ar.UNILM_ARCHS["tiny"], TranslationTask(d), max_update=10)
    src, prev = _ar_inputs(d)
    enc = model.encoder(src)
    dec = model.decoder
    inputs = lambda p: torch.cat([enc["encoder_out"], dec.backbone.embeddings.embed_tokens(dec.start_as_bos(p))], 1)
    pads = lambda p: torch.cat([enc["encoder_padding_mask"], p.eq(d.pad())], 1)
    run = lambda p: dec.backbone(token_embeddings=inputs(p), padding_mask=pads(p),
                                 token_type_ids=dec._types(enc["encoder_padding_mask"], p.eq(d.pad())),
                                 self_attn_mask=unilm_seq2seq_mask(enc["encoder_padding_mask"], p.eq(d.pad())),
                                 return_all_hiddens=True)["inner_states"]
    other = prev.masked_fill(prev.ne(d.pad()) & prev.ne(d.eos()), d.index("w12"))
    for a, b in zip(run(prev), run(other)):
        assert torch.allclose(a[:, : src.size(1)], b[:, : src.size(1)], atol=1e-6)


# ------------------------------------------------------------------------------------------- scheduled masking
def test_mask_schedule_follows_algorithm_1():
    s = MaskSchedule("0.6:0", max_update=100)
    assert [s(t) for t in (0, 50, 100, 200)] == [0.6, 0.3, 0.0, 0.0]
    for t in range(0, 101, 7):
        assert s(t) == pytest.approx(0.6 - 0.6 / 100 * t)  # m_t = m_0 - (m_0 / T) t
    assert MaskSchedule("0.6:0@30k").steps == 30000 and MaskSchedule("0.6:0@30k")(15000) == pytest.approx(0.3)
    assert MaskSchedule("0.6:0", "constant", max_update=100)(99) == 0.6
    assert MaskSchedule("0")(5) == 0.0
    with pytest.raises(ValueError, match="--max-update is not set"):
        MaskSchedule("0.6:0")
    with pytest.raises(ValueError, match="--mask-schedule"):
        MaskSchedule("1.5:0@10")
    with pytest.raises(ValueError, match="--mask-schedule-kind"):
        MaskSchedule("0.6", "cosine")


def test_mask_decoder_input_counts_and_statistics():
    torch.manual_seed(0)
    n_rows, width, ratio = 5000, 12, 0.35
    tokens = torch.randint(5, 20, (n_rows, width))
    lengths = torch.randint(2, width + 1, (n_rows,))
    maskable = torch.arange(width)[None, :] < lengths[:, None]
    maskable[:, 0] = False  # the start symbol
    masked_tokens, masked = mask_decoder_input(tokens, ratio, maskable, 99)
    n = maskable.sum(1)
    count = masked.sum(1)
    assert not masked[~maskable].any() and torch.equal(masked_tokens[masked], torch.full((int(count.sum()),), 99))
    assert torch.equal(masked_tokens[~masked], tokens[~masked])
    floor = (ratio * n).floor().long()
    assert bool(((count == floor) | (count == floor + 1)).all())
    total = int(n.sum())
    sigma = math.sqrt(total * ratio * (1 - ratio))
    assert abs(int(count.sum()) - ratio * total) < 3 * sigma
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(mask_decoder_input(tokens, ratio, maskable, 99, g1)[1],
                       mask_decoder_input(tokens, ratio, maskable, 99, g2)[1])


def test_seq2seq_masks_decoder_inputs_at_the_scheduled_ratio_in_training_only():
    d = vocabulary()
    model = build(MLAESeq2SeqModel, ar.SEQ2SEQ_ARCHS["tiny"], TranslationTask(d), max_update=100)
    seen = []
    model.decoder.register_forward_pre_hook(lambda mod, inp, kw: seen.append(inp[0].clone()), with_kwargs=True)
    src = rows(d, *[["w1", "w2", "</s>"]] * 64)
    prev = rows(d, *[["</s>"] + [f"w{i}" for i in range(1, 11)]] * 64)
    mask = d.index("<mask>")
    for t, expected in ((0, 0.6), (50, 0.3), (100, 0.0)):
        model.set_num_updates(t)
        assert model.mask_ratio() == pytest.approx(expected)
        model.train()
        model(src, None, prev)
        got = seen[-1]
        assert bool((got[:, 0] == d.eos()).all())  # the start symbol is never masked
        assert bool((got.eq(mask).sum(1) >= math.floor(expected * 10)).all())
        assert bool((got.eq(mask).sum(1) <= math.floor(expected * 10) + 1).all())
        model.eval()
        model(src, None, prev)
        assert not seen[-1].eq(mask).any()  # validation: never masked
    no_update = build(MLAESeq2SeqModel, ar.SEQ2SEQ_ARCHS["tiny"], TranslationTask(vocabulary()))
    no_update(src, None, prev)  # generation / validation builds need no --max-update
    with pytest.raises(ValueError, match="--max-update"):
        no_update.train()(src, None, prev)


# ------------------------------------------------------------------------------------------ NAR: mask-predict
def test_cmlm_feeds_the_pretraining_mask_where_fairseq_puts_unk():
    d = vocabulary()
    model = build(MLAECMLMModel, nar.ARCHS["tiny"], TranslationTask(d))
    src = rows(d, ["<s>", "w1", "w2", "</s>"])
    tgt = rows(d, ["<s>", "w3", "w4", "w5", "</s>"])
    prev = tgt.clone()
    prev[0, 2:4] = d.unk()  # translation_lev --noise random_mask
    terms = model(src, None, prev, tgt)
    with_mask = prev.masked_fill(prev.eq(d.unk()), d.index("<mask>"))
    assert torch.equal(terms["word_ins"]["out"], model.decoder(with_mask, model.encoder(src)))
    assert terms["word_ins"]["mask"].tolist() == [[False, False, True, True, False]]
    assert terms["length"]["tgt"].tolist() == [5] and terms["length"]["factor"] == 0.1


def _logprobs(scores, vocab=30):
    """(B, T) chosen token ids and their probabilities -> (B, T, V) log-probabilities putting p on the token."""
    tokens, probs = scores
    lp = torch.full(tokens.shape + (vocab,), -30.0)
    lp.scatter_(2, tokens[:, :, None], probs.log()[:, :, None])
    return lp


def test_mask_predict_remasks_the_lowest_scores_by_the_schedule():
    mask, pad, bos, eos = 29, 1, 0, 2
    length, max_step = 12, 4
    tokens = torch.tensor([[bos] + [mask] * (length - 2) + [eos, pad]])
    scores = torch.zeros(tokens.shape)
    for step in range(max_step):
        probs = torch.rand(tokens.shape) * 0.9 + 0.05
        predicted = torch.randint(5, 25, tokens.shape)
        was_masked = tokens.eq(mask)
        new_tokens, new_scores = mask_predict_update(tokens, scores, _logprobs((predicted, probs)), step, max_step,
                                                     mask, pad, bos, eos)
        filled = torch.where(was_masked, predicted, tokens)
        filled_scores = torch.where(was_masked, probs.log(), scores)
        n = int(remask_count(torch.tensor([length]), step, max_step))
        assert n == (int((length - 2) * (1 - (step + 1) / max_step)) if step + 1 < max_step else 0)
        assert int(new_tokens.eq(mask).sum()) == n
        content = (torch.arange(tokens.size(1)) > 0) & (torch.arange(tokens.size(1)) < length - 1)
        lowest = filled_scores[0, content].sort().values[:n]
        assert torch.equal(new_scores[0][new_tokens[0].eq(mask)], torch.zeros(n))
        assert torch.allclose(filled_scores[0][new_tokens[0].eq(mask)].sort().values, lowest)
        kept = new_tokens.ne(mask)
        assert torch.equal(new_tokens[kept], filled[kept])
        tokens, scores = new_tokens, new_scores
    assert not tokens.eq(mask).any()


def test_merge_repeats_on_hand_made_rows():
    pad, bos, eos = 1, 0, 2
    a, b = 7, 8
    tokens = torch.tensor([[bos, a, a, b, a, a, eos, pad], [bos, eos, pad, pad, pad, pad, pad, pad],
                           [bos, b, b, b, b, b, b, eos]])
    scores = torch.arange(24, dtype=torch.float).view(3, 8)
    merged, kept = merge_repeats(tokens, scores, pad, bos, eos)
    assert merged.tolist() == [[bos, a, b, a, eos], [bos, eos, pad, pad, pad], [bos, b, eos, pad, pad]]
    assert kept.tolist() == [[0, 1, 3, 4, 6], [8, 9, 0, 0, 0], [16, 17, 23, 0, 0]]
    # never across <s> / </s>: specials are not content
    edge = torch.tensor([[bos, bos, a, eos, eos]])
    assert merge_repeats(edge, None, pad, bos, eos)[0].tolist() == [[bos, bos, a, eos, eos]]


def test_generation_one_pass_ten_passes_length_beam_and_merge(monkeypatch):
    d = vocabulary()
    model = build(MLAECMLMModel, nar.ARCHS["tiny"], TranslationTask(d))
    from fairseq.iterative_refinement_generator import IterativeRefinementGenerator

    src = rows(d, ["<s>", "w1", "w2", "w3", "</s>"], ["<s>", "w4", "</s>"])
    sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1)}}
    calls = []
    original = model.forward_decoder

    def spy(decoder_out, encoder_out, **kw):
        calls.append(int(decoder_out.output_tokens.eq(model.mask_idx).sum()))
        return original(decoder_out, encoder_out, **kw)

    monkeypatch.setattr(model, "forward_decoder", spy)
    for max_iter, passes in ((0, 1), (9, 10)):
        calls.clear()
        gen = IterativeRefinementGenerator(d, max_iter=max_iter, adaptive=False)
        out = gen.generate([model], sample)
        assert len(calls) == passes and len(out) == 2
        for hypo in out:
            toks = hypo[0]["tokens"]
            assert not toks.eq(model.mask_idx).any() and toks[-1] == d.eos()
            assert not (toks[1:] == toks[:-1]).any()  # repeats merged
    beam = model.regenerate_length_beam(model.initialize_output_tokens(model.encoder(src), src), 3)
    lengths = beam.output_tokens.ne(d.pad()).sum(1)
    assert lengths.view(2, 3)[:, 2].tolist() == (lengths.view(2, 3)[:, 0] + 2).tolist()
    assert bool((beam.output_tokens[:, 0] == d.bos()).all())
    for row, n in zip(beam.output_tokens, lengths):
        assert row[n - 1] == d.eos() and bool((row[1: n - 1] == model.mask_idx).all())
    gen = IterativeRefinementGenerator(d, max_iter=2, beam_size=3, adaptive=False)
    assert len(gen.generate([model], sample)) == 2


# ------------------------------------------------------------------------------------------------- classifier
def test_eos_pooling_under_left_and_right_padding_and_pairs():
    eos, pad = 2, 1
    tokens = torch.tensor([[0, 5, 2, 1, 1], [1, 1, 0, 6, 2], [0, 5, 2, 7, 2]])
    features = torch.arange(15, dtype=torch.float).view(3, 5, 1).expand(3, 5, 4)
    pooled = last_eos_states(features, tokens, eos)
    assert pooled[:, 0].tolist() == [2.0, 9.0, 14.0]  # right-padded, left-padded, pair: the last </s>
    with pytest.raises(ValueError, match="has none"):
        last_eos_states(features, torch.tensor([[0, 5, 6, 7, 8]] * 3), eos)


def test_classifier_heads_read_the_last_eos_state():
    d = vocabulary()
    task = argparse.Namespace(source_dictionary=d, cfg=argparse.Namespace(init_token=d.bos(), separator_token=None))
    model = build(MLAEClassifierModel, classifier.ARCHS["tiny"], task)
    model.register_classification_head("sentence_classification_head", num_classes=3)
    model.eval()
    src = rows(d, ["<s>", "w1", "w2", "</s>"], ["<s>", "w3", "</s>"], left=True)
    logits, _ = model(src, classification_head_name="sentence_classification_head")
    features, _ = model(src, features_only=True)
    head = model.classification_heads["sentence_classification_head"]
    assert torch.allclose(logits, head.out_proj(features[:, -1]), atol=1e-6)  # left-padded: </s> is last
    with pytest.raises(KeyError, match="no classification head 'other'"):
        model(src, classification_head_name="other")
    with pytest.raises(ValueError, match="--init-token"):
        build(MLAEClassifierModel, classifier.ARCHS["tiny"],
              argparse.Namespace(source_dictionary=d, cfg=argparse.Namespace(init_token=None, separator_token=None)))


# ---------------------------------------------------------------------------------------- flags, architectures
def test_every_flag_has_help_and_12_4_has_the_paper_sizes():
    for cls in (MLAEModel, MLAECMLMModel, MLAESeq2SeqModel, MLAEUniLMModel, MLAEClassifierModel):
        parser = argparse.ArgumentParser()
        cls.add_args(parser)
        for action in parser._actions:
            if action.dest != "help":
                assert action.help and len(action.help) > 15, (cls.__name__, action.dest)
    args = argparse.Namespace()
    pretrain.ARCHS["12_4"](args)
    assert (args.encoder_layers, args.decoder_layers, args.encoder_embed_dim, args.encoder_attention_heads,
            args.encoder_ffn_embed_dim, args.decoder_ffn_embed_dim) == (12, 4, 768, 12, 3072, 3072)
    assert (args.dropout, args.max_positions_table, args.mlae_encoder_input, args.mlae_cross_attention) == (
        0.1, 512, "drop", False)
    assert args.cross_attention_init == "self_attention"
    args = argparse.Namespace()
    ar.SEQ2SEQ_ARCHS["9_4"](args)
    assert (args.encoder_layers, args.decoder_layers, args.mask_schedule, args.mask_schedule_kind) == (
        9, 4, "0.6:0", "linear")
    args = argparse.Namespace()
    ar.SEQ2SEQ_ARCHS["mini"](args)  # the CPU demo's size
    assert (args.encoder_layers, args.decoder_layers, args.encoder_embed_dim, args.encoder_attention_heads,
            args.encoder_ffn_embed_dim) == (3, 2, 256, 4, 1024)
    args = argparse.Namespace()
    nar.ARCHS["8_8"](args)
    assert (args.encoder_layers, args.decoder_layers, args.length_loss_factor, args.no_merge_repeats) == (
        8, 8, 0.1, False)
    args = argparse.Namespace(decoder_layers=0, dropout=0.0)  # flags win, 0 included
    pretrain.ARCHS["12_4"](args)
    assert args.decoder_layers == 0 and args.dropout == 0.0


# ---------------------------------------------------------------------------------------------------- benchmark
def test_benchmark_systems_build_and_decode_at_forced_lengths(tmp_path):
    from fairseq_nar_plugins.evaluation import registry
    from fairseq_nar_plugins.evaluation.systems import build_model_systems, prepare_quick_data, synthetic_lines

    data = prepare_quick_data(str(tmp_path), synthetic_lines(6, 3, 8, vocab=50, seed=1),
                              synthetic_lines(6, 3, 8, vocab=50, seed=2), "src", "tgt", vocab_size=120)
    for name, labels in (("mlae_cmlm", ["1 it.", "10 it."]), ("mlae_seq2seq", ["greedy", "beam 6"])):
        systems = build_model_systems(registry.MODELS[name], data, "src", "tgt", "test", size=registry.SIZES["tiny"],
                                      force_lengths=True)
        assert [s.decoding.label for s in systems] == labels
        for system in systems:
            batch = system.batches("test", None, 3)[0]
            system.forcer.set(torch.full((len(batch["id"]),), 5))
            system.activate()
            for hypos in system.inference(batch):
                tokens = hypos[0]["tokens"]
                if system.kind == "ar":
                    assert len(tokens) == 6  # 5 tokens + </s>
                else:  # [<s> 5 tokens </s>], fewer if random weights repeat a token (merged)
                    assert 3 <= len(tokens) <= 7 and tokens[0] == 0


# --------------------------------------------------------------------------------------------- end to end (CLI)
PRETRAIN_UPDATES = 150
RESUME_FROM = 140


def _references(toy_data_bin, split="test"):
    with open(os.path.join(os.path.dirname(toy_data_bin), "raw", f"{split}.tgt")) as f:
        return [line.strip() for line in f]


def _bleu(proc, toy_data_bin):
    from fairseq_nar_plugins.scoring import check_coverage, sacrebleu_score

    hyps = {int(m.group(1)): m.group(2) for m in re.finditer(r"^H-(\d+)\t[^\t]*\t(.*)$", proc.stdout, re.M)}
    refs = _references(toy_data_bin)
    return sacrebleu_score(check_coverage(hyps, len(refs)), refs)[0].score


def _losses(log, key="loss"):
    return {int(u): float(v) for v, u in re.findall(rf"train_inner \| .*? {key}=([\d.]+),.*?num_updates=(\d+)", log)}


def _valid_losses(log):
    return [float(v) for v in re.findall(r"\| valid on 'valid' subset \| loss ([\d.]+)", log)]


@pytest.fixture(scope="module")
def toy_mono_bin(toy_data_bin, tmp_path_factory):
    """Pretraining text for the toy task: one line per word of the train/valid sources, the word followed by its
    translation (``s4 t4 u4``), binarized with the toy task's dictionary (the fine-tuning data's); pretraining reads
    one line a block (``--sample-break-mode eos``).

    Why this text: pretraining must learn something the fine-tuning can use, as it does on real text. Measured with
    mlae_tiny (2-layer decoder, cross-attention), 300 pretraining updates, then 300 NAR fine-tuning updates
    (``word_ins`` loss in bits at update 300; random initialisation: 4.70):

    * lines = a source sentence followed by its translation: pretraining stays near the unigram entropy (valid 5.24
      bits; finding a masked word's counterpart needs positions the model has not learnt yet), and the decoder it
      leaves is a worse start than random weights: fine-tuning from it stays at 5.19 (from its encoder alone: 4.57;
      from its decoder alone: 5.03), and 1,000 updates reach 1 BLEU where random weights reach 79;
    * lines = the source word by word, each followed by its translation (``s4 t4 s9 t9 u9 ...``): no better in 600
      updates (5.74 bits);
    * one word and its translation a line (this fixture): pretraining learns the lexicon (valid 0.05 bits by update
      140) and NAR fine-tuning from it reaches 1.93 bits, against 4.70 from random weights.
    """
    from fairseq import options
    from fairseq_cli.preprocess import main as preprocess
    from toy_data import lexicon

    lex = lexicon()
    raw = os.path.join(os.path.dirname(toy_data_bin), "raw")
    root = tmp_path_factory.mktemp("mlae_mono")
    for split in ("train", "valid"):
        with open(os.path.join(raw, f"{split}.src")) as src, open(root / f"{split}.txt", "w") as out:
            out.writelines(f"{w} {' '.join(lex[w])}\n" for line in src for w in line.split())
    dest = str(root / "bin")
    preprocess(options.get_preprocessing_parser().parse_args([
        "--only-source", "--srcdict", os.path.join(toy_data_bin, "dict.src.txt"), "--trainpref",
        str(root / "train.txt"), "--validpref", str(root / "valid.txt"), "--destdir", dest, "--workers", "1"]))
    return dest


def _pretrain_args(data, save_dir, max_update, extra=()):
    return [
        data, "--user-dir", USER_DIR, "--task", "masked_autoencoder_pretrain", "--tokens-per-sample", "64",
        "--sample-break-mode", "eos",
        "--corruptions", "span", "--arch", "mlae_tiny", "--decoder-layers", "2", "--mlae-cross-attention",
        "--criterion", "nat_loss",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.004", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "100", "--warmup-init-lr", "1e-07", "--clip-norm", "2.0", "--dropout", "0.0",
        "--max-tokens", "2048", "--max-update", str(max_update), "--save-dir", save_dir, "--no-epoch-checkpoints",
        "--save-interval-updates", str(RESUME_FROM), "--keep-interval-updates", "1", "--cpu", "--num-workers", "0",
        "--data-buffer-size", "0", "--seed", "1", "--log-format", "simple", "--log-interval", "10", *extra]


@pytest.fixture(scope="module")
def toy_pretrained(toy_mono_bin, tmp_path_factory):
    """mlae_tiny with a 2-layer decoder (one layer cannot learn the toy task's alignment, which needs a content
    lookup then a shift) and decoder cross-attention, pretrained with fairseq-train on the toy text. Returns
    (checkpoint_last.pt, train log)."""
    save = str(tmp_path_factory.mktemp("mlae_pretrain"))
    proc = run_cli("fairseq_cli.train", _pretrain_args(toy_mono_bin, save, PRETRAIN_UPDATES))
    return os.path.join(save, "checkpoint_last.pt"), proc.stdout + proc.stderr


def test_pretraining_learns_and_resumes_to_the_same_losses(toy_mono_bin, toy_pretrained, tmp_path):
    ckpt, log = toy_pretrained
    valid = _valid_losses(log)
    # masked-token loss (bits) on held-out lines: the lexicon learnt (a masked word follows from the other words of
    # its line)
    assert valid[-1] < 0.5 and valid[-1] < valid[0] - 1, valid
    # resuming from the checkpoint of update RESUME_FROM gives exactly the losses of the straight run
    save = os.path.dirname(ckpt)
    resumed = run_cli("fairseq_cli.train", _pretrain_args(toy_mono_bin, str(tmp_path), PRETRAIN_UPDATES, [
        "--restore-file", os.path.join(save, f"checkpoint_{_epoch_of(log, RESUME_FROM)}_{RESUME_FROM}.pt")]))
    resumed_log = resumed.stdout + resumed.stderr
    assert f"@ {RESUME_FROM} updates" in resumed_log
    straight, again = _losses(log), _losses(resumed_log)
    assert sorted(again) == [PRETRAIN_UPDATES] and again[PRETRAIN_UPDATES] == straight[PRETRAIN_UPDATES]
    assert _valid_losses(resumed_log)[-1] == valid[-1]


def _epoch_of(log, update):
    """The epoch of the interval checkpoint saved at ``update`` (from fairseq's "Saved checkpoint" line)."""
    m = re.search(rf"checkpoint_(\d+)_{update}\.pt", log)
    assert m, "no interval checkpoint in the log"
    return m.group(1)


FINETUNE_COMMON = ["--user-dir", USER_DIR, "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.003",
                   "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--warmup-init-lr", "1e-07",
                   "--dropout", "0.0", "--label-smoothing", "0.1", "--max-tokens", "2048", "--no-epoch-checkpoints",
                   "--cpu", "--num-workers", "0", "--data-buffer-size", "0", "--seed", "1", "--log-format", "simple",
                   "--log-interval", "50"]
NAR_UPDATES = 400
AR_UPDATES = 300


def _generate(toy_data_bin, ckpt, task_flags, decoding):
    return run_cli("fairseq_cli.generate", [
        toy_data_bin, "--user-dir", USER_DIR, *task_flags, "--path", ckpt, "--gen-subset", "test", *decoding,
        "--batch-size", "64", "--required-batch-size-multiple", "1", "--cpu"])


def test_nar_fine_tuning_learns_the_toy_task_with_mask_predict(toy_data_bin, toy_pretrained, tmp_path):
    """mlae_cmlm from the pretraining checkpoint (translation_lev --noise random_mask, nat_loss); decoded with one and
    with ten mask-predict passes (a length beam of 3 with ten)."""
    ckpt, _ = toy_pretrained
    task = ["--task", "translation_lev", "--noise", "random_mask"]
    proc = run_cli("fairseq_cli.train", [toy_data_bin, *task, "--arch", "mlae_cmlm_tiny", "--init-from-mlae", ckpt,
                                         "--criterion", "nat_loss", "--max-update", str(NAR_UPDATES),
                                         "--save-dir", str(tmp_path), *FINETUNE_COMMON])
    assert "initialised from MLAE checkpoint" in proc.stdout + proc.stderr
    last = str(tmp_path / "checkpoint_last.pt")
    one = _bleu(_generate(toy_data_bin, last, task, ["--iter-decode-max-iter", "0"]), toy_data_bin)
    ten = _bleu(_generate(toy_data_bin, last, task, ["--iter-decode-max-iter", "9", "--iter-decode-force-max-iter",
                                                     "--iter-decode-with-beam", "3"]), toy_data_bin)
    assert one > 40 and ten > 40 and ten >= one - 1, (one, ten)


@pytest.mark.parametrize("arch", ["mlae_seq2seq_tiny", "mlae_unilm_tiny"])
def test_ar_fine_tuning_learns_the_toy_task_with_beam_search(toy_data_bin, toy_pretrained, tmp_path, arch):
    """Seq2seq / UniLM style from the pretraining checkpoint with scheduled masking 0.6 -> 0, decoded with fairseq's
    beam search (beam 6, length penalty 1.0; incremental decoding)."""
    ckpt, _ = toy_pretrained
    task = ["--task", "translation"]
    run_cli("fairseq_cli.train", [toy_data_bin, *task, "--arch", arch, "--init-from-mlae", ckpt, "--criterion",
                                  "label_smoothed_cross_entropy", "--mask-schedule", "0.6:0",
                                  "--max-update", str(AR_UPDATES), "--save-dir", str(tmp_path), *FINETUNE_COMMON])
    bleu = _bleu(_generate(toy_data_bin, str(tmp_path / "checkpoint_last.pt"), task,
                           ["--beam", "6", "--lenpen", "1.0"]), toy_data_bin)
    assert bleu > 80, f"{arch} toy BLEU {bleu:.1f}"


def test_classifier_beats_the_majority_class(toy_data_bin, toy_pretrained, tmp_path):
    """mlae_classifier from the pretraining checkpoint under sentence_prediction: label = the source sentence holds
    the word s0 (about a quarter of them do)."""
    from fairseq import options
    from fairseq_cli.preprocess import main as preprocess

    ckpt, _ = toy_pretrained
    raw = os.path.join(os.path.dirname(toy_data_bin), "raw")
    data = tmp_path / "cls"
    for split in ("train", "valid"):
        lines = open(os.path.join(raw, f"{split}.src")).read().splitlines()
        (tmp_path / f"{split}.input0").write_text("\n".join(lines) + "\n")
        (tmp_path / f"{split}.label").write_text("\n".join(str(int("s0" in l.split())) for l in lines) + "\n")
    for column, flags in (("input0", ["--srcdict", os.path.join(toy_data_bin, "dict.src.txt")]), ("label", [])):
        preprocess(options.get_preprocessing_parser().parse_args([
            "--only-source", *flags, "--trainpref", str(tmp_path / f"train.{column}"), "--validpref",
            str(tmp_path / f"valid.{column}"), "--destdir", str(data / column), "--workers", "1"]))
    labels = (tmp_path / "valid.label").read_text().split()
    majority = max(labels.count("0"), labels.count("1")) / len(labels)
    proc = run_cli("fairseq_cli.train", [
        str(data), "--user-dir", USER_DIR, "--task", "sentence_prediction", "--num-classes", "2", "--init-token", "0",
        "--criterion", "sentence_prediction", "--arch", "mlae_classifier_tiny", "--init-from-mlae", ckpt,
        "--optimizer", "adam", "--lr", "0.001", "--batch-size", "32", "--max-update", "200", "--save-dir",
        str(tmp_path / "ckpt"), "--no-epoch-checkpoints", "--cpu", "--num-workers", "0", "--seed", "1",
        "--log-format", "simple", "--log-interval", "50"])
    accuracy = [float(a) for a in re.findall(r"\| valid on 'valid' subset \|.*?\| accuracy ([\d.]+)",
                                             proc.stdout + proc.stderr)]
    assert accuracy and accuracy[-1] > 90 and accuracy[-1] > 100 * majority + 10, (accuracy, majority)


def test_finetune_recipe_reuses_a_finished_training_without_touching_its_checkpoint(shared_data_dir, tmp_path):
    """examples/mlae/finetune.sh (via multi30k.sh) run twice: the second run reuses the finished training (ckpt/.done)
    instead of resuming it, which would make one more update than MAX_UPDATE and overwrite checkpoint_last.pt and the
    training log; it still decodes and scores the test split again."""
    source = os.path.join(shared_data_dir, "multi30k-en-de")
    data, mono = tmp_path / "data", tmp_path / "mono"
    data.mkdir()
    mono.mkdir()
    for split, n in (("train", 300), ("valid", 20), ("test_2016_flickr", 10)):
        for lang in ("en", "de"):
            with open(os.path.join(source, f"{split}.{lang}"), encoding="utf-8") as f:
                (data / f"{split}.{lang}").write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    (mono / "train.txt").write_text((data / "train.en").read_text(encoding="utf-8")
                                    + (data / "train.de").read_text(encoding="utf-8"), encoding="utf-8")
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", VOCAB_SIZE="400", VALID_LINES="50",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    prep = subprocess.run(["bash", os.path.join(ROOT, "examples", "pretraining", "run.sh"), str(mono),
                           str(tmp_path / "pretrain"), "1"], capture_output=True, text=True,
                          env=dict(env, PREPARE_ONLY="1"), timeout=300)
    assert prep.returncode == 0, prep.stdout + prep.stderr
    env.update(PRETRAIN=str(tmp_path / "pretrain"), INIT="random", MODE="ar", ARCH="mlae_seq2seq_tiny",
               MAX_UPDATE="3", MAX_TOKENS="1024", WARMUP="1", BEAM="2")
    work = tmp_path / "ft"
    runs = [subprocess.run(["bash", os.path.join(ROOT, "examples", "mlae", "multi30k.sh"), str(data), str(work), "5"],
                           capture_output=True, text=True, env=env, timeout=600)]
    assert runs[0].returncode == 0, runs[0].stdout + runs[0].stderr
    ckpt, log = work / "ckpt-ar-random" / "checkpoint_last.pt", work / "logs" / "train-ar-random.log"
    assert (work / "ckpt-ar-random" / ".done").exists()
    stamps = (ckpt.stat().st_mtime_ns, log.read_text())
    assert "num_updates 3" in stamps[1]
    runs.append(subprocess.run(["bash", os.path.join(ROOT, "examples", "mlae", "multi30k.sh"), str(data), str(work),
                                "5"], capture_output=True, text=True, env=env, timeout=600))
    assert runs[1].returncode == 0, runs[1].stdout + runs[1].stderr
    assert "reusing " + str(work / "ckpt-ar-random") in runs[1].stdout
    assert (ckpt.stat().st_mtime_ns, log.read_text()) == stamps
    assert "num_updates 4" not in log.read_text()
    assert runs[1].stdout.count("sacreBLEU") == 2  # greedy and beam, scored again
