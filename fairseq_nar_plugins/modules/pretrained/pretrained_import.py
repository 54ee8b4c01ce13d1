"""Import BERT / RoBERTa / XLM-R checkpoints from local paths into a :class:`.backbone.bert_backbone.BertBackbone`.

Accepted paths (:func:`import_checkpoint`):

* a Hugging Face folder: ``config.json`` (``model_type`` ``bert`` -- bert-base-cased, mBERT, BioBERT, MiniLM --,
  ``roberta`` or ``xlm-roberta``) with ``model.safetensors`` (read with ``safetensors``) or ``pytorch_model.bin``
  (``torch.load(weights_only=True)``), and the tokenizer files the vocabulary is read from;
* a fairseq RoBERTa / XLM-R release: ``model.pt`` (read with fairseq's ``checkpoint_utils.load_checkpoint_to_cpu``,
  kept ``weights_only`` by :mod:`fairseq_nar_plugins.checkpoint_safety`) with ``dict.txt`` beside it (or passed as
  ``dict_path``), or the folder holding them;
* a converted checkpoint written by ``scripts/convert_pretrained.py`` (:func:`save_converted`): the ``backbone.pt``
  file or its folder.

Everything is checked before it is used: every tensor's shape against the architecture its config describes (and,
with :func:`load_imported_into`, against the backbone being initialised), and the vocabulary against the embedding
rows and the task's dictionary. Failures raise :class:`PretrainedCheckpointError` naming the tensor and both shapes,
or ``FileNotFoundError`` naming the missing path.
"""
import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from fairseq.data import Dictionary
from torch import Tensor

from ..backbone.bert_backbone import BertBackbone, BertBackboneConfig, parameter_shapes
from .pretrained_vocab import (
    PretrainedDictionary,
    fairseq_vocabulary_tokens,
    hf_special_tokens,
    hf_vocabulary_tokens,
    is_pretrained_dictionary_file,
)

logger = logging.getLogger(__name__)

CONVERTED_FORMAT = "fairseq-nar-plugins/bert-backbone"
CONVERTED_VERSION = 1
CONVERTED_FILE = "backbone.pt"
DICT_FILE = "dict.txt"
HF_FAMILIES = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "xlm-roberta"}
#: Hugging Face activation names -> fairseq's (HF "gelu" is the exact erf GELU, as fairseq's "gelu")
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_accurate", "gelu_pytorch_tanh": "gelu_accurate", "relu": "relu",
                  "tanh": "tanh"}


class PretrainedCheckpointError(ValueError):
    """A checkpoint that does not fit the architecture or vocabulary it is meant for."""


@dataclass
class ImportedCheckpoint:
    """A checkpoint read into the backbone's naming.

    Attributes:
        config: the architecture the checkpoint describes (``cross_attention`` off).
        state_dict: backbone parameters (``embeddings.*``, ``layers.N.*``), plain tensors.
        dictionary: the vocabulary bridge (row ``i`` of ``embeddings.embed_tokens.weight`` is ``dictionary[i]``).
        lm_head: the masked-LM head in :class:`.backbone.bert_backbone.BertLMHead` naming (``dense.*``, ``layer_norm.*``,
            ``bias``, and ``weight`` only if untied from the token embeddings), or None if the checkpoint has none.
        source: where it came from (``path``, ``format``: huggingface / fairseq / converted, ``model_type``).
    """

    config: BertBackboneConfig
    state_dict: Dict[str, Tensor]
    dictionary: PretrainedDictionary
    lm_head: Optional[Dict[str, Tensor]] = None
    source: Dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ dispatching
