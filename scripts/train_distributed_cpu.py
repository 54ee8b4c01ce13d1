#!/usr/bin/env python
"""Run ``fairseq-train`` as one rank of a CPU-only distributed job started by ``torchrun``.

fairseq reads torchrun's environment only on GPU machines (it divides by the GPU count). On CPUs it trains with
several processes only with gloo, the legacy DDP wrapper and an explicit rank, which this wrapper adds from torchrun's
``RANK`` / ``WORLD_SIZE`` (see ../shared/docs/NOTES.md section 1)::

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 scripts/train_distributed_cpu.py DATA --user-dir ... [fairseq-train args]

On GPUs no wrapper is needed: ``torchrun --nproc_per_node 8 $(which fairseq-train) DATA ...`` (see README).
"""
import os
import sys


def distributed_args(environ=os.environ):
    """The fairseq-train flags for this rank, from torchrun's environment variables."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in environ]
    if missing:
        raise SystemExit(
            f"ERROR: {', '.join(missing)} not set: start this script with torchrun "
            "(e.g. torchrun --nproc_per_node 2 scripts/train_distributed_cpu.py DATA ...)"
        )
    return [
        "--cpu", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp", "--distributed-no-spawn",
        "--distributed-init-method", "env://",
        "--distributed-world-size", environ["WORLD_SIZE"], "--distributed-rank", environ["RANK"],
    ]


def main(argv=None):
    from fairseq_cli.train import cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    sys.argv = [sys.argv[0]] + argv + distributed_args()
    cli_main()


if __name__ == "__main__":
    main()
