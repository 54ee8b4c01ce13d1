"""Reliability (issue 16): a killed training run resumes by itself; silent mismatches between a checkpoint and the data
or flags it is used with are refused; every bad input of the probes (docs: reliability-probes.md) is a clear error.

The test names carry the probe ids of the issue's table (1d, 2b, 3c2, 4b, 6d, ...).
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks

from fairseq_nar_plugins.fingerprint import KEY, CheckpointMismatchError
from helpers_cli import USER_DIR, ctc_train_args, run_cli
from scripts_loader import load_script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ------------------------------------------------------------------------------------------ 4a/4b: the fault drill
def test_fault_drill_sigkill_at_seven_points_resumes_to_the_same_parameters(toy_data_bin, tmp_path):
    """fairseq-train killed with SIGKILL 7 times (between saves, while a numbered checkpoint, checkpoint_best.pt and
    checkpoint_last.pt are written, and once while fairseq's own in-place copy truncates checkpoint_last.pt), each
    time re-run with the same command, ends at the same update count with bit-identical parameters to an
    uninterrupted run; after every kill each checkpoint on disk loads; the truncated checkpoint_last.pt makes the
    next three resumes fall back to checkpoint_2_40.pt with a warning naming both files."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "fault_drill.py"), toy_data_bin, str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("DRILL {")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(line[-1][len("DRILL "):])
    assert report["problems"] == [], report
    assert report["kills"] == report["faults"] == 7 and report["runs"] == 8
    assert report["updates"] == report["reference_updates"] == 50 and report["differing_tensors"] == []
    assert report["fallback_warnings"] == 3
    log = (tmp_path / "w" / "drill.log").read_text()
    warning = next(line for line in log.splitlines() if "cannot be loaded" in line)
    assert "checkpoint_last.pt cannot be loaded" in warning and "resuming from" in warning
    assert "checkpoint_2_40.pt (40 updates)" in warning
    assert proc.returncode == 0


def test_deleted_checkpoint_last_resumes_from_the_newest_other_checkpoint(toy_ctc_checkpoint, toy_data_bin, tmp_path):
    """Deleting a broken checkpoint_last.pt used to restart training from scratch (and overwrite checkpoint_best.pt
    at the next validation); now the run resumes from checkpoint_best.pt, saying so."""
    save_dir = tmp_path / "deleted"
    shutil.copytree(toy_ctc_checkpoint[0], save_dir)
    os.remove(save_dir / "checkpoint_last.pt")
    assert sorted(p.name for p in save_dir.glob("*.pt")) == ["checkpoint_best.pt"]  # the only other checkpoint
    # the update of the best validation loss (not necessarily the last one)
    best = torch.load(save_dir / "checkpoint_best.pt", weights_only=True)["optimizer_history"][-1]["num_updates"]
    proc = run_cli("fairseq_cli.train", ctc_train_args(toy_data_bin, str(save_dir), 402))
    out = proc.stdout + proc.stderr
    assert re.search(rf"WARNING.*checkpoint_last\.pt does not exist; resuming from \S*checkpoint_best\.pt \({best} "
                     r"updates\).*to start from scratch instead, use an empty --save-dir", out), out[-3000:]
    assert re.search(rf"Loaded checkpoint \S*checkpoint_best\.pt \(epoch \d+ @ {best} updates\)", out)
    assert torch.load(save_dir / "checkpoint_last.pt", weights_only=True)["optimizer_history"][-1]["num_updates"] == 402


# ------------------------------------------------------------------------------------------------ fingerprints
def _task(data, *flags):
    parser = options.get_generation_parser()
    args = options.parse_args_and_arch(parser, [data, "--user-dir", USER_DIR, "--task", "translation_lev_ctc",
                                                "--path", "unused", *flags])
    return tasks.setup_task(args)


def _load(path, task):
    models, _ = checkpoint_utils.load_model_ensemble([str(path)], task=task)
    return models[0]


def _rewrite(src, dst, edit):
    state = torch.load(src, weights_only=True)
    edit(state)
    torch.save(state, dst)
    return str(dst)


@pytest.fixture
def toy_ckpt(toy_ctc_checkpoint):
    return os.path.join(toy_ctc_checkpoint[0], "checkpoint_last.pt")


def test_checkpoint_records_its_fingerprint(toy_ckpt):
    fp = torch.load(toy_ckpt, weights_only=True)["task_state"][KEY]
    assert fp["upsample_ratio"] == 2.0 and fp["ctc_blank_symbol"] == "<ctc_blank>"
    assert fp["source_dictionary"]["size"] == fp["target_dictionary"]["size"] == fp["blank_idx"] + 1
    assert re.fullmatch(r"[0-9a-f]{64}", fp["target_dictionary"]["sha256"])


def test_6d_generation_adopts_the_trained_ratio_and_refuses_another(toy_ckpt, toy_data_bin, tmp_path, caplog):
    """A model trained at --upsample-ratio 3, decoded without the flag, used to decode at the default 2 (BLEU
    62.2 -> 48.1, rc 0): now the recorded ratio is used; an explicit other ratio is an error naming both."""
    def ratio3(state):
        state["task_state"][KEY]["upsample_ratio"] = 3.0

    path = _rewrite(toy_ckpt, tmp_path / "r3.pt", ratio3)
    task = _task(toy_data_bin)
    assert task.upsample_ratio == 2.0
    model = _load(path, task)
    assert task.upsample_ratio == 3.0 and model.decoder.upsample_ratio == 3.0
    assert "using --upsample-ratio 3, recorded in" in caplog.text
    with pytest.raises(CheckpointMismatchError, match=r"r3\.pt was trained with --upsample-ratio 3, but this "
                                                      r"command passes --upsample-ratio 2\b.*Leave --upsample-ratio"):
        _load(path, _task(toy_data_bin, "--upsample-ratio", "2"))
    assert _load(path, _task(toy_data_bin, "--upsample-ratio", "3")).decoder.upsample_ratio == 3.0
    # checkpoints saved before fingerprints existed: the ratio comes from their cfg.task
    def legacy(state):
        del state["task_state"][KEY]
        state["cfg"]["task"]["upsample_ratio"] = 3.0

    old = _rewrite(toy_ckpt, tmp_path / "old.pt", legacy)
    assert _load(old, _task(toy_data_bin)).decoder.upsample_ratio == 3.0
    with pytest.raises(CheckpointMismatchError, match="--upsample-ratio 3"):
        _load(old, _task(toy_data_bin, "--upsample-ratio", "1.5"))


def _data_with_dict(toy_data_bin, dst, symbols_edit):
    shutil.copytree(toy_data_bin, dst)
    for lang in ("src", "tgt"):
        p = os.path.join(dst, f"dict.{lang}.txt")
        with open(p, encoding="utf-8") as f:
            lines = f.readlines()
        with open(p, "w", encoding="utf-8") as f:
            f.writelines(symbols_edit(lines))
    return str(dst)


def test_3c2_a_same_size_dictionary_with_other_symbols_is_refused(toy_ckpt, toy_data_bin, tmp_path):
    """Data binarized with a shuffled dictionary of the same size decoded with BLEU 0.0 and rc 0."""
    shuffled = _data_with_dict(toy_data_bin, tmp_path / "shuffled", lambda lines: lines[::-1])
    with pytest.raises(CheckpointMismatchError) as e:
        _load(toy_ckpt, _task(shuffled))
    msg = str(e.value)
    assert re.search(r"source dictionary of this command \(.*shuffled/dict\.src\.txt plus the CTC blank: (\d+) "
                     r"symbols, sha256 [0-9a-f]{12}\) is not the one .*checkpoint_last\.pt was trained with \(\1 "
                     r"symbols, sha256 [0-9a-f]{12}\)", msg), msg
    assert "fairseq-preprocess --srcdict" in msg


def test_3c_a_dictionary_of_another_size_is_refused_naming_both_sizes(toy_ckpt, toy_data_bin, tmp_path):
    """It used to end in a state_dict size-mismatch traceback."""
    smaller = _data_with_dict(toy_data_bin, tmp_path / "smaller", lambda lines: lines[:-4])
    with pytest.raises(CheckpointMismatchError, match=r"dict\.src\.txt plus the CTC blank: (\d+) symbols.*trained "
                                                      r"with \((?!\1)\d+ symbols"):
        _load(toy_ckpt, _task(smaller))


def test_a_different_blank_symbol_is_refused(toy_ckpt, toy_data_bin):
    with pytest.raises(CheckpointMismatchError, match=r"trained with --ctc-blank-symbol '<ctc_blank>', but this "
                                                      r"command uses '<unk>'.*pass --ctc-blank-symbol '<ctc_blank>'"):
        _load(toy_ckpt, _task(toy_data_bin, "--ctc-blank-symbol", "<unk>"))


def test_resuming_training_with_another_ratio_is_refused_before_training(toy_ctc_checkpoint, toy_data_bin, tmp_path):
    save_dir = tmp_path / "resume"
    shutil.copytree(toy_ctc_checkpoint[0], save_dir)
    proc = run_cli("fairseq_cli.train", ctc_train_args(toy_data_bin, str(save_dir), 500,
                                                       extra=["--upsample-ratio", "3"]), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"checkpoint_last\.pt was trained with --upsample-ratio 2, but this command uses "
                     r"--upsample-ratio 3: .*Pass --upsample-ratio 2 to resume it", out), out[-3000:]
    assert "Loaded checkpoint" not in out and "begin training epoch" not in out


# ------------------------------------------------------------------------- bad task / criterion / split inputs
def _train_task(data, *flags):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [data, "--user-dir", USER_DIR, "--task", "translation_lev_ctc",
                                                "--noise", "no_noise", "--arch", "nat_ctc_transformer_tiny",
                                                "--share-all-embeddings", *flags])
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    cfg = convert_namespace_to_omegaconf(args)
    return tasks.setup_task(cfg.task), cfg


def test_2m_ctc_model_with_nat_loss_criterion_is_a_clear_error(toy_data_bin):
    """nat_ctc_transformer + --criterion nat_loss aborted (kl_div on integers, rc 134)."""
    task, cfg = _train_task(toy_data_bin, "--criterion", "nat_loss")
    task.build_model(cfg.model)
    with pytest.raises(ValueError, match=r"--arch nat_ctc_transformer_tiny is trained with CTC: use --criterion ctc "
                                         r"\(got --criterion nat_loss"):
        task.build_criterion(cfg.criterion)
    task, cfg = _train_task(toy_data_bin, "--criterion", "ctc")
    task.build_model(cfg.model)
    assert type(task.build_criterion(cfg.criterion)).__name__ == "CTCCriterion"


def _fake_split(monkeypatch, dataset):
    def fake_parent_load(self, split, epoch=1, combine=False, **kwargs):
        self.datasets[split] = dataset

    monkeypatch.setattr("fairseq.tasks.translation_lev.TranslationLevenshteinTask.load_dataset", fake_parent_load)


def test_empty_validation_split_is_an_error(toy_data_bin, monkeypatch):
    from fairseq.data import LanguagePairDataset

    task, _ = _train_task(toy_data_bin, "--criterion", "ctc")
    _fake_split(monkeypatch, LanguagePairDataset([], [], task.src_dict, [], [], task.tgt_dict))
    for split in ("valid", "train"):
        with pytest.raises(ValueError, match=rf"\[{split}\] the split '{split}' in .* holds no sentence pairs.*"
                                             "--disable-validation"):
            task.load_dataset(split)


def test_2b_nothing_alignable_is_refused_even_with_max_unalignable_fraction_1(toy_data_bin, monkeypatch):
    """The error's own advice (--max-unalignable-fraction 1.0) used to end in an IndexError in batch_by_size."""
    from fairseq.data import LanguagePairDataset

    task, _ = _train_task(toy_data_bin, "--criterion", "ctc", "--max-unalignable-fraction", "1.0",
                          "--upsample-ratio", "0.5")
    d = task.tgt_dict
    row = torch.LongTensor([d.bos(), d.index("s1"), d.index("s2"), d.eos()])
    long = torch.LongTensor([d.bos()] + [d.index("t1")] * 3 + [d.index("t2")] * 3 + [d.eos()])
    _fake_split(monkeypatch, LanguagePairDataset([row] * 3, [4] * 3, d, [long] * 3, [8] * 3, d))
    with pytest.raises(ValueError, match=r"none of the 3 training pairs .* --upsample-ratio 0\.5 \(not even "
                                         r"--max-unalignable-fraction 1\.0.*raise --upsample-ratio"):
        task.load_dataset("train")
    task.load_dataset("valid")  # evaluation splits keep their pairs


def test_6f_evaluation_splits_keep_their_last_batch(toy_data_bin):
    """fairseq's batch_by_size drops a last batch that is not a multiple of --required-batch-size-multiple (default
    8): 100 test sentences came out as 'Translated 96 sentences'. Evaluation splits now keep every sentence."""
    from fairseq.tasks import FairseqTask

    from fairseq.data import LanguagePairDataset

    task = _task(toy_data_bin)
    task.load_dataset("test")
    full = task.dataset("test")
    src, tgt = [full.src[i] for i in range(100)], [full.tgt[i] for i in range(100)]  # 100 = 8 x 12 + 4, as probed
    dataset = LanguagePairDataset(src, [len(x) for x in src], task.src_dict, tgt, [len(x) for x in tgt],
                                  task.tgt_dict)
    kwargs = dict(max_sentences=64, required_batch_size_multiple=8, max_positions=(1024, 1024),
                  disable_iterator_cache=True)
    ids = [i for b in task.get_batch_iterator(dataset=dataset, **kwargs).next_epoch_itr(shuffle=False)
           for i in b["id"].tolist()]
    assert sorted(ids) == list(range(100))
    upstream = FairseqTask.get_batch_iterator(task, dataset=dataset, **kwargs).next_epoch_itr(shuffle=False)
    assert sum(len(b["id"]) for b in upstream) == 96  # 64 + 32; the last batch of 4 is dropped


# ------------------------------------------------------------------------------------- corpus preparation
def _prepare(data_dir, out_dir, *extra):
    """scripts/prepare_parallel.py in this process (its imports are already here); returns its error message."""
    with pytest.raises(SystemExit) as e:
        load_script("prepare_parallel").main(["--data-dir", str(data_dir), "--src", "en", "--tgt", "de", "--train",
                                              "train", "--valid", "valid", "--out-dir", str(out_dir), *extra])
    return str(e.value.code)


def _corpus(root, n=40, **overrides):
    root.mkdir(exist_ok=True)
    for split in ("train", "valid"):
        for lang in ("en", "de"):
            text = overrides.get(f"{split}.{lang}")
            if text is None:
                text = "".join(f"{lang} sentence number {i} of {split}\n" for i in range(n)).encode()
            (root / f"{split}.{lang}").write_bytes(text)
    return root


def test_1d_non_utf8_byte_names_file_and_line_and_leaves_no_folder(tmp_path):
    good = "".join(f"a line {i}\n" for i in range(20)).encode()
    bad = good.replace(b"a line 10\n", b"a line caf\xe9 10\n")
    data = _corpus(tmp_path / "d", **{"train.en": bad})
    out = tmp_path / "out"
    msg = _prepare(data, out)
    assert re.search(r"^ERROR: .*/d/train\.en:11: byte 0xe9 \(column 11\) is not UTF-8 .*iconv", msg), msg
    assert not out.exists()


def test_1e_1e3_1e4_empty_splits_are_errors(tmp_path):
    for name, files in (("1e", {"train.en": b"", "train.de": b""}),
                        ("1e4", {"train.en": b"\n" * 40}),
                        ("1e3", {"valid.en": b"", "valid.de": b""})):
        out = tmp_path / f"out{name}"
        msg = _prepare(_corpus(tmp_path / name, **files), out)
        split = "valid" if name == "1e3" else "train"
        assert msg.startswith(f"ERROR: split '{split}' has no sentence pairs"), (name, msg)
        assert ("every pair has an empty side" in msg) == (name == "1e4"), (name, msg)
        assert not out.exists()


def test_1f_vocabulary_too_large_for_the_corpus_says_how_large_it_may_be(tmp_path):
    data = _corpus(tmp_path / "d")
    out = tmp_path / "out"
    msg = _prepare(data, out, "--vocab-size", "8000")
    found = re.search(r"^ERROR: --vocab-size 8000 is larger than the training split .*allows \(40 pairs\): pass "
                      r"--vocab-size (\d+) or less \(with examples/multi30k/prepare.sh: VOCAB_SIZE=N\)", msg)
    assert found, msg
    assert not out.exists()
    load_script("prepare_parallel").main(["--data-dir", str(data), "--src", "en", "--tgt", "de", "--out-dir",
                                          str(out), "--vocab-size", found.group(1)])  # the size it names works
    assert (out / "spm.model").is_file() and (out / "train.de").is_file()
    # prepare.sh passes VOCAB_SIZE through (a value this corpus refuses proves it arrived)
    for lang in ("en", "de"):
        shutil.copyfile(data / f"valid.{lang}", data / f"test_2016_flickr.{lang}")
    proc = subprocess.run(["bash", os.path.join(ROOT, "examples", "multi30k", "prepare.sh"), str(data),
                           str(tmp_path / "work")], capture_output=True, text=True,
                          env=dict(os.environ, VOCAB_SIZE="12345", PATH=os.path.dirname(sys.executable) + os.pathsep
                                   + os.environ["PATH"]))
    assert proc.returncode != 0 and "--vocab-size 12345 is larger than" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------- pretrained checkpoints
def test_2h_vocabulary_size_error_suggests_the_blank_of_the_vocabulary_family():
    from types import SimpleNamespace

    from fairseq.data import Dictionary

    from fairseq_nar_plugins.modules.pretrained.pretrained_import import (
        ImportedCheckpoint, PretrainedCheckpointError, check_vocabulary)
    from fairseq_nar_plugins.modules.pretrained.pretrained_vocab import PretrainedDictionary

    bert = PretrainedDictionary(["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"], bos=3, pad=0,
                                eos=4, unk=2, mask=5, family="bert")
    roberta = PretrainedDictionary(["<s>", "<pad>", "</s>", "<unk>", "a", "b", "<mask>"], bos=0, pad=1, eos=2, unk=3,
                                   mask=6, family="roberta")
    task_dict = Dictionary()
    for sym in ("a", "b", "c", "d", "e"):
        task_dict.add_symbol(sym)
    for vocab, blank in ((bert, "[PAD]"), (roberta, "<unk>")):
        imported = ImportedCheckpoint(SimpleNamespace(embed_dim=8), {}, vocab)
        with pytest.raises(PretrainedCheckpointError, match=re.escape(f"--ctc-blank-symbol '{blank}' for this "
                                                                      f"{vocab.family} vocabulary")):
            check_vocabulary(task_dict, imported)


def test_2i_truncated_converted_backbone_names_the_file(tmp_path):
    from fairseq_nar_plugins.checkpoint_safety import CorruptCheckpointError
    from fairseq_nar_plugins.modules.pretrained.pretrained_import import CONVERTED_FORMAT, import_checkpoint

    folder = tmp_path / "pt"
    folder.mkdir()
    torch.save({"format": CONVERTED_FORMAT, "version": 1, "model": {"w": torch.zeros(64, 64)}}, folder / "backbone.pt")
    data = (folder / "backbone.pt").read_bytes()
    (folder / "backbone.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r"pt/backbone\.pt: the file is truncated or damaged"):
        import_checkpoint(str(folder))


def test_2j_plugin_training_checkpoint_as_pretrained_encoder_says_what_it_is(toy_ckpt):
    from fairseq_nar_plugins.modules.pretrained.pretrained_import import PretrainedCheckpointError, import_checkpoint

    with pytest.raises(PretrainedCheckpointError, match=r"checkpoint_last\.pt is a training checkpoint of this "
                                                        r"plugin \(arch nat_ctc_transformer_tiny, task "
                                                        r"translation_lev_ctc\), not a pretrained encoder.*"
                                                        r"--finetune-from-model"):
        import_checkpoint(toy_ckpt)


def test_5a3_distill_with_a_ctc_teacher_names_a_real_flag(toy_ckpt, toy_data_bin, tmp_path):
    distill = load_script("distill")
    with pytest.raises(SystemExit) as e:
        distill.main(["--data-bin", toy_data_bin, "--out-bin", str(tmp_path / "out"), "--teacher", toy_ckpt, "--cpu"])
    msg = str(e.value.code)
    assert "was trained with --task translation_lev_ctc" in msg
    assert '--generate-args "--task translation_lev_ctc --iter-decode-max-iter 0"' in msg
    assert "--generate-args" in distill.get_parser().format_help()  # the flag it names exists
    assert not (tmp_path / "out").exists()
