#!/usr/bin/env python
"""Save a model *as built, before any update* as a regular fairseq checkpoint.

Give it exactly the flags you would give ``fairseq-train`` (data directory, ``--user-dir``, ``--task``, ``--arch``,
``--criterion``, ``--optimizer``, ``--lr`` ..., e.g. ``--pretrained-encoder PATH`` to initialise a model from a
BERT-family checkpoint) plus ``--output FILE``. It does what ``fairseq-train`` does before its first update (seeds
from ``--seed``, ``tasks.setup_task``, ``task.build_model``, ``task.build_criterion``, ``Trainer``) and writes the
trainer's state with ``Trainer.save_checkpoint``: model weights, the full config, an optimizer/lr-scheduler state at
update 0. No data is read beyond the dictionary, and no parameter changes.

The file then works wherever a fairseq checkpoint does:

* ``fairseq-validate DATA --path FILE --user-dir ...``: the validation loss of the model as imported (dropout off,
  the same batches and, for ``masked_autoencoder_pretrain``, the same noise as fairseq-train's validation);
* ``fairseq-train ... --restore-file FILE --reset-optimizer --reset-dataloader --reset-meters``: training that starts
  from exactly these weights (parameters that have no pretrained counterpart, such as BnB's cross-attention, keep the
  random values measured above instead of being redrawn);
* ``fairseq-generate --path FILE``.

``--warm-start-from TEACHER.pt`` then copies into the model every tensor of that fairseq checkpoint with the same
name and shape (vocabulary tables into their first rows; the log lists what was taken and what keeps its
initialisation), as our models' ``--init-from-checkpoint`` does. It serves models that have no such flag, fairseq's
own ``cmlm_transformer`` and ``nonautoregressive_transformer`` from an AR ``transformer`` teacher of the same size;
train from the file with ``fairseq-train ... --finetune-from-model FILE`` (used at the first launch only, so an
interrupted run resumes from its own ``checkpoint_last.pt``).

Example (the model of examples/pretraining/continue_pretraining_minilm.sh)::

    python scripts/save_initial_checkpoint.py work/cp/bin --output work/cp/checkpoint_imported.pt \\
        --user-dir fairseq_nar_plugins --task masked_autoencoder_pretrain --corruptions mask --mask-symbol '[MASK]' \\
        --arch bnb_small --pretrained-encoder work/cp/pretrained --criterion nat_loss --optimizer adam --lr 1e-4 \\
        --max-tokens 2048 --cpu --seed 1
"""
import argparse
import logging
import os
import sys

import numpy as np


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--output", required=False)
    pre.add_argument("--warm-start-from", default=None)
    known, rest = pre.parse_known_args(argv)
    if not known.output or "-h" in rest or "--help" in rest:
        print(__doc__)
        sys.exit(0 if ("-h" in rest or "--help" in rest) else "ERROR: --output FILE is required")

    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    args = options.parse_args_and_arch(options.get_training_parser(), rest)
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    # as fairseq_cli.train.main: seeds first, then task, model (random parts drawn here), criterion, trainer
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    if known.warm_start_from:
        from fairseq_nar_plugins.modules.pretrained.warm_start import warm_start

        warm_start(model, known.warm_start_from, what="--warm-start-from")
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    os.makedirs(os.path.dirname(os.path.abspath(known.output)) or ".", exist_ok=True)
    # the iterator state of a run that has not started (epoch 1, nothing consumed), so that even a restore without
    # --reset-dataloader starts at the beginning of the data
    # and no training time (fairseq's --stop-time-hours counts the time a restored checkpoint holds)
    extra_state = {"train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 0, "shuffle": True},
                   "val_loss": None, "previous_training_time": 0.0}
    trainer.consolidate_optimizer()  # as fairseq's checkpoint_utils.save_checkpoint does before saving
    path = trainer.save_checkpoint(known.output, extra_state)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"| saved {type(model).__name__} ({n_params:,} parameters, 0 updates) to {path}")


if __name__ == "__main__":
    main()
