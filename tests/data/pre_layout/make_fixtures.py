"""Write the pre-layout checkpoint fixtures of tests/test_layout.py (run once, before the modules/ re-layout).

Trains (fairseq-train's main, in one process) a tiny DEER (deer_tiny with --prune), a tiny nat_ctc_transformer and a tiny BnB (bnb_tiny, length classifier)
for 40 updates each on the toy task (tests/toy_data.py) with fairseq-train, keeps each checkpoint without its
optimizer state (``<name>.pt``), the joined toy dictionary (``dict.src.txt``, ``dict.tgt.txt``), a few toy test
sentences (``test.src``, ``test.tgt``) and the hypotheses fairseq-generate printed for them (``hypotheses.json``):
the test decodes the same sentences with the same checkpoints after the move and must print the same hypotheses.

Usage: python tests/data/pre_layout/make_fixtures.py WORK_DIR   (WORK_DIR: scratch folder for the toy data and runs)
"""
import json
import os
import re
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, TESTS)

from helpers_cli import USER_DIR, ctc_train_args, preprocess_toy, run_cli  # noqa: E402
from toy_data import write_toy_corpus  # noqa: E402

N_TEST = 12
UPDATES = 40  # enough for the CTC models to emit tokens (after 5 they print empty hypotheses)
OPTIM = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "5", "--warmup-init-lr", "1e-07", "--max-tokens", "2048", "--dropout", "0.0",
         "--no-epoch-checkpoints", "--cpu", "--num-workers", "0", "--data-buffer-size", "0", "--seed", "1",
         "--disable-validation", "--max-update", str(UPDATES)]

# name -> (fairseq-train arguments after DATA and --user-dir, list of (label, fairseq-generate arguments))
SYSTEMS = {
    "deer": (["--task", "translation_lev_ctc", "--noise", "random_delete", "--arch", "deer_tiny", "--criterion", "ctc",
              "--label-smoothing", "0.1", "--glancing-ratio", "0.5", "--prune", "--prune-sizes", "1.0 0.5",
              "--prune-refresh-interval", "2", "--prune-lambda", "1", "--attention-dropout", "0.0",
              "--max-positions-table", "64", *OPTIM],
             [("step0", ["--task", "translation_lev_ctc", "--iter-decode-max-iter", "0"]),
              ("step2", ["--task", "translation_lev_ctc", "--iter-decode-max-iter", "2"]),
              ("size0.5", ["--task", "translation_lev_ctc", "--iter-decode-max-iter", "0",
                           "--model-overrides", "{'prune_size': 0.5}"])]),
    "nat_ctc": (None, [("step0", ["--task", "translation_lev_ctc", "--iter-decode-max-iter", "0"])]),
    "bnb": (["--task", "translation_lev", "--noise", "full_mask", "--arch", "bnb_tiny", "--length-mode", "lc",
             "--pred-length-offset", "--criterion", "nat_loss", "--encoder-layers", "1", "--decoder-layers", "1",
             "--max-positions-table", "64", *OPTIM],
            [("step0", ["--task", "translation_lev", "--iter-decode-max-iter", "0"])]),
}


def hypotheses(stdout):
    """fairseq-generate's H- lines as a list of ``[score, hypothesis]`` in sentence order (the score too: a model
    that has learnt little prints empty hypotheses, but their scores still depend on every weight)."""
    hyps = {int(m.group(1)): [float(m.group(2)), m.group(3)]
            for m in re.finditer(r"^H-(\d+)\t([^\t]*)\t(.*)$", stdout, re.M)}
    return [hyps[i] for i in sorted(hyps)]


def fairseq_train(argv):
    """fairseq-train's main, in this process (one interpreter for the whole script: the CPU is shared)."""
    from fairseq import distributed_utils, options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import train
    args = options.parse_args_and_arch(options.get_training_parser(), [str(a) for a in argv])
    distributed_utils.call_main(convert_namespace_to_omegaconf(args), train.main)