def import_checkpoint(path: str, dict_path: Optional[str] = None) -> ImportedCheckpoint:
    """Read any accepted checkpoint (see module docstring) into an :class:`ImportedCheckpoint`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"pretrained checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, CONVERTED_FILE)):
            return load_converted(os.path.join(path, CONVERTED_FILE))
        if os.path.isfile(os.path.join(path, "config.json")):
            return import_hf_checkpoint(path)
        if os.path.isfile(os.path.join(path, "model.pt")):
            return import_fairseq_checkpoint(os.path.join(path, "model.pt"), dict_path)
        raise FileNotFoundError(
            f"{path!r} holds no checkpoint: expected config.json + model.safetensors / pytorch_model.bin (Hugging "
            f"Face), model.pt + dict.txt (fairseq) or {CONVERTED_FILE} (scripts/convert_pretrained.py)"
        )
    state = _peek_converted(path)
    if state is not None:
        return _from_converted_state(state, path)
    return import_fairseq_checkpoint(path, dict_path)


def _peek_converted(path: str) -> Optional[Dict[str, Any]]:
    """The contents of ``path`` if it is a converted checkpoint, else None (fairseq checkpoints are left to
    fairseq's loader)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint, or one holding more than tensors: fairseq's loader handles it
        return None
    return state if isinstance(state, dict) and state.get("format") == CONVERTED_FORMAT else None


# ------------------------------------------------------------------------------------------------ Hugging Face
def import_hf_checkpoint(folder: str) -> ImportedCheckpoint:
    """A Hugging Face BERT / RoBERTa / XLM-R folder (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin`` + tokenizer files)."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"Hugging Face config {config_path!r} does not exist")
    with open(config_path, encoding="utf-8") as f:
        hf = json.load(f)
    model_type = hf.get("model_type")
    if model_type not in HF_FAMILIES:
        raise PretrainedCheckpointError(
            f"{config_path}: model_type {model_type!r} is not a BERT-family encoder this backbone reproduces "
            f"(supported: {sorted(HF_FAMILIES)})"
        )
    family = HF_FAMILIES[model_type]
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise PretrainedCheckpointError(f"{config_path}: position_embedding_type "
                                        f"{hf['position_embedding_type']!r} is not supported (only 'absolute')")
    activation = HF_ACTIVATIONS.get(hf.get("hidden_act", "gelu"))
    if activation is None:
        raise PretrainedCheckpointError(f"{config_path}: hidden_act {hf.get('hidden_act')!r} is not supported")
    raw = _read_hf_weights(folder)
    pad = int(hf.get("pad_token_id", 0 if family == "bert" else 1))
    cfg = BertBackboneConfig(
        vocab_size=int(hf["vocab_size"]),
        embed_dim=int(hf["hidden_size"]),
        ffn_embed_dim=int(hf["intermediate_size"]),
        layers=int(hf["num_hidden_layers"]),
        attention_heads=int(hf["num_attention_heads"]),
        num_positions=int(hf["max_position_embeddings"]),
        position_offset=0 if family == "bert" else pad + 1,
        type_vocab_size=int(hf.get("type_vocab_size", 2)),
        padding_idx=pad,
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        dropout=float(hf.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
        activation_dropout=0.0,
        activation_fn=activation,
        family=family,
    )
    state, lm_head = _map_hf_state(raw, cfg)
    tokens = hf_vocabulary_tokens(folder, family)
    dictionary = _dictionary_for_rows(tokens, hf_special_tokens(folder, family), family, cfg, folder)
    return ImportedCheckpoint(cfg, state, dictionary, lm_head,
                              dict(path=os.path.abspath(folder), format="huggingface", model_type=model_type))


def _read_hf_weights(folder: str) -> Dict[str, Tensor]:
    safetensors_path = os.path.join(folder, "model.safetensors")
    bin_path = os.path.join(folder, "pytorch_model.bin")
    if os.path.isfile(safetensors_path):
        from safetensors.torch import load_file

        return load_file(safetensors_path, device="cpu")
    if os.path.isfile(bin_path):
        return torch.load(bin_path, map_location="cpu", weights_only=True)
    if os.path.isfile(os.path.join(folder, "model.safetensors.index.json")) or \
            os.path.isfile(os.path.join(folder, "pytorch_model.bin.index.json")):
        raise PretrainedCheckpointError(f"{folder}: sharded checkpoints are not supported; re-save unsharded")
    raise FileNotFoundError(f"no weights in {folder!r}: expected {safetensors_path!r} or {bin_path!r}")


_HF_LAYER = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_attn_layer_norm",
    "crossattention.self.query": "encoder_attn.q_proj",
    "crossattention.self.key": "encoder_attn.k_proj",
    "crossattention.self.value": "encoder_attn.v_proj",
    "crossattention.output.dense": "encoder_attn.out_proj",
    "crossattention.output.LayerNorm": "encoder_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "output.LayerNorm": "final_layer_norm",
}
_HF_EMBEDDINGS = {
    "word_embeddings": "embeddings.embed_tokens",
    "position_embeddings": "embeddings.embed_positions",
    "token_type_embeddings": "embeddings.embed_token_types",
    "LayerNorm": "embeddings.layernorm_embedding",
}
_HF_LM_HEAD = {  # BertForMaskedLM / BertForPreTraining, RobertaForMaskedLM
    "cls.predictions.transform.dense": "dense",
    "cls.predictions.transform.LayerNorm": "layer_norm",
    "cls.predictions.decoder": "",
    "cls.predictions": "",
    "lm_head.dense": "dense",
    "lm_head.layer_norm": "layer_norm",
    "lm_head.decoder": "",
    "lm_head": "",
}
#: heads and buffers that are not part of the backbone (dropped with a log line)
_HF_IGNORED = re.compile(r"(^|\.)(pooler|classifier|qa_outputs|cls\.seq_relationship)\.|(position_ids|token_type_ids)$")


def _map_hf_state(raw: Dict[str, Tensor], cfg: BertBackboneConfig) -> Tuple[Dict[str, Tensor], Optional[dict]]:
    anchor = [k for k in raw if k.endswith("embeddings.word_embeddings.weight")]
    if len(anchor) != 1:
        raise PretrainedCheckpointError(
            f"cannot find the token embeddings (a tensor named '[prefix.]embeddings.word_embeddings.weight') among "
            f"the checkpoint's {len(raw)} tensors; found {anchor or 'none'}"
        )
    prefix = anchor[0][: -len("embeddings.word_embeddings.weight")]
    state, lm_head, ignored, unknown = {}, {}, [], []
    for key, value in raw.items():
        name = key.replace(".gamma", ".weight").replace(".beta", ".bias")  # pre-2019 BERT LayerNorm names
        if _HF_IGNORED.search(name):
            ignored.append(key)
            continue
        if name.startswith(prefix + "embeddings."):
            module, _, param = name[len(prefix + "embeddings."):].rpartition(".")
            if module in _HF_EMBEDDINGS:
                state[f"{_HF_EMBEDDINGS[module]}.{param}"] = (key, value)
                continue
        elif name.startswith(prefix + "encoder.layer."):
            m = re.match(r"(\d+)\.(.+)\.(weight|bias)$", name[len(prefix + "encoder.layer."):])
            if m and m.group(2) in _HF_LAYER:
                state[f"layers.{m.group(1)}.{_HF_LAYER[m.group(2)]}.{m.group(3)}"] = (key, value)
                continue
        else:
            module, _, param = name.rpartition(".")
            if module in _HF_LM_HEAD:
                target = _HF_LM_HEAD[module]
                lm_head[f"{target}.{param}" if target else param] = (key, value)
                continue
        unknown.append(key)
    if unknown:
        raise PretrainedCheckpointError(
            f"the checkpoint has tensors this BERT-family backbone has no place for: {unknown[:8]}"
            f"{' ...' if len(unknown) > 8 else ''} (is it really a {cfg.family} encoder?)"
        )
    if ignored:
        logger.info(f"not imported (not part of the backbone): {ignored}")
    checked = _checked_state(state, cfg)
    return checked, _lm_head_state(lm_head, checked, cfg)


def _lm_head_state(found: Dict[str, Tuple[str, Tensor]], state: Dict[str, Tensor], cfg: BertBackboneConfig):
    """The LM head in BertLMHead naming, or None; ``weight`` only if it is not the token embedding matrix."""
    if not found:
        return None
    head = {name: value for name, (_, value) in found.items()}
    needed = ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "bias")
    missing = [n for n in needed if n not in head]
    if missing:
        logger.warning(f"incomplete masked-LM head (missing {missing}): not imported")
        return None
    expected = {"dense.weight": (cfg.embed_dim, cfg.embed_dim), "dense.bias": (cfg.embed_dim,),
                "layer_norm.weight": (cfg.embed_dim,), "layer_norm.bias": (cfg.embed_dim,),
                "bias": (cfg.vocab_size,), "weight": (cfg.vocab_size, cfg.embed_dim)}
    for name, value in head.items():
        if name not in expected:
            raise PretrainedCheckpointError(f"unexpected masked-LM head tensor {found[name][0]}")
        if tuple(value.shape) != expected[name]:
            raise PretrainedCheckpointError(
                f"checkpoint tensor {found[name][0]} has shape {tuple(value.shape)} but the architecture needs "
                f"{expected[name]} for lm_head.{name}"
            )
    if "weight" in head and torch.equal(head["weight"], state["embeddings.embed_tokens.weight"]):
        del head["weight"]  # tied, as in BERT / RoBERTa
    return {k: v.detach().contiguous() for k, v in head.items()}


def _checked_state(found: Dict[str, Tuple[str, Tensor]], cfg: BertBackboneConfig) -> Dict[str, Tensor]:
    """Compare the checkpoint tensors (target name -> (checkpoint name, tensor)) with the encoder that ``cfg``
    describes: every parameter present, every shape equal."""
    expected = _expected_shapes(cfg)
    for target, (source, value) in found.items():
        if target not in expected and not (target.startswith("layers.") and ".encoder_attn" in target):
            raise PretrainedCheckpointError(
                f"checkpoint tensor {source} (as {target}) does not exist in a {cfg.layers}-layer backbone"
            )
    for target, shape in expected.items():  # in parameter order: the token embeddings first
        if target in found and tuple(found[target][1].shape) != shape:
            source, value = found[target]
            raise PretrainedCheckpointError(
                f"checkpoint tensor {source} has shape {tuple(value.shape)} but the architecture "
                f"({cfg.layers} layers, width {cfg.embed_dim}, FFN {cfg.ffn_embed_dim}, vocabulary "
                f"{cfg.vocab_size}, {cfg.num_positions} positions) needs {shape} for {target}"
            )
    missing = sorted(set(expected) - set(found))
    if missing:
        raise PretrainedCheckpointError(f"the checkpoint lacks {len(missing)} backbone tensors: {missing[:8]}")
    return {target: value.detach().contiguous() for target, (_, value) in found.items()}


def _expected_shapes(cfg: BertBackboneConfig) -> Dict[str, Tuple[int, ...]]:
    return parameter_shapes(dataclasses.replace(cfg, cross_attention=False))


def _dictionary_for_rows(tokens: List[Optional[str]], specials: Dict[str, Optional[str]], family: str,
                         cfg: BertBackboneConfig, where: str) -> PretrainedDictionary:
    """The bridge over exactly ``cfg.vocab_size`` rows: rows past the tokenizer's vocabulary (embedding tables
    padded by their authors) get placeholders; a tokenizer with more ids than rows is refused."""
    rows = cfg.vocab_size
    if len(tokens) > rows:
        extra = [t for t in tokens[rows:] if t is not None]
        raise PretrainedCheckpointError(
            f"the vocabulary of {where} has {len(tokens)} ids but the token embeddings "
            f"(embeddings.embed_tokens.weight) have shape {(rows, cfg.embed_dim)}: ids {rows}.. "
            f"({extra[:5]}) have no embedding row"
        )
    if len(tokens) < rows:
        logger.info(f"{rows - len(tokens)} embedding rows have no token in the vocabulary of {where}")
    dictionary = PretrainedDictionary.from_tokens(list(tokens) + [None] * (rows - len(tokens)), specials, family)
    if dictionary.pad() != cfg.padding_idx:
        raise PretrainedCheckpointError(
            f"the vocabulary's pad token {dictionary.pad_word!r} is row {dictionary.pad()} but the checkpoint's "
            f"config says pad_token_id {cfg.padding_idx}"
        )
    return dictionary


def read_checkpoint_dictionary(path: str, dict_path: Optional[str] = None) -> PretrainedDictionary:
    """The vocabulary bridge of a checkpoint without reading its weights (except for a converted ``backbone.pt``
    file): for a Hugging Face folder from ``config.json`` and the tokenizer files, for a fairseq release from its
    ``dict.txt`` (+ ``<mask>``), for a converted folder its ``dict.txt``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"pretrained checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        converted_dict = os.path.join(path, DICT_FILE)
        if os.path.isfile(os.path.join(path, CONVERTED_FILE)):
            return PretrainedDictionary.load(converted_dict)
        if os.path.isfile(os.path.join(path, "config.json")):
            with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
                hf = json.load(f)
            family = HF_FAMILIES.get(hf.get("model_type"))
            if family is None:
                raise PretrainedCheckpointError(f"{path}/config.json: model_type {hf.get('model_type')!r} is not "
                                                f"supported (supported: {sorted(HF_FAMILIES)})")
            cfg = BertBackboneConfig(vocab_size=int(hf["vocab_size"]), embed_dim=int(hf.get("hidden_size", 0)),
                                     padding_idx=int(hf.get("pad_token_id", 0 if family == "bert" else 1)))
            return _dictionary_for_rows(hf_vocabulary_tokens(path, family), hf_special_tokens(path, family), family,
                                        cfg, path)
        dict_path = dict_path or converted_dict
    else:
        state = _peek_converted(path)
        if state is not None:
            return _from_converted_state(state, path).dictionary
        dict_path = dict_path or os.path.join(os.path.dirname(os.path.abspath(path)), DICT_FILE)
    if is_pretrained_dictionary_file(dict_path):  # already a vocabulary bridge
        return PretrainedDictionary.load(dict_path)
    tokens = fairseq_vocabulary_tokens(dict_path)
    family = "xlm-roberta" if os.path.isfile(os.path.join(os.path.dirname(dict_path), "sentencepiece.bpe.model")) \
        else "roberta"
    return PretrainedDictionary.from_tokens(tokens, dict(bos="<s>", pad="<pad>", eos="</s>", unk="<unk>",
                                                         mask="<mask>"), family)


