"""Two CPU processes (torchrun + gloo) train with fairseq's distributed trainer and stay in sync."""
import os
import socket

import torch
from helpers_cli import ctc_train_args, run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_update_and_end_with_identical_parameters(toy_data_bin, tmp_path):
    dump = tmp_path / "dump"
    dump.mkdir()
    args = ctc_train_args(toy_data_bin, str(tmp_path / "ckpt"), 20, extra=["--max-tokens", "512"])
    args = [a for a in args if a != "--cpu"]  # the wrapper adds --cpu and the distributed flags
    proc = run_cli("torch.distributed.run", [
        "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", free_port(),
        os.path.join(HERE, "dist_train_rank.py"), str(dump), *args,
    ], env={"OMP_NUM_THREADS": "1"})
    log = proc.stdout + proc.stderr
    assert "distributed init (rank 1)" in log
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for r in ranks:
        assert r["num_updates"] == 20
        changed = [k for k in r["final"] if not torch.equal(r["final"][k], r["initial"][k])]
        assert len(changed) > len(r["final"]) // 2, "parameters did not move: no updates happened"
    for k in ranks[0]["final"]:
        assert torch.equal(ranks[0]["final"][k], ranks[1]["final"][k]), f"ranks differ at {k}"
    assert os.path.exists(tmp_path / "ckpt" / "checkpoint_last.pt")
