"""Warm start: initialise a model from another fairseq checkpoint of the same shapes (e.g. a NAR student from its
AR teacher).

A NAR student and its AR teacher of equal size share most tensors by name and shape: the encoder, the embeddings,
and every decoder layer's self-attention, cross-attention and FFN (the teacher's causal mask is not a parameter).
:func:`warm_start` copies each tensor whose name and shape match. Vocabulary tables whose first dimension differs
because the student's task appended symbols to the same dictionary (``translation_lev_ctc`` appends the CTC blank)
get the teacher's rows in their first rows, and keep their own initialisation in the rest. Every other tensor stays
as built. The counts, and the names of partial, skipped and missing tensors, are logged.
"""
import logging
from typing import Dict, List

import torch

logger = logging.getLogger(__name__)

# tables indexed by the vocabulary: rows may be added at the end by the student's task
_VOCAB_TABLES = ("embed_tokens.weight", "output_projection.weight")


def warm_start(model: torch.nn.Module, path: str, what: str = "--init-from-checkpoint") -> Dict[str, List[str]]:
    """Copy into ``model`` every tensor of the fairseq checkpoint ``path`` (its ``"model"`` state) that has the same
    name and shape; vocabulary tables (``*embed_tokens.weight``, ``*output_projection.weight``) with more rows in
    ``model`` get the checkpoint's rows first. Returns ``{"taken", "partial", "skipped", "new"}``: names of the tensors
    copied whole, copied into their first rows, present in the checkpoint but not taken (name unknown to the model or
    shape mismatch), and the model's tensors the checkpoint did not provide."""
    from fairseq import checkpoint_utils

    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path}: file not found") from None
    if "model" not in state:
        raise ValueError(f"{what} {path}: not a fairseq checkpoint (no 'model' state)")
    source = state["model"]
    own = model.state_dict()
    taken, partial, skipped = [], [], []
    with torch.no_grad():
        for name, value in source.items():
            target = own.get(name)
            if target is None:
                skipped.append(name)
            elif target.shape == value.shape:
                target.copy_(value)
                taken.append(name)
            elif (name.endswith(_VOCAB_TABLES) and target.dim() == value.dim()
                  and target.shape[1:] == value.shape[1:] and target.shape[0] > value.shape[0]):
                target[: value.shape[0]].copy_(value)
                partial.append(name)
            else:
                skipped.append(f"{name} {tuple(value.shape)} (model: {tuple(target.shape)})")
    new = [n for n in own if n not in source]
    if not taken and not partial:
        raise ValueError(f"{what} {path}: no tensor of the checkpoint matches this model by name and shape; is it a "
                         "checkpoint of a model of the same size?")
    logger.info(f"{what} {path}: {len(taken)} tensors taken, {len(partial)} vocabulary tables taken into their first "
                f"rows ({', '.join(partial) or 'none'}), {len(skipped)} not taken ({', '.join(skipped) or 'none'}), "
                f"{len(new)} of the model's tensors keep their initialisation ({', '.join(new) or 'none'})")
    return {"taken": taken, "partial": partial, "skipped": skipped, "new": new}
