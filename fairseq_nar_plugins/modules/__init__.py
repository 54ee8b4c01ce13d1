"""Pieces that several models share, grouped by kind (each subpackage's docstring says which models use it).

=================== =====================================================================================
``backbone/``       the BERT-family backbone (``BertBackbone``), compact layers of pruned models, shared flags
``pretrained/``     BERT / RoBERTa / XLM-R checkpoints, their vocabularies and tokenizers; warm start from a
                    fairseq teacher
``ctc/``            CTC loss, alignment, glancing training and one-pass CTC generation
``nat/``            length prediction, source copying, mask-predict decoding, scheduled masking
``single_stack/``   one stack over ``[source ; target]``: DEER's input, its Levenshtein editor, UniLM masks
``pruning/``        dynamic block pruning (DEER) and the export of a pruned model at one size
``exits/``          early exit (ELMER): exit sampling, off-ramps, canvas, exit policies
``corruption/``     text corruptions for pretraining (masking, span masking, permutation, shuffling, infilling)
=================== =====================================================================================

Each paper's own model is in ``fairseq_nar_plugins/models/`` (bnb, deer, elmer, mlae, nat_ctc_transformer).

The modules of this folder were flat before (``fairseq_nar_plugins.modules.<name>``); those import paths
still work: :data:`MOVED` maps each old name to its subpackage, and importing the old path gives the very same module
object as the new one. Code in this package imports the new paths (tests/test_layout.py checks it).
"""
import importlib
import importlib.abc
import importlib.util
import sys

from . import corruption  # noqa: F401
from .pretrained import pretrained_vocab as _pretrained_vocab

# pretrained-vocabulary dictionaries (dict.txt of scripts/convert_pretrained.py) load through fairseq's Dictionary.load
_pretrained_vocab.install()

#: old flat module name -> the subpackage it lives in now
MOVED = {
    "bert_backbone": "backbone", "compact_attention": "backbone", "backbone_args": "backbone",
    "pretrained_import": "pretrained", "pretrained_tokenizer": "pretrained", "pretrained_vocab": "pretrained",
    "warm_start": "pretrained",
    "ctc_utils": "ctc", "ctc_alignment": "ctc", "ctc_generation": "ctc", "glancing": "ctc",
    "length_predictor": "nat", "source_copy": "nat", "mask_predict": "nat", "scheduled_masking": "nat",
    "deer_input": "single_stack", "seq2seq_masks": "single_stack", "levenshtein_editor": "single_stack",
    "block_pruning": "pruning", "pruned_export": "pruning",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``<this package>.<old name>`` to the module at its new path (the same object, not a copy)."""

    def find_spec(self, fullname, path=None, target=None):
        parent, _, name = fullname.rpartition(".")
        if parent != __name__ or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        name = spec.name.rpartition(".")[2]
        module = importlib.import_module(f"{__name__}.{MOVED[name]}.{name}")
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # importlib set the alias spec on the (already imported) module: give it back its own
        module.__spec__ = self._own_spec


if not any(isinstance(f, _MovedModules) and f.__module__ == __name__ for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
