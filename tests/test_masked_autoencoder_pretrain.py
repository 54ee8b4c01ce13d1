"""Task masked_autoencoder_pretrain on a small corpus binarized here (Multi30k English lines from ../shared/data):
flags, batch layout, what --loss-positions changes, reproducible noise per (seed, epoch, index), a dictionary whose
special symbols are not at 0..3, and fairseq-train resuming mid-run to exactly the same losses."""
import dataclasses
import os
import re
import subprocess
import sys

import pytest
import torch
from fairseq import options, tasks
from fairseq.data import Dictionary, indexed_dataset
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from helpers_cli import ROOT, USER_DIR, run_cli

from fairseq_nar_plugins.tasks.masked_autoencoder_pretrain import (
    MaskedAutoencoderPretrainConfig,
    MaskedAutoencoderPretrainTask,
    parse_corruptions,
)


def write_corpus(src, out_dir, n_train=500, n_valid=100, doc_len=10):
    """Lower-cased lines with punctuation split off, an empty line (document break) every ``doc_len`` lines."""
    os.makedirs(out_dir, exist_ok=True)
    with open(src, encoding="utf-8") as f:
        lines = [re.sub(r"([.,!?])", r" \1", next(f).strip()).lower() for _ in range(n_train + n_valid)]
    for name, part in (("train", lines[:n_train]), ("valid", lines[n_train:])):
        with open(os.path.join(out_dir, f"{name}.txt"), "w", encoding="utf-8") as out:
            for i, line in enumerate(part):
                out.write(line + "\n" + ("\n" if i % doc_len == doc_len - 1 else ""))
    return out_dir


@pytest.fixture(scope="module")
def corpus_bin(shared_data_dir, tmp_path_factory):
    from fairseq_cli.preprocess import main as preprocess

    root = tmp_path_factory.mktemp("mae")
    raw = write_corpus(os.path.join(shared_data_dir, "multi30k-en-de", "train.en"), str(root / "raw"))
    dest = str(root / "bin")
    preprocess(options.get_preprocessing_parser().parse_args([
        "--only-source", "--trainpref", f"{raw}/train.txt", "--validpref", f"{raw}/valid.txt", "--destdir", dest,
        "--workers", "1"]))
    return dest


def make_task(data, *flags, task_cls=None):
    """Parse the flags as fairseq-train does and set the task up (``task_cls`` overrides the registered class)."""
    args = options.parse_args_and_arch(options.get_training_parser(), [
        data, "--task", "masked_autoencoder_pretrain", "--arch", "transformer", *flags])
    cfg = convert_namespace_to_omegaconf(args)
    return task_cls.setup_task(cfg.task) if task_cls else tasks.setup_task(cfg.task)


def batches(task, split="train", max_tokens=2048, epoch=1):
    task.load_dataset(split)
    itr = task.get_batch_iterator(task.dataset(split), max_tokens=max_tokens, max_positions=task.max_positions(),
                                  seed=1, epoch=epoch, disable_iterator_cache=True)
    return list(itr.next_epoch_itr(shuffle=False))


def test_every_flag_has_help_and_defaults_follow_the_papers(corpus_bin):
    for f in dataclasses.fields(MaskedAutoencoderPretrainConfig):
        if f.name != "seed" and not f.name.startswith("_"):
            assert len(f.metadata.get("help", "")) > 20, f.name
    task = make_task(corpus_bin)
    cfg = task.cfg
    assert (cfg.tokens_per_sample, cfg.corruptions, cfg.loss_positions) == (512, "span", "corrupted")
    assert (cfg.mask_prob, cfg.span_mask_prob, cfg.span_mean_length, cfg.permute_prob) == (0.15, 0.15, 3.0, 0.5)
    assert (cfg.infill_prob, cfg.infill_poisson_lambda, cfg.shuffle_prob) == (0.15, 3.0, 1.0)
    d = task.dictionary
    assert d[task.mask_idx] == "<mask>" and task.mask_idx == len(d) - 1  # added at the end
    assert task.protected_ids == sorted({d.bos(), d.eos(), d.pad(), task.mask_idx})
    assert d.unk() not in task.random_ids and task.mask_idx not in task.random_ids
    assert task.full_stop_ids == sorted({d.eos(), d.index(".")})


