"""fairseq datasets that corrupt token blocks reproducibly, and the per-field views a task batches.

:class:`CorruptedBlockDataset` wraps a dataset of blocks (1-D LongTensors, e.g. ``<s> ... </s>`` from
``TokenBlockDataset`` + ``PrependTokenDataset`` + ``AppendTokenDataset``) and corrupts block ``index`` of epoch
``epoch`` with a ``torch.Generator`` seeded from ``(seed, epoch, index)`` only, so that an item is the same whichever
worker, rank or resumed run reads it (fairseq's ``MaskTokensDataset`` scheme).

:class:`BlockFieldDataset` views one field of it (the encoder input, the loss target, the decoder input, ...) so
that a task can assemble batches with fairseq's ``NestedDictionaryDataset`` / ``RightPadDataset`` / ``NumelDataset``;
the views share the wrapped dataset, whose small cache serves all of them for the same item.
"""
from functools import lru_cache, partial
from typing import Callable, Dict, Sequence

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset
from torch import Tensor

from .core import Corruption, compose


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed determined by ``(seed, epoch, index)`` alone (numpy ``SeedSequence`` mixing; fairseq's
    ``numpy_seed`` would reduce the triple to one of only 10**6 seeds)."""
    state = np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class CorruptedBlockDataset(BaseWrapperDataset):
    """Applies a chain of corruptions (:func:`..core.compose`) to every block of ``dataset``.

    Item ``index`` is a dict:

    * ``"source"``: LongTensor ``(S,)``, the corrupted block (the encoder input);
    * ``"target"``: LongTensor ``(T,)``, the original block (what the NAR decoder reconstructs; ``T`` is the
      decoder length);
    * ``"corrupted"``: BoolTensor ``(T,)``, True at the target positions a corruption acted on.

    Sizes are those of the wrapped dataset: the corruptions never make a block longer (text infilling caps its
    insertions), so ``S <= T``.
    """

    def __init__(self, dataset, corruptions: Sequence[Corruption], seed: int = 1):
        super().__init__(dataset)
        self.corruptions = list(corruptions)
        self.seed = seed
        self.epoch = 1

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return True  # the noise changes with the epoch, the sizes do not

    def set_epoch(self, epoch, **unused):
        super().set_epoch(epoch)
        self.epoch = epoch

    def __getitem__(self, index) -> Dict[str, Tensor]:
        return self._corrupt(self.seed, self.epoch, int(index))

    @lru_cache(maxsize=16)
    def _corrupt(self, seed: int, epoch: int, index: int) -> Dict[str, Tensor]:
        block = self.dataset[index].long()
        generator = torch.Generator().manual_seed(item_seed(seed, epoch, index))
        result = compose(block, self.corruptions, generator)
        return {"source": result.tokens, "target": block, "corrupted": result.corrupted}


def source_field(item):
    """The encoder input ``(S,)``."""
    return item["source"]


def target_field(item):
    """The original block ``(T,)``."""
    return item["target"]


def corrupted_field(item):
    """BoolTensor ``(T,)``: True at corrupted target positions."""
    return item["corrupted"]


def loss_target_field(item, pad: int, corrupted_only: bool):
    """The loss target ``(T,)``: the original block, with ``pad`` at the positions the loss does not cover (the
    uncorrupted ones when ``corrupted_only``)."""
    if not corrupted_only:
        return item["target"]
    return item["target"].masked_fill(~item["corrupted"], pad)


def loss_tokens_field(item, corrupted_only: bool):
    """The target tokens the loss covers, 1-D (their count is the sample's share of ``ntokens``)."""
    return item["target"][item["corrupted"]] if corrupted_only else item["target"]


def decoder_input_field(item, mask_idx: int):
    """The NAR decoder's input ``(T,)``: the block's first and last tokens (``<s>``, ``</s>``) with ``mask_idx`` at
    every position in between, so that it reveals the target length and nothing else (ELMER feeds
    ``[BOS] + [MASK] * (L - 1)``, CMLM a fully masked target)."""
    target = item["target"]
    out = torch.full_like(target, mask_idx)
    if target.numel() >= 1:
        out[0] = target[0]
    if target.numel() >= 2:
        out[-1] = target[-1]
    return out


class BlockFieldDataset(BaseWrapperDataset):
    """One field of a :class:`CorruptedBlockDataset` item, as its own dataset: ``field(item)`` for item ``index``.

    ``field`` must be picklable (a module-level function or a ``functools.partial`` of one) for data-loader workers.
    Collation is left to the wrapper (e.g. ``RightPadDataset``).
    """

    def __init__(self, dataset: CorruptedBlockDataset, field: Callable[[dict], Tensor]):
        super().__init__(dataset)
        self.field = field

    def __getitem__(self, index):
        return self.field(self.dataset[index])


FIELDS = {
    "source": source_field,
    "target": target_field,
    "corrupted": corrupted_field,
    "loss_target": loss_target_field,
    "loss_tokens": loss_tokens_field,
    "decoder_input": decoder_input_field,
}


def field_view(dataset: CorruptedBlockDataset, name: str, **kwargs) -> BlockFieldDataset:
    """``BlockFieldDataset(dataset, partial(FIELDS[name], **kwargs))``."""
    return BlockFieldDataset(dataset, partial(FIELDS[name], **kwargs))