def fairseq_generate(argv):
    """fairseq-generate's main in this process; returns what it printed."""
    import contextlib
    import io

    from fairseq import options
    from fairseq_cli import generate
    args = options.parse_args_and_arch(options.get_generation_parser(), [str(a) for a in argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        generate.main(args)
    return out.getvalue()


def generate(data_bin, ckpt, args):
    return hypotheses(fairseq_generate([
        data_bin, "--user-dir", USER_DIR, "--path", ckpt, "--gen-subset", "test", "--batch-size", "100",
        "--required-batch-size-multiple", "1", "--cpu", *args]))


def loaded_weights(ckpt, data_bin):
    """``[number of tensors, sum of their finite values' magnitudes, number of non-finite values]`` of the model fairseq builds from ``ckpt``: what the
    hypotheses cannot show when a model that has learnt little prints empty ones (a tensor left at its random
    initialisation changes the sum)."""
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": data_bin})
    state = models[0].state_dict()
    values = [t.double() for t in state.values()]
    return [len(state), sum(float(t[t.isfinite()].abs().sum()) for t in values),
            sum(int((~t.isfinite()).sum()) for t in values)]


def main(work):
    from fairseq_nar_plugins import checkpoint_safety  # also allow-lists what fairseq checkpoints pickle

    torch.set_num_threads(1)
    data_bin = os.path.join(work, "bin")
    if not os.path.exists(os.path.join(data_bin, "dict.src.txt")):
        preprocess_toy(write_toy_corpus(os.path.join(work, "raw")), data_bin)
    for side in ("src", "tgt"):
        shutil.copy(os.path.join(data_bin, f"dict.{side}.txt"), HERE)
        with open(os.path.join(work, "raw", f"test.{side}")) as f, open(os.path.join(HERE, f"test.{side}"), "w") as g:
            g.writelines(f.readlines()[:N_TEST])
    # the fixture sentences binarized alone with the toy dictionary, as the test does
    small_bin = os.path.join(work, "small_bin")
    if not os.path.exists(os.path.join(small_bin, "test.src-tgt.src.idx")):
        run_cli("fairseq_cli.preprocess", [
            "--source-lang", "src", "--target-lang", "tgt", "--srcdict", os.path.join(HERE, "dict.src.txt"),
            "--tgtdict", os.path.join(HERE, "dict.tgt.txt"), "--testpref", os.path.join(HERE, "test"),
            "--destdir", small_bin, "--workers", "1"])
    recorded = {}
    for name, (train_args, decodes) in SYSTEMS.items():
        save = os.path.join(work, name)
        if train_args is None:
            args = ctc_train_args(data_bin, save, UPDATES, ["--warmup-updates", "5", "--disable-validation",
                                                       "--max-source-positions", "64", "--max-target-positions", "64",
                                                       "--encoder-layers", "1", "--decoder-layers", "1"])
        else:
            args = [data_bin, "--user-dir", USER_DIR, *train_args, "--save-dir", save]
        if not os.path.exists(os.path.join(save, "checkpoint_last.pt")):
            fairseq_train(args)
        state = checkpoint_safety.load_file(os.path.join(save, "checkpoint_last.pt"), map_location="cpu")
        state.pop("last_optimizer_state", None)  # not needed to decode; keeps the fixture small
        ckpt = os.path.join(HERE, f"{name}.pt")
        torch.save(state, ckpt)
        recorded[name] = {label: generate(small_bin, ckpt, gen_args) for label, gen_args in decodes}
        recorded[name]["_weights"] = loaded_weights(ckpt, small_bin)
        recorded[name]["_generate_args"] = {label: gen_args for label, gen_args in decodes}
        print(name, recorded[name], flush=True)
    with open(os.path.join(HERE, "hypotheses.json"), "w") as f:
        json.dump(recorded, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