def test_bad_corruption_names_are_refused():
    assert parse_corruptions("shuffle, infill") == ["shuffle", "infill"]
    with pytest.raises(ValueError, match="unknown corruption.*bogus"):
        parse_corruptions("mask,bogus")
    with pytest.raises(ValueError, match="twice"):
        parse_corruptions("mask,mask")
    with pytest.raises(ValueError, match="at least one"):
        parse_corruptions("")


def check_batch_layout(task, b):
    d, pad = task.dictionary, task.dictionary.pad()
    full, target, corrupted = b["full_target"], b["target"], b["corrupted"]
    src, src_len = b["net_input"]["src_tokens"], b["net_input"]["src_lengths"]
    dec = b["net_input"]["prev_output_tokens"]
    assert full.shape == target.shape == corrupted.shape == dec.shape
    assert torch.equal(dec, b["prev_target"])
    lengths = b["target_lengths"]
    assert torch.equal(lengths, full.ne(pad).sum(1)) and int(lengths.max()) <= task.cfg.tokens_per_sample
    assert torch.equal(src_len, src.ne(pad).sum(1)) and bool((src_len <= lengths).all())
    for i in range(full.size(0)):
        n = int(lengths[i])
        assert full[i, 0] == d.bos() and full[i, n - 1] == d.eos()
        assert src[i, 0] == d.bos() and src[i, int(src_len[i]) - 1] == d.eos()
        assert dec[i, 0] == d.bos() and dec[i, n - 1] == d.eos() and bool((dec[i, 1: n - 1] == task.mask_idx).all())
    assert not corrupted[full.eq(pad)].any()
    assert b["ntokens"] == int(target.ne(pad).sum())


@pytest.mark.parametrize("loss_positions", ["corrupted", "all"])
def test_batches_hold_corrupted_source_and_original_target(corpus_bin, loss_positions):
    task = make_task(corpus_bin, "--tokens-per-sample", "64", "--loss-positions", loss_positions)
    bs = batches(task)
    pad = task.dictionary.pad()
    n_blocks = n_corrupted = n_real = 0
    for b in bs:
        check_batch_layout(task, b)
        full, target, corrupted = b["full_target"], b["target"], b["corrupted"]
        if loss_positions == "corrupted":
            assert torch.equal(target.ne(pad), corrupted)  # the loss covers exactly the corrupted positions
            assert torch.equal(target[corrupted], full[corrupted])
        else:
            assert torch.equal(target, full)  # every token of the block
        src = b["net_input"]["src_tokens"]
        assert src.shape == full.shape and torch.equal(src[~corrupted], full[~corrupted])  # span: in place
        assert bool((src[corrupted] == task.mask_idx).all())
        n_blocks += full.size(0)
        n_corrupted += int(corrupted.sum())
        n_real += int(full.ne(pad).sum()) - 2 * full.size(0)
    assert n_blocks == len(task.dataset("train"))
    ds = task.dataset("train")
    kept = task.filter_indices_by_size(ds.ordered_indices(), ds, (40, 50), ignore_invalid_inputs=True)
    sizes = ds.sizes[0]
    assert sorted(kept.tolist()) == [i for i in range(len(ds)) if sizes[i] <= 40]
    assert n_corrupted / n_real == pytest.approx(0.15, abs=0.01)  # MLAE's default: 15 % in spans


