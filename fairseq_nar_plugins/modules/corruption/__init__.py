"""Composable text corruptions for seq2seq (NAR) pretraining, each a tested function of its paper's definition.

=========== ======================================== ===================================================
name        function                                 definition from
=========== ======================================== ===================================================
``mask``    :func:`mask_tokens`                      BERT 80/10/10 masked LM at 15 % (BnB, paper 000)
``span``    :func:`span_mask`                        MLAE span masking, 15 %, mean span 3 (paper 003)
``permute`` :func:`permute_tokens`                   BnB permutation LM, 50 % of the tokens (paper 000)
``shuffle`` :func:`shuffle_sentences`                ELMER / BART sentence shuffling (paper 001)
``infill``  :func:`text_infill`                      ELMER / BART text infilling, Poisson(3) spans -> one
                                                     mask each, 15 % (paper 001)
=========== ======================================== ===================================================

Every function takes a 1-D LongTensor of token ids and a ``torch.Generator`` and returns a
:class:`CorruptionResult` (corrupted tokens, where each came from, which input tokens were acted on); :func:`compose`
chains them. :class:`.dataset.CorruptedBlockDataset` (in ``corruption/dataset.py``, which imports fairseq) applies a
chain to a fairseq dataset with per-(seed, epoch, index) seeds.
"""
from .core import CorruptionResult, compose, maskable_positions
from .infilling import poisson_span_distribution, sample_span_lengths, text_infill
from .masking import mask_tokens, random_segmentation, span_mask
from .reordering import permute_tokens, sentence_bounds, shuffle_sentences

__all__ = [
    "CORRUPTIONS", "CorruptionResult", "compose", "maskable_positions", "mask_tokens", "random_segmentation",
    "span_mask", "permute_tokens", "sentence_bounds", "shuffle_sentences", "poisson_span_distribution",
    "sample_span_lengths", "text_infill",
]

CORRUPTIONS = {
    "mask": mask_tokens,
    "span": span_mask,
    "permute": permute_tokens,
    "shuffle": shuffle_sentences,
    "infill": text_infill,
}
