"""Warm start: initialise a model from another fairseq checkpoint of the same shapes (e.g. a NAR student from its
AR teacher).

A NAR student and its AR teacher of equal size share most tensors by name and shape: the encoder, the embeddings,
and every decoder layer's self-attention, cross-attention and FFN (the teacher's causal mask is not a parameter).
:func:`warm_start` copies each tensor whose name and shape match. Vocabulary tables whose first dimension differs
because the student's task appended symbols to the same dictionary (``translation_lev_ctc`` appends the CTC blank)
get the teacher's rows in their first rows, and keep their own initialisation in the rest. Every other tensor stays
as built. The counts, and the names of partial, skipped and missing tensors, are logged.

Models whose tensors are named differently (BnB and DEER keep fairseq transformer layers inside a BERT-family
backbone) pass ``rename``, a map from checkpoint names to their own: :func:`transformer_to_backbone` builds it for
a fairseq ``transformer`` teacher. A tensor under ``torch.nn.utils.parametrize`` (DEER's block pruning) is found under
its ``parametrizations.<name>.original`` name.
"""
import logging
import re
from typing import Callable, Dict, List, Optional, Set

import torch

logger = logging.getLogger(__name__)

# tables indexed by the vocabulary: rows may be added at the end by the student's task
_VOCAB_TABLES = ("embed_tokens.weight", "output_projection.weight", "lm_head.weight")


def transformer_to_backbone(encoder_prefixes: List[str], decoder_prefixes: Optional[List[str]],
                            encoder_embed: List[str], decoder_embed: List[str], output: List[str],
                            cross_attention: bool = True) -> Callable[[str, Set[str]], List[str]]:
    """``rename`` for :func:`warm_start` from a fairseq ``transformer`` checkpoint into a model built of fairseq
    transformer layers under other names.

    Args:
        encoder_prefixes: the model's name prefix of each teacher encoder layer, in order (e.g.
            ``["encoder.backbone.layers.0.", ...]``); teacher layers beyond the list are not taken.
        decoder_prefixes: the same for the teacher's decoder layers; None: one stack, the decoder's layers follow
            the encoder's in ``encoder_prefixes`` (teacher decoder layer ``j`` -> ``encoder_prefixes[E + j]`` for a
            teacher with ``E`` encoder layers).
        encoder_embed, decoder_embed: the model's names that take the teacher's ``encoder.embed_tokens.weight`` and
            ``decoder.embed_tokens.weight`` (a model with one table takes the encoder's: ``decoder_embed`` empty).
        output: the model's names that take ``decoder.output_projection.weight``.
        cross_attention: False when the model's layers in ``decoder_prefixes`` have no cross-attention (DEER's one
            stack): the teacher's ``encoder_attn*`` tensors are then not taken.

    Returns ``rename(name, checkpoint_names) -> list of the model's names`` (empty: not taken).
    """
    def rename(name: str, checkpoint_names: Set[str]) -> List[str]:
        m = re.match(r"(encoder|decoder)\.layers\.(\d+)\.(.*)", name)
        if m:
            side, i, rest = m.group(1), int(m.group(2)), m.group(3)
            prefixes = encoder_prefixes if side == "encoder" else decoder_prefixes
            if prefixes is None:  # one stack: after the teacher's encoder layers
                n_enc = len({k.split(".")[2] for k in checkpoint_names if k.startswith("encoder.layers.")})
                prefixes = encoder_prefixes[n_enc:]
            if i >= len(prefixes) or (side == "decoder" and not cross_attention and rest.startswith("encoder_attn")):
                return []
            return [prefixes[i] + rest]
        if name == "encoder.embed_tokens.weight":
            return list(encoder_embed)
        if name == "decoder.embed_tokens.weight":
            return list(decoder_embed)
        if name == "decoder.output_projection.weight":
            return list(output)
        return []

    return rename


def encoder_decoder_rename(encoder_layers: int, decoder_layers: int, output=()) -> Callable[[str, Set[str]], List[str]]:
    """``rename`` from a fairseq ``transformer`` into an encoder-decoder of two BERT-family backbones
    (``encoder.backbone`` / ``decoder.backbone``: BnB, ELMER): layer to layer, cross-attention included; the word
    embeddings of both sides; ``output``: the model's names that take the teacher's output layer."""
    return transformer_to_backbone(
        [f"encoder.backbone.layers.{i}." for i in range(encoder_layers)],
        [f"decoder.backbone.layers.{i}." for i in range(decoder_layers)],
        encoder_embed=["encoder.backbone.embeddings.embed_tokens.weight"],
        decoder_embed=["decoder.backbone.embeddings.embed_tokens.weight"], output=list(output))