def test_loss_positions_flag_changes_only_the_target(corpus_bin):
    flags = ("--tokens-per-sample", "64", "--corruptions", "mask")
    task = make_task(corpus_bin, *flags, "--loss-positions", "corrupted")
    masked = batches(task, "valid")
    every = batches(make_task(corpus_bin, *flags, "--loss-positions", "all"), "valid")
    pad = task.dictionary.pad()
    for a, b in zip(masked, every):
        assert torch.equal(a["net_input"]["src_tokens"], b["net_input"]["src_tokens"])
        assert torch.equal(a["full_target"], b["full_target"]) and torch.equal(a["corrupted"], b["corrupted"])
        assert torch.equal(a["target"].ne(pad), a["corrupted"])
        assert torch.equal(b["target"].ne(pad), b["full_target"].ne(pad))
        assert a["ntokens"] < b["ntokens"]


def test_shuffle_infill_chain_from_flags(corpus_bin):
    task = make_task(corpus_bin, "--tokens-per-sample", "128", "--corruptions", "shuffle,infill",
                     "--infill-prob", "0.3", "--loss-positions", "all")
    d = task.dictionary
    shorter = moved = 0
    for b in batches(task, "valid"):
        check_batch_layout(task, b)
        src, full = b["net_input"]["src_tokens"], b["full_target"]
        for i in range(full.size(0)):
            s, t = src[i][src[i].ne(d.pad())], full[i][full[i].ne(d.pad())]
            shorter += int(s.numel() < t.numel())
            content = s[s.ne(task.mask_idx)]
            # every source token that is not a mask comes from the block; sentences (ending in '.' or </s>) moved
            assert bool(torch.isin(content, t).all())
            moved += int(not torch.equal(s[:3], t[:3]))
    assert shorter > 0 and moved > 0


def test_noise_depends_only_on_seed_epoch_and_index(corpus_bin):
    flags = ("--tokens-per-sample", "64", "--corruptions", "permute,mask", "--seed", "5")
    a, b = make_task(corpus_bin, *flags), make_task(corpus_bin, *flags)
    for t in (a, b):
        t.load_dataset("valid")
    da, db = a.dataset("valid"), b.dataset("valid")
    n = len(da)
    forward = [da[i]["net_input.src_tokens"] for i in range(n)]
    backward = [db[i]["net_input.src_tokens"] for i in reversed(range(n))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(forward, backward))  # same items, whatever the access order
    db.set_epoch(2)
    epoch2 = [db[i]["net_input.src_tokens"] for i in range(n)]
    assert sum(not torch.equal(x, y) for x, y in zip(forward, epoch2)) > n // 2  # new noise each epoch
    da.set_epoch(2)
    assert all(torch.equal(da[i]["net_input.src_tokens"], epoch2[i]) for i in range(n))
    other = make_task(corpus_bin, "--tokens-per-sample", "64", "--corruptions", "permute,mask", "--seed", "6")
    other.load_dataset("valid")
    assert sum(not torch.equal(other.dataset("valid")[i]["net_input.src_tokens"], forward[i])
               for i in range(n)) > n // 2


BERT_SPECIALS = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def bert_like_dictionary(words):
    """A Dictionary laid out like a BERT vocabulary: [PAD]=0, [UNK]=3, [CLS]=4, [SEP]=5, [MASK]=6, then words."""
    d = Dictionary(bos="[CLS]", pad="[PAD]", eos="[SEP]", unk="[UNK]")
    d.symbols = BERT_SPECIALS + sorted(words)
    d.count = [1] * len(d.symbols)
    d.indices = {s: i for i, s in enumerate(d.symbols)}
    d.bos_index, d.pad_index, d.eos_index, d.unk_index = 4, 0, 5, 3
    return d


