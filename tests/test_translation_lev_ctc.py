"""translation_lev_ctc: blank symbol, unalignable-pair detection and the skip-in-training / keep-in-eval policy."""
import dataclasses
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary, LanguagePairDataset

from fairseq_nar_plugins.tasks.translation_lev_bleu import TranslationLevBLEUTask
from fairseq_nar_plugins.tasks.translation_lev_ctc import TranslationLevCTCTask, unalignable_mask


def make_dict(words=("a", "b", "c")):
    d = Dictionary()
    for w in words:
        d.add_symbol(w)
    return d


def pair_dataset(d, pairs):
    """pairs of word lists -> LanguagePairDataset with <s> ... </s> on both sides (as translation_lev loads it)."""
    def enc(ws):
        return torch.LongTensor([d.bos()] + [d.index(w) for w in ws] + [d.eos()])
    src = [enc(s) for s, _ in pairs]
    tgt = [enc(t) for _, t in pairs]
    return LanguagePairDataset(src, [len(x) for x in src], d, tgt, [len(x) for x in tgt], d)


PAIRS = [
    (["a"], ["a", "b", "c"]),             # 3 src tokens -> 6 frames at ratio 2; needs 3: ok
    (["a"], ["a", "b", "c", "a", "b"]),   # needs 5 <= 6: ok
    (["a"], ["a", "a", "a", "a"]),        # needs 4 + 3 repeats = 7 > 6: unalignable (repeats)
    (["a"], ["a", "b", "c", "a", "b", "c", "a"]),  # needs 7 > 6: unalignable (length)
    (["a", "b"], ["a", "a", "a", "a"]),   # 8 frames, needs 7: ok
]


def test_unalignable_mask_matches_ctc_definition():
    d = make_dict()
    assert unalignable_mask(pair_dataset(d, PAIRS), 2.0).tolist() == [False, False, True, True, False]
    # a larger ratio makes everything alignable
    assert not unalignable_mask(pair_dataset(d, PAIRS), 3.0).any()


class _Cfg:
    """Just the config fields TranslationLevCTCTask reads, for an in-memory task."""
    def __init__(self, **kw):
        self.__dict__.update(dict(upsample_ratio=2.0, ctc_blank_symbol="<ctc_blank>", train_subset="train",
                                  noise="no_noise", max_unalignable_fraction=0.5, data="DATA"), **kw)


def make_task(**kw):
    d = make_dict()
    task = TranslationLevCTCTask.__new__(TranslationLevCTCTask)
    # run only our __init__ logic on top of a minimal FairseqTask state
    task.cfg, task.src_dict, task.tgt_dict, task.datasets = _Cfg(**kw), d, d, {}
    task.dataset_to_epoch_iter, task.state = {}, None
    from fairseq_nar_plugins.modules.ctc.ctc_utils import add_blank_symbol
    task.blank_idx = add_blank_symbol(d, task.cfg.ctc_blank_symbol)
    return task, d


def test_blank_symbol_is_added_once_and_reused():
    d = make_dict()
    from fairseq_nar_plugins.modules.ctc.ctc_utils import add_blank_symbol
    i = add_blank_symbol(d)
    assert d[i] == "<ctc_blank>" and add_blank_symbol(d) == i and len(d) == i + 1
    assert add_blank_symbol(d, "<unk>") == d.unk()


@pytest.mark.parametrize("split,expect_kept", [("train", [0, 1, 4]), ("valid", [0, 1, 2, 3, 4])])
def test_policy_skip_in_training_keep_in_evaluation(split, expect_kept, caplog, monkeypatch):
    task, d = make_task()
    ds = pair_dataset(d, PAIRS)

    def fake_parent_load(self, split, epoch=1, combine=False, **kwargs):
        self.datasets[split] = ds

    monkeypatch.setattr(
        "fairseq.tasks.translation_lev.TranslationLevenshteinTask.load_dataset", fake_parent_load
    )
    with caplog.at_level(logging.INFO):
        task.load_dataset(split)
    reports = [r.getMessage() for r in caplog.records if "cannot be CTC-aligned" in r.getMessage()]
    assert len(reports) == 1 and "2 of 5 pairs" in reports[0]
    assert ("skipped in training" in reports[0]) == (split == "train")
    kept = task.filter_indices_by_size(np.arange(5), ds, max_positions=None)
    assert kept.tolist() == expect_kept


