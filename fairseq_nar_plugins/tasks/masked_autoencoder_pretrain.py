"""Task ``masked_autoencoder_pretrain``: seq2seq pretraining of NAR models on monolingual text.

Data: a directory written by ``fairseq-preprocess --only-source`` (``dict.txt``, ``train.bin/.idx``, ...). Lines keep
their ``</s>``; fairseq's ``TokenBlockDataset`` packs them into blocks of at most ``--tokens-per-sample`` tokens
(``<s>`` and ``</s>`` included). The encoder sees the block corrupted by the chain ``--corruptions`` (applied in the
order given, see :mod:`..modules.corruption`); the NAR decoder reconstructs the **original block**, at its original
length and positions.

What a batch holds (``B`` blocks, ``S`` = longest corrupted block, ``T`` = longest original block; right-padded):

=================================== ============ ======================================================================
key                                 shape        content
=================================== ============ ======================================================================
``net_input["src_tokens"]``         ``(B, S)``   corrupted blocks (encoder input)
``net_input["src_lengths"]``        ``(B,)``     their lengths
``net_input["prev_output_tokens"]`` ``(B, T)``   decoder input: ``<s>``, ``--mask-symbol`` x (length - 2), ``</s>``
``prev_target``                     ``(B, T)``   the same tensor (what fairseq's NAT criterions pass to the model)
``target``                          ``(B, T)``   original blocks; with ``--loss-positions corrupted`` every position
                                                 no corruption acted on is ``<pad>``, so losses that skip padding
                                                 cover the corrupted positions only
``full_target``                     ``(B, T)``   original blocks, every position
``corrupted``                       ``(B, T)``   bool, True where a corruption acted on the target token
``target_lengths``                  ``(B,)``     decoder lengths (original block lengths)
``ntokens``                         int          number of target tokens the loss covers (non-pad ``target``)
``nsentences``, ``id``              int, (B,)    as usual
=================================== ============ ======================================================================

Criteria that compare positions (cross-entropy, fairseq's ``nat_loss``) get the chosen coverage from ``target``
alone. Alignment-based ones (CTC) cannot skip positions inside a sequence: they should read ``full_target`` (and may
weight by ``corrupted`` themselves).

"Corrupted" means: selected for masking (``mask``, including BERT's unchanged 10 %; ``span``), moved (``permute``;
``shuffle``: every token of a sentence now in another slot) or removed into an infilled span (``infill``). Tokens
that infilling or shuffling merely shifted are present in the source and are not marked; protected symbols
(``<s>``, ``</s>``, ``<pad>``, the mask, ``--protected-symbols``) never are.

Any fairseq ``Dictionary`` works, wherever its special symbols sit (e.g. a BERT vocabulary with ``[PAD]`` at 0 and
``[MASK]`` at 103): ids are always looked up by name, and the dictionary is read by :meth:`load_dictionary`, which
a subclass (or a vocabulary bridge) can replace. Each block's noise depends only on ``(--seed, epoch, block index)``,
so runs are reproducible across workers, ranks and resumption.
"""
import logging
import os
from dataclasses import dataclass, field
from functools import partial
from typing import List

import numpy as np
from fairseq import utils
from fairseq.data import (
    AppendTokenDataset,
    IdDataset,
    NestedDictionaryDataset,
    NumelDataset,
    NumSamplesDataset,
    PrependTokenDataset,
    RightPadDataset,
    SortDataset,
    StripTokenDataset,
    TokenBlockDataset,
    data_utils,
)
from fairseq.data.shorten_dataset import maybe_shorten_dataset
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from ..modules.corruption import CORRUPTIONS
from ..modules.corruption.dataset import CorruptedBlockDataset, field_view

logger = logging.getLogger(__name__)