def test_dictionary_with_specials_elsewhere_and_bert_mask(corpus_bin, tmp_path):
    raw = os.path.join(os.path.dirname(corpus_bin), "raw")
    lines = open(os.path.join(raw, "valid.txt"), encoding="utf-8").read().splitlines()
    d = bert_like_dictionary({w for line in lines for w in line.split()})
    data = tmp_path / "bert-bin"
    data.mkdir()
    d.save(str(data / "dict.txt"))  # a plain dict.txt could not express this layout: load_dictionary is swapped
    builder = indexed_dataset.make_builder(str(data / "train.bin"), impl="mmap", vocab_size=len(d))
    for line in lines:
        builder.add_item(d.encode_line(line, add_if_not_exist=False))
    builder.finalize(str(data / "train.idx"))

    class BertVocabTask(MaskedAutoencoderPretrainTask):
        @classmethod
        def load_dictionary(cls, filename):
            return d

    size = len(d)
    task = make_task(str(data), "--tokens-per-sample", "48", "--corruptions", "infill,mask", "--mask-symbol",
                     "[MASK]", "--loss-positions", "corrupted", task_cls=BertVocabTask)
    assert task.dictionary is d and task.mask_idx == 6 and len(d) == size  # looked up by name, nothing added
    assert task.protected_ids == [0, 4, 5, 6]
    assert not set(task.random_ids) & {0, 3, 4, 5, 6}
    n_masks = 0
    for b in batches(task):
        check_batch_layout(task, b)
        src, full = b["net_input"]["src_tokens"], b["full_target"]
        assert bool((src[:, 0] == 4).all()) and bool((full[:, 0] == 4).all())  # [CLS]
        assert bool((src.eq(0) == (torch.arange(src.size(1))[None] >= b["net_input"]["src_lengths"][:, None])).all())
        n_masks += int(src.eq(6).sum())
        # special ids of the block are never corrupted, removed or drawn as random replacements ([UNK] neither)
        assert not b["corrupted"][torch.isin(full, torch.tensor([0, 4, 5]))].any()
        assert torch.equal(src.eq(5).sum(1), full.eq(5).sum(1)) and torch.equal(src.eq(4).sum(1), full.eq(4).sum(1))
        assert not src.eq(3).any() and not full.eq(3).any()
    assert n_masks > 0


def test_fairseq_train_resumes_to_the_same_losses(corpus_bin, tmp_path):
    """fairseq-train with this task (a small fairseq transformer stands in for the NAR model): 14 updates straight,
    and 8 more resumed from the checkpoint saved mid-epoch at update 6, give identical losses, across the epoch
    boundary (each block's noise depends only on (seed, epoch, index))."""
    common = [
        corpus_bin, "--user-dir", USER_DIR, "--task", "masked_autoencoder_pretrain", "--tokens-per-sample", "64",
        "--corruptions", "shuffle,infill,mask", "--arch", "transformer", "--encoder-layers", "1",
        "--decoder-layers", "1", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
        "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--share-all-embeddings", "--criterion", "cross_entropy",
        "--optimizer", "adam", "--lr", "0.001", "--max-tokens", "1024", "--max-update", "14",
        "--no-epoch-checkpoints", "--save-interval-updates", "6", "--keep-interval-updates", "5",
        "--disable-validation", "--cpu", "--num-workers", "0", "--log-format", "simple", "--log-interval", "1",
        # no background prefetch thread: fairseq's BufferedIterator runs a daemon thread that, when training stops
        # while it is inside a torch op, is killed by Python 3.11's finalisation -> "terminate called without an
        # active exception", exit 134, after everything is saved (seen in ~1 of 5 runs of this tiny config)
        "--data-buffer-size", "0",
    ]
    straight = run_cli("fairseq_cli.train", common + ["--save-dir", str(tmp_path / "a")], env={"OMP_NUM_THREADS": "1"})
    resumed = run_cli("fairseq_cli.train", common + [
        "--save-dir", str(tmp_path / "b"), "--restore-file", str(tmp_path / "a" / "checkpoint_1_6.pt")],
        env={"OMP_NUM_THREADS": "1"})

    def losses(proc):
        log = proc.stdout + proc.stderr
        return {int(u): loss for loss, u in re.findall(r"train_inner \| .*?loss=([\d.]+).*?num_updates=(\d+)", log)}

    a, b = losses(straight), losses(resumed)
    assert sorted(a) == list(range(1, 15)) and sorted(b) == list(range(7, 15))
    assert "epoch 002" in straight.stdout + straight.stderr  # the run crossed an epoch boundary
    assert all(a[u] == b[u] for u in range(7, 15)), (a, b)