# ----------------------------------------------------------------------------------------------------- fairseq
def import_fairseq_checkpoint(model_path: str, dict_path: Optional[str] = None) -> ImportedCheckpoint:
    """A fairseq RoBERTa / XLM-R checkpoint (``model.pt``; ``dict.txt`` beside it unless ``dict_path``)."""
    from fairseq import checkpoint_utils

    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"fairseq checkpoint {model_path!r} does not exist")
    ckpt = checkpoint_utils.load_checkpoint_to_cpu(model_path)
    args = _fairseq_model_args(ckpt)
    _refuse_training_checkpoint(model_path, ckpt, args)
    raw = {k: v for k, v in ckpt["model"].items() if torch.is_tensor(v)}
    raw = _upgrade_fairseq_names(raw)
    dict_path = dict_path or os.path.join(os.path.dirname(os.path.abspath(model_path)), "dict.txt")
    if not os.path.isfile(dict_path):
        raise FileNotFoundError(f"fairseq dictionary {dict_path!r} does not exist (fairseq releases ship dict.txt "
                                "beside model.pt; pass its path otherwise)")
    if args.get("encoder_normalize_before") or "encoder.sentence_encoder.layer_norm.weight" in raw:
        raise PretrainedCheckpointError(
            f"{model_path} is a pre-LayerNorm model (encoder_normalize_before, e.g. XLM-R XL/XXL); the BERT-family "
            "backbone is post-LayerNorm"
        )
    prefix = "encoder.sentence_encoder."
    if prefix + "embed_tokens.weight" not in raw:
        raise PretrainedCheckpointError(
            f"{model_path} is not a fairseq RoBERTa / XLM-R checkpoint: no tensor {prefix}embed_tokens.weight "
            f"(arch {args.get('arch', args.get('_name'))!r})"
        )
    tokens = fairseq_vocabulary_tokens(dict_path)
    embed = raw[prefix + "embed_tokens.weight"]
    positions = raw.get(prefix + "embed_positions.weight")
    if positions is None:
        raise PretrainedCheckpointError(f"{model_path}: no learned position embeddings ({prefix}embed_positions"
                                        ".weight); only BERT-style learned positions are supported")
    if "encoder_attention_heads" not in args:
        raise PretrainedCheckpointError(f"{model_path}: its config does not say encoder_attention_heads (the "
                                        "number of heads cannot be read from the tensors)")
    layer_ids = {int(m.group(1)) for k in raw for m in [re.match(re.escape(prefix) + r"layers\.(\d+)\.", k)] if m}
    pad = 1  # fairseq's Dictionary: <s> <pad> </s> <unk>
    segments = raw.get(prefix + "segment_embeddings.weight")
    if args.get("no_scale_embedding") is False:
        raise PretrainedCheckpointError(f"{model_path}: embeddings are scaled by sqrt(d) (no_scale_embedding "
                                        "False), unlike BERT-family models")
    if args.get("layernorm_embedding") is False:
        raise PretrainedCheckpointError(f"{model_path}: no embedding LayerNorm (layernorm_embedding False), unlike "
                                        "BERT-family models")
    cfg = BertBackboneConfig(
        vocab_size=int(embed.shape[0]),
        embed_dim=int(embed.shape[1]),
        ffn_embed_dim=int(raw[prefix + "layers.0.fc1.weight"].shape[0]) if layer_ids else
        int(args.get("encoder_ffn_embed_dim", 3072)),
        layers=len(layer_ids),
        attention_heads=int(args["encoder_attention_heads"]),
        num_positions=int(positions.shape[0]),
        position_offset=pad + 1,
        type_vocab_size=int(segments.shape[0]) if segments is not None else 0,
        padding_idx=pad,
        layer_norm_eps=1e-5,  # fairseq's LayerNorm default
        dropout=float(args.get("dropout", 0.1)),
        attention_dropout=float(args.get("attention_dropout", 0.1)),
        activation_dropout=float(args.get("activation_dropout", 0.0)),
        activation_fn=str(args.get("activation_fn", "gelu")),
        family="xlm-roberta" if os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(model_path)),
                                                             "sentencepiece.bpe.model")) else "roberta",
    )
    found, lm_head, unknown = {}, {}, []
    for key, value in raw.items():
        if key.startswith(prefix):
            name = key[len(prefix):]
            target = {"embed_tokens.weight": "embeddings.embed_tokens.weight",
                      "embed_positions.weight": "embeddings.embed_positions.weight",
                      "segment_embeddings.weight": "embeddings.embed_token_types.weight",
                      "layernorm_embedding.weight": "embeddings.layernorm_embedding.weight",
                      "layernorm_embedding.bias": "embeddings.layernorm_embedding.bias"}.get(name)
            if target is None and name.startswith("layers."):
                target = name
            if target is None:
                unknown.append(key)
                continue
            found[target] = (key, value)
        elif key.startswith("encoder.lm_head."):
            lm_head[key[len("encoder.lm_head."):]] = (key, value)
        elif not key.startswith("encoder.classification_heads."):
            unknown.append(key)
    if unknown:
        raise PretrainedCheckpointError(f"{model_path}: tensors this backbone has no place for: {unknown[:8]}")
    state = _checked_state(found, cfg)
    if len(tokens) != cfg.vocab_size:
        raise PretrainedCheckpointError(
            f"{dict_path} gives {len(tokens)} symbols (with <s> <pad> </s> <unk> and <mask>) but the token "
            f"embeddings {prefix}embed_tokens.weight have shape {tuple(embed.shape)}: this dict.txt is not the "
            "checkpoint's"
        )
    dictionary = _dictionary_for_rows(tokens, dict(bos="<s>", pad="<pad>", eos="</s>", unk="<unk>", mask="<mask>"),
                                      cfg.family, cfg, dict_path)
    return ImportedCheckpoint(cfg, state, dictionary, _lm_head_state(lm_head, state, cfg),
                              dict(path=os.path.abspath(model_path), format="fairseq", model_type=cfg.family))