SAMPLE_BREAK_MODE_CHOICES = ChoiceEnum(["none", "complete", "complete_doc", "eos"])
SHORTEN_METHOD_CHOICES = ChoiceEnum(["none", "truncate", "random_crop"])
LOSS_POSITIONS_CHOICES = ChoiceEnum(["corrupted", "all"])


@dataclass
class MaskedAutoencoderPretrainConfig(FairseqDataclass):
    data: str = field(
        default=MISSING,
        metadata={"help": "directory written by fairseq-preprocess --only-source (dict.txt, {split}.bin/.idx); "
                  "several directories separated by ':' are used one per epoch, round-robin"},
    )
    tokens_per_sample: int = field(
        default=512,
        metadata={"help": "maximum block length in tokens, <s> and </s> included (the papers use 512)"},
    )
    sample_break_mode: SAMPLE_BREAK_MODE_CHOICES = field(
        default="complete_doc",
        metadata={"help": "how TokenBlockDataset packs lines into blocks: 'none' fills every block to "
                  "--tokens-per-sample across line and document boundaries; 'complete' packs whole lines; "
                  "'complete_doc' packs whole lines without crossing documents (separated by empty lines); 'eos' "
                  "one line per block. With 'complete*' a single line longer than a block makes an over-long block "
                  "that size filtering drops: use --shorten-method or 'none' for corpora with long lines"},
    )
    shorten_method: SHORTEN_METHOD_CHOICES = field(
        default="none",
        metadata={"help": "cut lines longer than a block before packing: 'truncate' keeps their beginning, "
                  "'random_crop' a random window (fairseq's maybe_shorten_dataset)"},
    )
    shorten_data_split_list: str = field(
        default="",
        metadata={"help": "comma-separated splits --shorten-method applies to (default: all)"},
    )
    corruptions: str = field(
        default="span",
        metadata={"help": "comma-separated corruptions applied to each block, in this order: 'mask' (BERT 80/10/10 "
                  "token masking, BnB), 'span' (MLAE span masking), 'permute' (BnB permutation LM), 'shuffle' "
                  "(ELMER/BART sentence shuffling), 'infill' (ELMER/BART text infilling, one mask per Poisson "
                  "span). ELMER uses 'shuffle,infill'"},
    )
    mask_prob: float = field(
        default=0.15, metadata={"help": "'mask': fraction of (non-protected) tokens selected (BERT, BnB: 0.15)"},
    )
    mask_random_prob: float = field(
        default=0.1, metadata={"help": "'mask': share of the selected tokens replaced by a random token (BERT: 0.1)"},
    )
    mask_leave_unmasked_prob: float = field(
        default=0.1, metadata={"help": "'mask': share of the selected tokens left unchanged (BERT: 0.1); the rest "
                                       "become --mask-symbol"},
    )
    span_mask_prob: float = field(
        default=0.15, metadata={"help": "'span': fraction of tokens masked, in spans (MLAE: 0.15)"},
    )
    span_mean_length: float = field(
        default=3.0, metadata={"help": "'span': mean span length in tokens (MLAE: 3)"},
    )
    permute_prob: float = field(
        default=0.5, metadata={"help": "'permute': fraction of tokens permuted among themselves (BnB: 0.5)"},
    )
    shuffle_prob: float = field(
        default=1.0, metadata={"help": "'shuffle': fraction of a block's sentences permuted (ELMER: 1, all)"},
    )
    full_stop_symbols: str = field(
        default=".",
        metadata={"help": "'shuffle': comma-separated symbols that end a sentence, besides </s> (which ends every "
                  "line); symbols missing from the dictionary are ignored (e.g. '.,!,?' or '▁.' for sentencepiece)"},
    )
    infill_prob: float = field(
        default=0.15, metadata={"help": "'infill': fraction of tokens masked in spans (ELMER: 0.15)"},
    )
    infill_poisson_lambda: float = field(
        default=3.0, metadata={"help": "'infill': Poisson mean of the span lengths (ELMER, BART: 3)"},
    )
    loss_positions: LOSS_POSITIONS_CHOICES = field(
        default="corrupted",
        metadata={"help": "target positions the loss covers: 'corrupted' (sample['target'] is <pad> wherever no "
                  "corruption acted on the token; MLAE, BERT) or 'all' (every token of the block; BnB, ELMER)"},
    )
    mask_symbol: str = field(
        default="<mask>",
        metadata={"help": "name of the mask symbol, looked up in the dictionary and added if absent (use '[MASK]' "
                  "with a BERT vocabulary, '<mask>' with RoBERTa/XLM-R)"},
    )
    protected_symbols: str = field(
        default="",
        metadata={"help": "comma-separated extra symbols that no corruption may select, besides <s>, </s>, <pad> "
                  "and the mask symbol"},
    )
    max_source_positions: int = field(
        default=512, metadata={"help": "max number of tokens in the (corrupted) source block"},
    )
    max_target_positions: int = field(
        default=512, metadata={"help": "max number of tokens in the target block (the decoder length)"},
    )
    seed: int = II("common.seed")