def test_pretraining_recipe_prepare_only_binarizes_without_training(shared_data_dir, tmp_path):
    """examples/pretraining/run.sh with PREPARE_ONLY=1 (used by examples/mlae/demo.sh to binarize a fine-tuning set
    with the pretraining's dictionary before the pretraining runs) stops after the data steps: sentencepiece and the
    binarized splits exist, no fairseq-train ran; run again without it, it reuses them (nothing rebuilt)."""
    write_corpus(os.path.join(shared_data_dir, "multi30k-en-de", "train.en"), str(tmp_path / "raw"), 300, 40)
    env = dict(os.environ, PREPARE_ONLY="1", VOCAB_SIZE="300", PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    work = tmp_path / "work"
    proc = subprocess.run(["bash", os.path.join(ROOT, "examples", "pretraining", "run.sh"), str(tmp_path / "raw"),
                           str(work), "1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PREPARE_ONLY=1" in proc.stdout and "fairseq-train" not in proc.stdout
    for path in ("text/spm.model", "bin/dict.txt", "bin/train.bin", "bin/valid.bin"):
        assert (work / path).stat().st_size > 0, path
    assert not (work / "ckpt").exists()
    dictionary = Dictionary.load(str(work / "bin" / "dict.txt"))
    assert 100 < len(dictionary) <= 300 + 4
    stamp = (work / "bin" / "train.bin").stat().st_mtime_ns
    proc = subprocess.run(["bash", os.path.join(ROOT, "examples", "pretraining", "run.sh"), str(tmp_path / "raw"),
                           str(work), "1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "reusing" in proc.stdout, proc.stdout + proc.stderr
    assert (work / "bin" / "train.bin").stat().st_mtime_ns == stamp


def test_pretraining_recipe_sample_break_mode_eos_makes_one_block_a_line(shared_data_dir, tmp_path):
    """SAMPLE_BREAK_MODE=eos (examples/mlae/demo.sh: Multi30k's captions) reaches fairseq-train: the task builds one
    block for every line of the training text (document breaks, empty lines, included), where the default 'none'
    packs them into full blocks; an unknown mode stops before anything runs, naming the variable and the choices."""
    raw = write_corpus(os.path.join(shared_data_dir, "multi30k-en-de", "train.en"), str(tmp_path / "raw"), 300, 40)
    env = dict(os.environ, VOCAB_SIZE="300", PYTHON=sys.executable, OMP_NUM_THREADS="1", ARCH="mlae_tiny",
               TOKENS_PER_SAMPLE="64", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    script = os.path.join(ROOT, "examples", "pretraining", "run.sh")
    bad = subprocess.run(["bash", script, raw, str(tmp_path / "bad"), "1"], capture_output=True, text=True,
                         env=dict(env, SAMPLE_BREAK_MODE="lines"), timeout=60)
    assert bad.returncode == 1 and "SAMPLE_BREAK_MODE must be none, complete, complete_doc or eos" in bad.stderr
    assert not (tmp_path / "bad").exists()
    blocks = {}
    for mode in ("eos", "none"):
        work = tmp_path / mode
        proc = subprocess.run(["bash", script, raw, str(work), "1", "--max-update", "1"], capture_output=True,
                              text=True, env=dict(env, SAMPLE_BREAK_MODE=mode), timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        blocks[mode] = int(re.search(r"\[train\] ([\d,]+) blocks", proc.stdout).group(1).replace(",", ""))
    with open(tmp_path / "eos" / "text" / "train.raw", encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert blocks["eos"] == lines == 300 + 30
    assert blocks["none"] < lines / 2  # 64-token blocks across line ends
