"""MLAE for understanding tasks (§3.2): the model ``mlae_classifier`` (``mlae_classifier_12_4`` ...
``mlae_classifier_tiny``; only the encoder sizes matter) for fairseq's ``sentence_prediction`` task and criterion.

"We directly use the encoder part of MLAE as feature extractor. After the encoder, we add a linear layer followed by
softmax classifier as task layer ... the task layer projects the representation corresponding to [EOS] into the
label space." The model is :class:`~fairseq_nar_plugins.models.bnb_classifier.BnBClassifierModel`'s (the encoder
backbone, fairseq's classification-head protocol, ``--init-token`` checks) with another head: the final state at the
**last** ``</s>`` of each row (any padding side; sentence pairs ``a </s> b </s>`` pool the second), dropout
(``--pooler-dropout``), one ``Linear(C, num_classes)``. The softmax is the criterion's.

Initialisation: ``--init-from-mlae CKPT`` (an MLAE pretraining checkpoint: its encoder is taken, its decoder listed as
unused), ``--pretrained-encoder`` (a BERT-family checkpoint) or random. Data: binarize with the pretraining
``dict.txt`` (``sentence_prediction`` appends ``<mask>`` as the pretraining task did), ``--init-token`` = the
dictionary's ``<s>`` (0 with a fairseq dictionary): pretraining blocks start with it.
"""
import logging

import torch
import torch.nn as nn
from fairseq.models import register_model, register_model_architecture
from fairseq.modules.transformer_sentence_encoder import init_bert_params
from torch import Tensor

from ..bnb_classifier import BnBClassifierEncoder, BnBClassifierModel, check_input_layout
from .checkpoint import MLAECheckpoint
from .common import add_mlae_args, build_encoder_backbone, register_sizes

logger = logging.getLogger(__name__)


def last_eos_states(features: Tensor, tokens: Tensor, eos: int) -> Tensor:
    """``(B, C)``: the state at the last ``eos`` of each row.

    Args:
        features: ``(B, T, C)`` final encoder states.
        tokens: ``(B, T)`` the encoder's input (any padding side); a row without ``eos`` raises.
    """
    is_eos = tokens.eq(eos)
    if not bool(is_eos.any(1).all()):
        raise ValueError("mlae_classifier pools the last </s> of each row, but a row has none")
    last = (is_eos.long() * torch.arange(1, tokens.size(1) + 1, device=tokens.device)).argmax(1)
    return features[torch.arange(features.size(0), device=features.device), last]


class EOSClassificationHead(nn.Module):
    """Dropout, then one linear layer from the last-``</s>`` state to the class logits (MLAE §3.2)."""

    def __init__(self, input_dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.out_proj = nn.Linear(input_dim, num_classes)

    def forward(self, pooled: Tensor) -> Tensor:
        """``(B, C)`` -> ``(B, num_classes)`` logits."""
        return self.out_proj(self.dropout(pooled))


@register_model("mlae_classifier")
class MLAEClassifierModel(BnBClassifierModel):
    """MLAE encoder + ``[EOS]`` linear heads; see the module docstring."""

    @staticmethod
    def add_args(parser):
        add_mlae_args(parser, decoder=False)
        parser.add_argument("--pooler-dropout", type=float, metavar="D",
                            help="dropout before the classification heads' linear layer (default 0.1)")

    @classmethod
    def build_model(cls, args, task):
        mlae_classifier_12_4(args)
        dictionary = task.source_dictionary
        check_input_layout(task, dictionary)
        checkpoint = MLAECheckpoint(args.init_from_mlae) if args.init_from_mlae else None
        if checkpoint:
            checkpoint.configure(args, decoder_cross_attention=None)
            checkpoint.check_vocabulary(dictionary)
        backbone, _ = build_encoder_backbone(args, dictionary)
        model = cls(args, BnBClassifierEncoder(dictionary, backbone))
        if checkpoint:
            checkpoint.load_into(model)
        args.pretrained_encoder = args.init_from_mlae = None
        return model

    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        """Add (or replace) head ``name``: last-``</s>`` state ``(B, C)`` -> dropout -> ``Linear(C, num_classes)``
        (BERT's N(0, 0.02) initialisation); ``inner_dim`` is ignored (there is no hidden layer)."""
        if num_classes is None or num_classes < 1:
            raise ValueError(f"classification head {name!r} needs num_classes >= 1 (--num-classes), got "
                             f"{num_classes}")
        head = EOSClassificationHead(self.encoder.backbone.embed_dim, num_classes, self.args.pooler_dropout)
        head.apply(init_bert_params)
        self.classification_heads[name] = head

    def forward(self, src_tokens, features_only=False, return_all_hiddens=False, classification_head_name=None,
                **kwargs):
        """As :meth:`BnBClassifierModel.forward`, the heads reading the last ``</s>`` state."""
        if classification_head_name is None and not features_only:
            raise ValueError("mlae_classifier has no masked-LM output layer: pass features_only=True or a "
                             "classification_head_name")
        x, extra = self.encoder(src_tokens, return_all_hiddens=return_all_hiddens)
        if classification_head_name is not None:
            if classification_head_name not in self.classification_heads:
                raise KeyError(f"no classification head {classification_head_name!r} (registered: "
                               f"{sorted(self.classification_heads)}); the sentence_prediction task registers "
                               "--classification-head-name")
            pooled = last_eos_states(x, src_tokens, self.encoder.dictionary.eos())
            x = self.classification_heads[classification_head_name](pooled)
        return x, extra

    def upgrade_state_dict_named(self, state_dict, name):
        """Heads of a checkpoint that this model lacks are registered from their shapes; a head whose class count
        differs from this model's is dropped with a warning (as RoBERTa does)."""
        super(BnBClassifierModel, self).upgrade_state_dict_named(state_dict, name)
        prefix = (name + "." if name else "") + "classification_heads."
        heads = {k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)}
        for head in sorted(heads):
            num_classes = state_dict[f"{prefix}{head}.out_proj.weight"].size(0)
            if head not in self.classification_heads:
                self.register_classification_head(head, num_classes)
            if self.classification_heads[head].out_proj.out_features != num_classes:
                logger.warning(f"dropping classification head {head!r} of the checkpoint ({num_classes} classes)")
                for k in [k for k in state_dict if k.startswith(f"{prefix}{head}.")]:
                    del state_dict[k]
        for k, v in self.classification_heads.state_dict().items():
            state_dict.setdefault(prefix + k, v)


def mlae_classifier_defaults(args):
    if getattr(args, "pooler_dropout", None) is None:
        args.pooler_dropout = 0.1
    args.pair_token_types = False


ARCHS = register_sizes("mlae_classifier", register_model_architecture, mlae_classifier_defaults,
                       " Encoder only, [EOS] classification heads.")
mlae_classifier_12_4 = ARCHS["12_4"]