def warm_start(model: torch.nn.Module, path: str, what: str = "--init-from-checkpoint",
               rename: Optional[Callable[[str, Set[str]], List[str]]] = None) -> Dict[str, List[str]]:
    """Copy into ``model`` every tensor of the fairseq checkpoint ``path`` (its ``"model"`` state) that has the same
    name (or, with ``rename``, the names ``rename(name, names of the checkpoint)`` gives) and shape; vocabulary tables
    (``*embed_tokens.weight``, ``*output_projection.weight``, ``*lm_head.weight``) with more rows in ``model`` get the
    checkpoint's rows first. Returns ``{"taken", "partial", "skipped", "new"}``: the model's names of the tensors
    copied whole, copied into their first rows, the checkpoint's names not taken (name unknown to the model or shape
    mismatch), and the model's tensors the checkpoint did not provide."""
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

    def resolve(name):  # the model's key for ``name``: as is, or the original of a parametrized tensor
        if name in own or "." not in name:
            return name
        module, leaf = name.rsplit(".", 1)
        return f"{module}.parametrizations.{leaf}.original"

    names = set(source)
    with torch.no_grad():
        for name, value in source.items():
            targets = [resolve(n) for n in (rename(name, names) if rename is not None else [name])]
            if not any(n in own for n in targets):
                skipped.append(name)
            for own_name in (n for n in targets if n in own):
                target = own[own_name]
                if target.shape == value.shape:
                    target.copy_(value)
                    taken.append(own_name)
                elif (own_name.endswith(_VOCAB_TABLES) and target.dim() == value.dim()
                      and target.shape[1:] == value.shape[1:] and target.shape[0] > value.shape[0]):
                    target[: value.shape[0]].copy_(value)
                    partial.append(own_name)
                else:
                    skipped.append(f"{name} {tuple(value.shape)} (model: {own_name} {tuple(target.shape)})")
    filled = set(taken) | set(partial)
    new = [n for n in own if n not in filled]
    if not taken and not partial:
        raise ValueError(f"{what} {path}: no tensor of the checkpoint matches this model by name and shape; is it a "
                         "checkpoint of a model of the same size?")
    logger.info(f"{what} {path}: {len(taken)} tensors taken, {len(partial)} vocabulary tables taken into their first "
                f"rows ({', '.join(partial) or 'none'}), {len(skipped)} not taken ({', '.join(skipped) or 'none'}), "
                f"{len(new)} of the model's tensors keep their initialisation ({', '.join(new) or 'none'})")
    return {"taken": taken, "partial": partial, "skipped": skipped, "new": new}


def add_init_from_checkpoint_arg(parser, taken: str) -> None:
    """``--init-from-checkpoint PATH``; ``taken`` says which of the model's tensors a teacher checkpoint fills."""
    parser.add_argument("--init-from-checkpoint", metavar="PATH", default=None,
                        help="before training, initialise the model from this fairseq checkpoint, e.g. the AR "
                        f"teacher (fairseq 'transformer' of the same width and dictionary): {taken}; the vocabulary "
                        "tables take the teacher's rows and keep their own row for the CTC blank. Logged; used once "
                        "(not stored for generation), and a resumed run loads its own checkpoint over it")


def refuse_with_pretrained(args) -> None:
    """``--init-from-checkpoint`` and ``--pretrained-encoder`` / ``--pretrained-decoder`` both initialise the model:
    refuse the pair, before any checkpoint is read."""
    given = [f"--{n.replace('_', '-')}" for n in ("pretrained_encoder", "pretrained_decoder") if getattr(args, n, None)]
    if getattr(args, "init_from_checkpoint", None) and given:
        raise ValueError(f"--init-from-checkpoint and {' and '.join(given)} both initialise the model: pass one of "
                         "them")


def init_from_checkpoint(model: torch.nn.Module, args,
                         rename: Optional[Callable[[str, Set[str]], List[str]]] = None) -> None:
    """Apply ``--init-from-checkpoint`` (if given) to a freshly built ``model`` and clear it from ``args``: a
    one-time initialisation, so generation and resumed runs never need the file."""
    path = getattr(args, "init_from_checkpoint", None)
    if path:
        warm_start(model, path, rename=rename)
        args.init_from_checkpoint = None