def test_mostly_unalignable_training_data_is_refused_unless_allowed(monkeypatch):
    task, d = make_task()
    ds = pair_dataset(d, PAIRS[2:4] + PAIRS[:1])  # 2 of 3 unalignable

    def fake_parent_load(self, split, epoch=1, combine=False, **kwargs):
        self.datasets[split] = ds

    monkeypatch.setattr(
        "fairseq.tasks.translation_lev.TranslationLevenshteinTask.load_dataset", fake_parent_load
    )
    with pytest.raises(ValueError, match=r"2 of 3 training pairs \(67%\).*--max-unalignable-fraction"):
        task.load_dataset("train")
    task.load_dataset("valid")  # evaluation splits keep every pair and are never refused
    task.cfg.max_unalignable_fraction = 1.0
    task.load_dataset("train")
    assert task.filter_indices_by_size(np.arange(3), ds, max_positions=None).tolist() == [2]


def test_nonpositive_ratio_is_refused(tmp_path):
    d = make_dict()
    d.save(str(tmp_path / "dict.src.txt"))
    d.save(str(tmp_path / "dict.tgt.txt"))
    from fairseq import options, tasks
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(tmp_path), "--task", "translation_lev_ctc", "-s", "src", "-t",
                                                "tgt", "--upsample-ratio", "0", "--arch", "nat_ctc_transformer_tiny"])
    with pytest.raises(ValueError, match="--upsample-ratio must be positive"):
        tasks.setup_task(args)


def test_missing_data_directory_names_the_flag(tmp_path):
    from fairseq import options, tasks
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(tmp_path / "nope"), "--task", "translation_lev_ctc", "-s", "src",
                                                "-t", "tgt", "--arch", "nat_ctc_transformer_tiny"])
    with pytest.raises(FileNotFoundError, match="nope.*DATA argument"):
        tasks.setup_task(args)


@pytest.mark.parametrize("cls", [TranslationLevCTCTask, TranslationLevBLEUTask], ids=lambda c: c.__name__)
def test_train_step_tells_the_model_the_update_number(cls):
    """FairseqTask.train_step calls model.set_num_updates(update_num); fairseq's translation_lev drops the call, so
    our NAR tasks must make it (DEER's pruning sizes, glancing schedule and --editor-start-update depend on it)."""
    task = cls.__new__(cls)  # train_step needs only the noise setting
    task.cfg = SimpleNamespace(noise="no_noise", autocast_bf16=False)
    seen = []
    model = SimpleNamespace(train=lambda: None, set_num_updates=seen.append)
    weight = torch.ones(1, requires_grad=True)
    criterion = lambda model, sample: ((weight * 2).sum(), 1, {})  # noqa: E731
    optimizer = SimpleNamespace(backward=lambda loss: loss.backward())
    for n in (0, 7):
        task.train_step({"target": torch.ones(1, 3, dtype=torch.long)}, model, criterion, optimizer, n)
    assert seen == [0, 7] and weight.grad.item() == 4.0


@pytest.mark.parametrize("cls", [TranslationLevCTCTask, TranslationLevBLEUTask], ids=lambda c: c.__name__)
def test_autocast_bf16_flag_runs_the_training_forward_in_bf16(cls):
    """--autocast-bf16 is a flag of both NAR tasks (fairseq's own NAR models train under translation_lev_bleu): the
    model's forward in train_step runs in bfloat16 with it and in fp32 without it."""
    assert "autocast_bf16" in {f.name for f in dataclasses.fields(cls.__dataclass)}
    task = cls.__new__(cls)

    class Net(torch.nn.Linear):
        def set_num_updates(self, n):
            pass

    net, seen = Net(4, 3), []
    net.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    criterion = lambda model, sample: (model(torch.ones(2, 4)).float().sum(), 1, {})  # noqa: E731
    optimizer = SimpleNamespace(backward=lambda loss: loss.backward())
    for flag in (True, False):
        task.cfg = SimpleNamespace(noise="no_noise", autocast_bf16=flag)
        task.train_step({"target": torch.ones(1, 3, dtype=torch.long)}, net, criterion, optimizer, 0)
    assert seen == [torch.bfloat16, torch.float32]
