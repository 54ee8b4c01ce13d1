"""One rank of the distributed test: scripts/train_distributed_cpu.py, plus a dump of this rank's trainer state.

Usage (under torchrun): dist_train_rank.py DUMP_DIR fairseq-train-args...
Writes DUMP_DIR/rank{R}.pt with the initial and final parameters, the number of updates of this rank and which DDP
wrapper trained it (``ddp``: the class name inside fairseq's ModuleProxyWrapper; ``torch_ddp``: whether it is torch's
DistributedDataParallel).
"""
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import fairseq_cli.train  # noqa: E402
import train_distributed_cpu  # noqa: E402


def main():
    dump_dir, argv = sys.argv[1], sys.argv[2:]
    captured = {}
    base = fairseq_cli.train.Trainer

    class RecordingTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            captured["trainer"] = self
            captured["initial"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    fairseq_cli.train.Trainer = RecordingTrainer
    train_distributed_cpu.main(argv)
    trainer = captured["trainer"]
    wrapper = getattr(trainer.model, "module", trainer.model)
    torch.save({
        "ddp": type(wrapper).__name__,
        "torch_ddp": isinstance(wrapper, torch.nn.parallel.DistributedDataParallel),
        "rank": int(os.environ["RANK"]),
        "num_updates": trainer.get_num_updates(),
        "initial": captured["initial"],
        "final": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
    }, os.path.join(dump_dir, f"rank{os.environ['RANK']}.pt"))


if __name__ == "__main__":
    main()