def _symbol_ids(dictionary, symbols: str) -> List[int]:
    names = [s for s in (symbols or "").split(",") if s]
    return [dictionary.index(s) for s in names if s in dictionary.indices]


@register_task("masked_autoencoder_pretrain", dataclass=MaskedAutoencoderPretrainConfig)
class MaskedAutoencoderPretrainTask(FairseqTask):
    """Corrupted block in, original block out (see the module docstring for the batch layout)."""

    cfg: MaskedAutoencoderPretrainConfig

    def __init__(self, cfg: MaskedAutoencoderPretrainConfig, dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.mask_idx = self.add_mask_symbol(dictionary, cfg.mask_symbol)
        self.corruption_names = parse_corruptions(cfg.corruptions)
        if cfg.tokens_per_sample < 3:
            raise ValueError(f"--tokens-per-sample must be at least 3 (<s>, a token, </s>), "
                             f"got {cfg.tokens_per_sample}")

    @staticmethod
    def add_mask_symbol(dictionary, symbol: str) -> int:
        """Index of ``symbol`` in ``dictionary``, added at the end if absent (as fairseq's denoising task does).
        A pretrained vocabulary bridge answers ``<mask>`` with its own mask row (BERT's ``[MASK]``; see
        ``PretrainedDictionary.add_symbol``)."""
        if symbol in dictionary.indices:
            return dictionary.index(symbol)
        others = [s for s in ("<mask>", "[MASK]") if s != symbol and s in dictionary.indices]
        size = len(dictionary)
        index = dictionary.add_symbol(symbol)
        if others and len(dictionary) > size:
            logger.warning(f"mask symbol {symbol!r} is not in the dictionary, which has {others[0]!r}: added "
                           f"{symbol!r} as a new symbol (a new embedding row); pass --mask-symbol '{others[0]}' to "
                           "use the vocabulary's own")
        return index

    @classmethod
    def setup_task(cls, cfg: MaskedAutoencoderPretrainConfig, **kwargs):
        paths = utils.split_paths(cfg.data)
        if not paths:
            raise ValueError("the task needs a data directory (the positional DATA argument)")
        dict_path = os.path.join(paths[0], "dict.txt")
        for path in paths:
            if not os.path.isdir(path):
                raise FileNotFoundError(f"data directory {path!r} does not exist; pass the directory written by "
                                        "fairseq-preprocess --only-source (it holds dict.txt and the .bin/.idx files)")
        dictionary = cls.load_dictionary(dict_path)
        logger.info(f"dictionary: {len(dictionary):,} types")
        return cls(cfg, dictionary)

    @classmethod
    def load_dictionary(cls, filename):
        """The dictionary of the data directory (``dict.txt``). Override to read another vocabulary (e.g. one whose
        indices follow a pretrained checkpoint's embedding rows); the task only ever looks symbols up by name."""
        if not os.path.exists(filename):
            raise FileNotFoundError(f"dictionary {filename!r} not found (fairseq-preprocess writes dict.txt)")
        return super().load_dictionary(filename)

    # ------------------------------------------------------------------ special ids and corruptions

    @property
    def protected_ids(self) -> List[int]:
        """Ids no corruption selects: <s>, </s>, <pad>, the mask symbol and --protected-symbols."""
        d = self.dictionary
        ids = {d.bos(), d.eos(), d.pad(), self.mask_idx}
        ids.update(_symbol_ids(d, self.cfg.protected_symbols))
        return sorted(ids)

    @property
    def random_ids(self) -> List[int]:
        """Ids a random replacement may take: every symbol but the specials (<s>, </s>, <pad>, <unk>), the mask,
        the protected symbols and fairseq's 'madeupword' padding symbols."""
        d = self.dictionary
        excluded = set(self.protected_ids) | {d.unk()}
        return [i for i, s in enumerate(d.symbols) if i not in excluded and not s.startswith("madeupword")]

    @property
    def full_stop_ids(self) -> List[int]:
        """Ids that end a sentence for 'shuffle': </s> and the --full-stop-symbols present in the dictionary."""
        return sorted({self.dictionary.eos(), *_symbol_ids(self.dictionary, self.cfg.full_stop_symbols)})

    def build_corruptions(self):
        """The ``--corruptions`` chain as callables ``fn(tokens, generator)`` (see :mod:`..modules.corruption`)."""
        cfg, protected = self.cfg, self.protected_ids
        random_ids = self.random_ids
        kwargs = {
            "mask": dict(mask_idx=self.mask_idx, rate=cfg.mask_prob, random_token_prob=cfg.mask_random_prob,
                         leave_unmasked_prob=cfg.mask_leave_unmasked_prob, random_ids=random_ids),
            "span": dict(mask_idx=self.mask_idx, rate=cfg.span_mask_prob, mean_span_length=cfg.span_mean_length),
            "permute": dict(rate=cfg.permute_prob),
            "shuffle": dict(rate=cfg.shuffle_prob, full_stop_ids=self.full_stop_ids),
            "infill": dict(mask_idx=self.mask_idx, rate=cfg.infill_prob, poisson_lambda=cfg.infill_poisson_lambda),
        }
        return [partial(CORRUPTIONS[name], protected=protected, **kwargs[name]) for name in self.corruption_names]

    # ------------------------------------------------------------------ datasets

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        """Blocks of ``split`` (from the data directory of this epoch), corrupted and batched as described above."""
        paths = utils.split_paths(self.cfg.data)
        data_path = paths[(epoch - 1) % len(paths)]
        split_path = os.path.join(data_path, split)
        lines = data_utils.load_indexed_dataset(split_path, self.dictionary, combine=combine)
        if lines is None:
            raise FileNotFoundError(f"dataset not found: {split} ({split_path}.bin/.idx)")
        lines = maybe_shorten_dataset(lines, split, self.cfg.shorten_data_split_list, self.cfg.shorten_method,
                                      self.cfg.tokens_per_sample - 2, self.cfg.seed)
        self.datasets[split] = self.build_dataset(lines, split)

    def make_blocks(self, lines, split=""):
        """``<s>`` + block + ``</s>`` over a dataset of lines (each ending with ``</s>``): TokenBlockDataset with
        blocks of ``--tokens-per-sample - 2`` tokens, the block's own trailing ``</s>`` stripped before one is
        appended (internal ``</s>`` stay: they end lines, hence sentences)."""
        blocks = TokenBlockDataset(
            lines, lines.sizes, self.cfg.tokens_per_sample - 2, pad=self.dictionary.pad(), eos=self.dictionary.eos(),
            break_mode=self.cfg.sample_break_mode, document_sep_len=1,
        )
        too_long = int((np.asarray(blocks.sizes) > self.cfg.tokens_per_sample - 2).sum())
        if too_long:
            logger.warning(f"[{split}] {too_long:,} blocks are longer than --tokens-per-sample "
                           f"{self.cfg.tokens_per_sample} (single lines longer than a block, --sample-break-mode "
                           f"{self.cfg.sample_break_mode}); size filtering will drop them. Use --shorten-method "
                           "truncate or --sample-break-mode none to keep their text.")
        logger.info(f"[{split}] {len(blocks):,} blocks")
        blocks = StripTokenDataset(blocks, self.dictionary.eos())
        blocks = PrependTokenDataset(blocks, self.dictionary.bos())
        return AppendTokenDataset(blocks, self.dictionary.eos())

    def build_dataset(self, lines, split=""):
        """The batched dataset of ``split`` from a fairseq dataset of binarized lines (with ``.sizes``)."""
        blocks = self.make_blocks(lines, split)
        corrupted = CorruptedBlockDataset(blocks, self.build_corruptions(), seed=self.cfg.seed)
        pad = self.dictionary.pad()
        only_corrupted = self.cfg.loss_positions == "corrupted"
        source = field_view(corrupted, "source")
        decoder_input = RightPadDataset(field_view(corrupted, "decoder_input", mask_idx=self.mask_idx), pad_idx=pad)
        dataset = NestedDictionaryDataset(
            {
                "id": IdDataset(),
                "net_input": {
                    "src_tokens": RightPadDataset(source, pad_idx=pad),
                    "src_lengths": NumelDataset(source, reduce=False),
                    "prev_output_tokens": decoder_input,
                },
                "prev_target": decoder_input,
                "target": RightPadDataset(
                    field_view(corrupted, "loss_target", pad=pad, corrupted_only=only_corrupted), pad_idx=pad),
                "full_target": RightPadDataset(field_view(corrupted, "target"), pad_idx=pad),
                "corrupted": RightPadDataset(field_view(corrupted, "corrupted"), pad_idx=0),
                "target_lengths": NumelDataset(field_view(corrupted, "target"), reduce=False),
                "nsentences": NumSamplesDataset(),
                "ntokens": NumelDataset(field_view(corrupted, "loss_tokens", corrupted_only=only_corrupted),
                                        reduce=True),
            },
            sizes=[blocks.sizes],
        )
        logger.info(f"[{split}] corruptions {','.join(self.corruption_names)} (mask symbol "
                    f"{self.dictionary[self.mask_idx]!r} = {self.mask_idx}), loss on {self.cfg.loss_positions} "
                    "positions")
        with data_utils.numpy_seed(self.cfg.seed):
            shuffle = np.random.permutation(len(dataset))
        return SortDataset(dataset, sort_order=[shuffle, blocks.sizes])

    # ------------------------------------------------------------------ fairseq task interface

    def max_positions(self):
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        """Filters blocks on their original length against the smallest limit: a corrupted source is never longer
        than its block, so one numpy comparison replaces fairseq's per-index loop over (source, target) limits."""
        if isinstance(max_positions, (tuple, list)) and all(isinstance(m, (int, float)) or m is None
                                                              for m in max_positions):
            limits = [m for m in max_positions if m is not None]
            max_positions = int(min(limits)) if limits else None
        if max_positions is None:
            return indices
        return super().filter_indices_by_size(indices, dataset, max_positions, ignore_invalid_inputs)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary


def parse_corruptions(spec: str) -> List[str]:
    """``"shuffle,infill"`` -> ``["shuffle", "infill"]``, refusing unknown, repeated or no names."""
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    if not names:
        raise ValueError(f"--corruptions needs at least one of {', '.join(CORRUPTIONS)}")
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption(s) {', '.join(unknown)} in --corruptions {spec!r}; "
                         f"choose from {', '.join(CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--corruptions {spec!r} names a corruption twice")
    return names
