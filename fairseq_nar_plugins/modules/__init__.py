"""Pieces that several models share (CTC utilities, backbones, length predictors, ...)."""
from . import corruption  # noqa: F401

from . import pretrained_vocab as _pretrained_vocab

# pretrained-vocabulary dictionaries (dict.txt of scripts/convert_pretrained.py) load through fairseq's Dictionary.load
_pretrained_vocab.install()
