"""Two CPU processes (torchrun + gloo) train with fairseq's distributed trainer and stay in sync: with fairseq's
default DDP backend (``pytorch_ddp``: torch's DistributedDataParallel, which fails on a parameter without gradient)
for BnB in both length modes and DEER with pruning, and with ``legacy_ddp``."""
import os
import socket

import pytest
import torch
from helpers_cli import USER_DIR, ctc_train_args, run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nar_args(data, save, updates, system):
    """fairseq-train flags (without --cpu: the wrapper adds it) of a tiny model of each system."""
    common = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.003", "--max-tokens", "512",
              "--max-update", str(updates), "--save-dir", save, "--no-epoch-checkpoints", "--num-workers", "0",
              "--data-buffer-size", "0", "--seed", "1", "--log-format", "simple", "--log-interval", "1",
              "--disable-validation", "--dropout", "0.0"]
    flags = {
        "bnb-ctc": ["--task", "translation_lev_ctc", "--noise", "full_mask", "--arch", "bnb_tiny", "--length-mode",
                    "ctc", "--criterion", "ctc"],
        "bnb-lc": ["--task", "translation_lev", "--noise", "full_mask", "--arch", "bnb_tiny", "--length-mode", "lc",
                   "--criterion", "nat_loss"],
        # sizes sampled at updates 1.. with seed 1: 0.5, 1.0, 1.0: an update at size 1.0 follows, where the scores
        # get gradient from the regulariser only (weight 0 here)
        "deer-prune-lambda-0": ["--task", "translation_lev_ctc", "--noise", "random_delete", "--arch", "deer_tiny",
                                "--criterion", "ctc", "--label-smoothing", "0.1", "--prune", "--prune-sizes",
                                "1.0 0.5", "--prune-lambda", "0"],
    }[system]
    return [data, "--user-dir", USER_DIR, *flags, *common]


CASES = {
    # fairseq's own all-reduce (no unused-parameter check)
    "nat_ctc-legacy_ddp": (20, ["--ddp-backend", "legacy_ddp"]),
    # fairseq's default backend: a parameter without gradient fails the second update
    "bnb-ctc": (4, []),
    "bnb-lc": (4, []),
    "deer-prune-lambda-0": (4, []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_update_and_end_with_identical_parameters(toy_data_bin, tmp_path, case):
    updates, extra = CASES[case]
    dump = tmp_path / "dump"
    dump.mkdir()
    save = str(tmp_path / "ckpt")
    if case.startswith("nat_ctc"):
        args = ctc_train_args(toy_data_bin, save, updates, extra=["--max-tokens", "512", *extra])
        args = [a for a in args if a != "--cpu"]  # the wrapper adds --cpu and the distributed flags
    else:
        args = _nar_args(toy_data_bin, save, updates, case) + extra
    proc = run_cli("torch.distributed.run", [
        "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", free_port(),
        os.path.join(HERE, "dist_train_rank.py"), str(dump), *args,
    ], env={"OMP_NUM_THREADS": "1"})
    log = proc.stdout + proc.stderr
    assert "distributed init (rank 1)" in log
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for r in ranks:
        assert r["num_updates"] == updates
        assert r["ddp"] == "LegacyDistributedDataParallel" if extra else r["torch_ddp"], r["ddp"]
        changed = [k for k in r["final"] if not torch.equal(r["final"][k], r["initial"][k])]
        assert len(changed) > len(r["final"]) // 2, "parameters did not move: no updates happened"
    for k in ranks[0]["final"]:
        assert torch.equal(ranks[0]["final"][k], ranks[1]["final"][k]), f"ranks differ at {k}"
    assert os.path.exists(tmp_path / "ckpt" / "checkpoint_last.pt")


def test_wrapper_defaults_to_pytorch_ddp_and_keeps_a_given_backend():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "train_distributed_cpu", os.path.join(os.path.dirname(HERE), "scripts", "train_distributed_cpu.py"))
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1234"}
    flags = wrapper.distributed_args(env)
    assert flags[flags.index("--ddp-backend") + 1] == "pytorch_ddp"
    assert flags[flags.index("--distributed-rank") + 1] == "1"
    assert "--ddp-backend" not in wrapper.distributed_args(env, argv=["--ddp-backend", "legacy_ddp"])
    assert wrapper.ddp_backend(["x", "--ddp-backend=c10d"]) == "c10d"
    with pytest.raises(SystemExit, match="RANK"):
        wrapper.distributed_args({})