def _refuse_training_checkpoint(model_path: str, ckpt: Dict[str, Any], args: Dict[str, Any]):
    """A checkpoint that fairseq-train wrote for one of this plugin's models is not a pretrained encoder: say so."""
    from fairseq.models import MODEL_REGISTRY

    arch = args.get("arch") or args.get("_name")
    model = MODEL_REGISTRY.get(args.get("_name") or "") or MODEL_REGISTRY.get(arch or "")
    if model is None:
        from fairseq.models import ARCH_MODEL_REGISTRY

        model = ARCH_MODEL_REGISTRY.get(arch or "")
    if model is None or not model.__module__.startswith("fairseq_nar_plugins"):
        return
    cfg = ckpt.get("cfg")
    task = cfg.get("task") if cfg is not None and hasattr(cfg, "get") else None
    task_name = getattr(task, "_name", None) or "?"
    raise PretrainedCheckpointError(
        f"{model_path} is a training checkpoint of this plugin (arch {arch}, task {task_name}), not a pretrained "
        "encoder. --pretrained-encoder takes a Hugging Face folder (config.json + weights), a fairseq RoBERTa / "
        "XLM-R model.pt with dict.txt, or the folder written by scripts/convert_pretrained.py. To go on training "
        f"this checkpoint, re-run its command with the same --save-dir (it resumes), or pass --finetune-from-model "
        f"{model_path}"
    )


