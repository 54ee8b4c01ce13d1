#!/usr/bin/env python
"""Run ``fairseq-train`` as one rank of a CPU-only distributed job started by ``torchrun``.

fairseq reads torchrun's environment only on GPU machines (it divides by the GPU count). On CPUs it trains with
several processes only with gloo and an explicit rank, which this wrapper adds from torchrun's ``RANK`` /
``WORLD_SIZE`` (see ../shared/docs/NOTES.md section 1)::

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 scripts/train_distributed_cpu.py DATA --user-dir ... [fairseq-train args]

DDP backend: ``--ddp-backend`` as given, else fairseq's default ``pytorch_ddp`` (``c10d``, torch's
``DistributedDataParallel``, the backend GPU users get). fairseq builds it with ``device_ids=[device_id]``, which
torch refuses for a module on the CPU ("device_ids and output_device arguments only work with single-device/
multiple-device GPU modules or CPU modules"); torch's DDP itself runs on CPU modules over gloo when ``device_ids`` is
None, so this wrapper passes None for CPU modules. That keeps the default backend's checks on CPU, among them the
one that matters to model code: with ``find_unused_parameters=False`` (fairseq's default) a parameter that gets no
gradient in an update fails the next one ("Expected to have finished reduction in the prior iteration").
``--ddp-backend legacy_ddp`` (fairseq's own all-reduce of every gradient) does not have that check.

On GPUs no wrapper is needed: ``torchrun --nproc_per_node 8 $(which fairseq-train) DATA ...`` (see README).
"""
import os
import sys


def distributed_args(environ=os.environ, argv=()):
    """The fairseq-train flags for this rank, from torchrun's environment variables (``--ddp-backend
    pytorch_ddp`` unless ``argv`` sets one)."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in environ]
    if missing:
        raise SystemExit(
            f"ERROR: {', '.join(missing)} not set: start this script with torchrun "
            "(e.g. torchrun --nproc_per_node 2 scripts/train_distributed_cpu.py DATA ...)"
        )
    backend = [] if ddp_backend(argv) else ["--ddp-backend", "pytorch_ddp"]
    return [
        "--cpu", "--distributed-backend", "gloo", *backend, "--distributed-no-spawn",
        "--distributed-init-method", "env://",
        "--distributed-world-size", environ["WORLD_SIZE"], "--distributed-rank", environ["RANK"],
    ]


def ddp_backend(argv):
    """The value of ``--ddp-backend`` in ``argv`` (either spelling), or None."""
    for i, arg in enumerate(argv):
        if arg == "--ddp-backend" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--ddp-backend="):
            return arg.split("=", 1)[1]
    return None


def allow_cpu_modules_in_pytorch_ddp():
    """Make fairseq's ``pytorch_ddp`` / ``c10d`` wrapper build torch's DDP with ``device_ids=None`` (and
    ``output_device=None``) for a module whose parameters are on the CPU, as torch requires; GPU modules are
    wrapped unchanged."""
    import torch
    from fairseq.models import distributed_fairseq_model

    base = torch.nn.parallel.DistributedDataParallel

    class CPUFriendlyDDP(base):
        def __init__(self, module, *args, **kwargs):
            if all(p.device.type == "cpu" for p in module.parameters()):
                kwargs["device_ids"] = None
                kwargs["output_device"] = None
            super().__init__(module, *args, **kwargs)

    distributed_fairseq_model.DistributedDataParallel = CPUFriendlyDDP


def main(argv=None):
    from fairseq_cli.train import cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if (ddp_backend(argv) or "pytorch_ddp") in ("pytorch_ddp", "c10d"):
        allow_cpu_modules_in_pytorch_ddp()
    sys.argv = [sys.argv[0]] + argv + distributed_args(argv=argv)
    cli_main()


if __name__ == "__main__":
    main()