def _fairseq_model_args(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """The model section of a fairseq checkpoint's config (``cfg.model`` or legacy ``args``) as a plain dict."""
    model_cfg = None
    if ckpt.get("cfg") is not None:
        model_cfg = ckpt["cfg"].get("model") if hasattr(ckpt["cfg"], "get") else None
    if model_cfg is None and ckpt.get("args") is not None:
        model_cfg = ckpt["args"]
    if model_cfg is None:
        return {}
    if hasattr(model_cfg, "items"):
        try:
            from omegaconf import OmegaConf

            return dict(OmegaConf.to_container(model_cfg, resolve=True))
        except Exception:
            return dict(model_cfg.items())
    return dict(vars(model_cfg))


def _upgrade_fairseq_names(raw: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Old fairseq RoBERTa names -> current: ``decoder.`` -> ``encoder.``, ``emb_layer_norm`` ->
    ``layernorm_embedding``, ``layer_norms.0/1`` -> ``self_attn_layer_norm`` / ``final_layer_norm``, and a packed
    ``in_proj_weight``/``in_proj_bias`` split into q/k/v (as fairseq's own upgrade_state_dict does)."""
    out = {}
    for key, value in raw.items():
        if key.startswith("decoder."):
            key = "encoder." + key[len("decoder."):]
        key = key.replace(".emb_layer_norm.", ".layernorm_embedding.")
        key = key.replace(".layer_norms.0.", ".self_attn_layer_norm.").replace(".layer_norms.1.", ".final_layer_norm.")
        m = re.match(r"(.*\.self_attn\.)in_proj_(weight|bias)$", key)
        if m:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{m.group(1)}{name}.{m.group(2)}"] = part
            continue
        if key.endswith(".version") or key.endswith("_float_tensor"):
            continue
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------------- converted
def save_converted(imported: ImportedCheckpoint, out_dir: str) -> Tuple[str, str]:
    """Write ``out_dir/dict.txt`` (the vocabulary bridge) and ``out_dir/backbone.pt`` (plain tensors and dicts,
    loadable with ``torch.load(weights_only=True)``). Returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    dict_path = os.path.join(out_dir, DICT_FILE)
    imported.dictionary.save(dict_path)
    d = imported.dictionary
    state = {
        "format": CONVERTED_FORMAT,
        "version": CONVERTED_VERSION,
        "config": imported.config.to_dict(),
        "model": dict(imported.state_dict),
        "lm_head": dict(imported.lm_head) if imported.lm_head is not None else None,
        "dictionary": {"symbols": list(d.symbols), "bos": d.bos(), "pad": d.pad(), "eos": d.eos(), "unk": d.unk(),
                       "mask": -1 if d.mask_index is None else d.mask_index, "family": d.family},
        "source": dict(imported.source),
    }
    path = os.path.join(out_dir, CONVERTED_FILE)
    torch.save(state, path)
    return dict_path, path


def load_converted(path: str) -> ImportedCheckpoint:
    """Read a ``backbone.pt`` written by :func:`save_converted`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"converted checkpoint {path!r} does not exist")
    from ...checkpoint_safety import load_file

    state = load_file(path, map_location="cpu")  # names the file if it is truncated, damaged or unsafe
    if not isinstance(state, dict) or state.get("format") != CONVERTED_FORMAT:
        raise PretrainedCheckpointError(f"{path} is not a checkpoint written by scripts/convert_pretrained.py")
    return _from_converted_state(state, path)


def _from_converted_state(state: Dict[str, Any], path: str) -> ImportedCheckpoint:
    if state.get("version") != CONVERTED_VERSION:
        raise PretrainedCheckpointError(f"{path}: converted format version {state.get('version')}, expected "
                                        f"{CONVERTED_VERSION}")
    cfg = BertBackboneConfig.from_dict(state["config"])
    dd = state["dictionary"]
    dictionary = PretrainedDictionary(dd["symbols"], bos=dd["bos"], pad=dd["pad"], eos=dd["eos"], unk=dd["unk"],
                                      mask=None if dd["mask"] < 0 else dd["mask"], family=dd["family"])
    found = {k: (k, v) for k, v in state["model"].items()}
    state_dict = _checked_state(found, cfg)
    source = dict(state.get("source") or {})
    source.update(converted=os.path.abspath(path))
    return ImportedCheckpoint(cfg, state_dict, dictionary, state.get("lm_head"), source)


# ------------------------------------------------------------------------------------- initialising a backbone
def check_vocabulary(task_dictionary: Dictionary, imported: ImportedCheckpoint):
    """Refuse a task dictionary whose indices are not the checkpoint's embedding rows (same symbols, same
    special indices)."""
    ckpt = imported.dictionary
    rows = len(ckpt)
    if len(task_dictionary) != rows:
        # the CTC blank must reuse a row: BERT's [PAD] (README), RoBERTa / XLM-R's <unk>
        blank = ckpt[ckpt.pad()] if ckpt.family == "bert" else ckpt[ckpt.unk()]
        raise PretrainedCheckpointError(
            f"the task dictionary has {len(task_dictionary)} symbols but the checkpoint's token embeddings "
            f"(embeddings.embed_tokens.weight) have shape {(rows, imported.config.embed_dim)}: binarize the data "
            "with the dictionary written by scripts/convert_pretrained.py, and let the CTC blank reuse an existing "
            f"symbol instead of adding one: --ctc-blank-symbol '{blank}' for this "
            f"{ckpt.family or 'pretrained'} vocabulary"
        )
    for name in ("bos", "pad", "eos", "unk"):
        ours, theirs = getattr(task_dictionary, name)(), getattr(ckpt, name)()
        if ours != theirs:
            raise PretrainedCheckpointError(
                f"the task dictionary's {name} is index {ours} ({task_dictionary[ours]!r}) but the checkpoint's is "
                f"row {theirs} ({ckpt[theirs]!r}): use the dictionary written by scripts/convert_pretrained.py "
                "(load it with --user-dir fairseq_nar_plugins)"
            )
    for i, (a, b) in enumerate(zip(task_dictionary.symbols, ckpt.symbols)):
        if a != b:
            raise PretrainedCheckpointError(
                f"the task dictionary does not match the checkpoint's vocabulary: index {i} is {a!r} in the task "
                f"dictionary but row {i} of embeddings.embed_tokens.weight is {b!r}"
            )


_BEHAVIOUR_FIELDS = ("position_offset", "padding_idx", "layer_norm_eps", "activation_fn")


def load_imported_into(backbone: BertBackbone, imported: ImportedCheckpoint,
                       dictionary: Optional[Dictionary] = None) -> ImportedCheckpoint:
    """Copy ``imported``'s weights into ``backbone`` after checking that they fit.

    Every tensor must have the backbone's shape (the error names the tensor and both shapes), and the fields that
    change behaviour without changing shapes (position offset, padding index, LayerNorm eps, activation) must agree.
    A backbone with cross-attention gets the checkpoint's encoder weights in its self-attention and FFN, and its
    cross-attention initialised by ``backbone.cfg.cross_attention_init`` (unless the checkpoint has
    cross-attention weights). ``dictionary``: the task's dictionary, checked with :func:`check_vocabulary`.
    """
    if dictionary is not None:
        check_vocabulary(dictionary, imported)
    for name in _BEHAVIOUR_FIELDS:
        ours, theirs = getattr(backbone.cfg, name), getattr(imported.config, name)
        if ours != theirs:
            raise PretrainedCheckpointError(f"backbone {name} is {ours!r} but the checkpoint's is {theirs!r}")
    target = backbone.state_dict()
    for key, value in imported.state_dict.items():
        if key not in target:
            raise PretrainedCheckpointError(f"checkpoint tensor {key} {tuple(value.shape)} has no place in the "
                                            f"backbone ({backbone.cfg.layers} layers)")
    for key in target:  # in parameter order: the token embeddings first
        value = imported.state_dict.get(key)
        if value is not None and tuple(value.shape) != tuple(target[key].shape):
            raise PretrainedCheckpointError(
                f"checkpoint tensor {key} has shape {tuple(value.shape)} but the backbone's {key} has shape "
                f"{tuple(target[key].shape)}"
            )
    missing = [k for k in target if k not in imported.state_dict]
    not_cross = [k for k in missing if ".encoder_attn" not in k]
    if not_cross:
        raise PretrainedCheckpointError(f"the checkpoint lacks backbone tensors {not_cross[:8]}")
    backbone.load_state_dict(imported.state_dict, strict=False)
    if missing:  # cross-attention: no pretrained counterpart
        backbone.init_cross_attention()
    return imported


def build_pretrained_backbone(path: str, dictionary: Optional[Dictionary] = None, dict_path: Optional[str] = None,
                              **overrides) -> Tuple[BertBackbone, ImportedCheckpoint]:
    """Build a :class:`BertBackbone` with the architecture of the checkpoint at ``path`` (with ``overrides`` of
    :class:`BertBackboneConfig` fields such as ``dropout``, ``cross_attention=True``, ``cross_attention_init``) and
    load its weights. ``path`` is anything :func:`import_checkpoint` accepts; this is what a model's
    ``--pretrained-encoder PATH`` flag calls. Returns ``(backbone, imported)`` (``imported.lm_head`` for models
    that reuse the masked-LM head)."""
    imported = import_checkpoint(path, dict_path)
    shape_fields = ("vocab_size", "embed_dim", "ffn_embed_dim", "layers", "attention_heads", "num_positions",
                    "type_vocab_size") + _BEHAVIOUR_FIELDS
    changed = sorted(k for k in overrides if k in shape_fields and overrides[k] != getattr(imported.config, k))
    if changed:
        raise PretrainedCheckpointError(f"cannot override {changed} of a pretrained checkpoint (its tensors fix "
                                        "them)")
    backbone = BertBackbone(dataclasses.replace(imported.config, **overrides))
    load_imported_into(backbone, imported, dictionary)
    return backbone, imported


def add_pretrained_encoder_args(parser, flag: str = "--pretrained-encoder"):
    """Add the standard ``--pretrained-encoder PATH`` flag (models call it from ``add_args``)."""
    parser.add_argument(
        flag, type=str, metavar="PATH", default=None,
        help="initialise the BERT-family backbone from this checkpoint: a folder or backbone.pt written by "
        "scripts/convert_pretrained.py, a Hugging Face BERT / RoBERTa / XLM-R folder (config.json + "
        "model.safetensors or pytorch_model.bin), or a fairseq RoBERTa / XLM-R model.pt with dict.txt beside it. "
        "The architecture (layers, width, vocabulary) is the checkpoint's, and the data must be binarized with its "
        "dictionary (dict.txt written by scripts/convert_pretrained.py).",
    )
