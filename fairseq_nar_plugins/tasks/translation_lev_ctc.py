"""Task ``translation_lev_ctc``: fairseq's ``translation_lev`` for decoders trained with CTC.

What it adds to ``translation_lev`` (noise injection, ``IterativeRefinementGenerator``, ``<s>``-prepended data):

* ``--upsample-ratio R``: the decoder gets ``round(R * source length)`` frames (see :mod:`..modules.ctc.ctc_utils`);
  models read the ratio from the task when they are built.
* a CTC blank symbol (``--ctc-blank-symbol``, default ``<ctc_blank>``) added to both dictionaries, so that joined
  dictionaries stay identical and ``--share-all-embeddings`` keeps working;
* the unalignable-pair policy. A pair whose target needs more CTC frames than its source provides (target tokens
  plus one blank between equal neighbours > frames) has no CTC alignment. Such pairs are counted and reported once per
  split when the split is loaded, then **skipped in the training split** (``--train-subset``), and **kept in every
  other split**, where their loss is infinite: the ``ctc`` criterion zeroes it and counts it in the ``ctc_inf`` stat,
  and generation still produces a (necessarily too short) hypothesis so that scores stay comparable.
* validation BLEU (``--eval-bleu``, ``--eval-bleu-interval-updates``) through the mixin of :mod:`.translation_lev_bleu`;
* bfloat16 mixed precision on any device (``--autocast-bf16``, :mod:`.autocast`).
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from fairseq.tasks import register_task
from fairseq.tasks.translation_lev import TranslationLevenshteinTask

from .. import fingerprint
from ..modules.ctc.ctc_utils import DEFAULT_BLANK_SYMBOL, add_blank_symbol, ctc_required_frames, num_frames
from .autocast import AutocastMixin
from .translation_lev_bleu import TranslationLevBLEUConfig, UpdateCountMixin, ValidationBLEUMixin

logger = logging.getLogger(__name__)

#: --upsample-ratio of a new model when the flag is not given
DEFAULT_UPSAMPLE_RATIO = 2.0


@dataclass
class TranslationLevCTCConfig(TranslationLevBLEUConfig):
    upsample_ratio: Optional[float] = field(
        default=None,
        metadata={
            "help": "CTC decoders get round(ratio x source length) frames (source length counts <s> and </s>). "
            "Pairs whose target needs more frames are skipped in training and kept (and counted) elsewhere. "
            f"Default: {DEFAULT_UPSAMPLE_RATIO:g} for a new model; when a checkpoint is loaded for generation, the "
            "ratio it was trained with (a different explicit value is refused)"
        },
    )
    max_unalignable_fraction: float = field(
        default=0.5,
        metadata={
            "help": "refuse to train when more than this fraction of the training pairs cannot be CTC-aligned "
            "(usually a too small --upsample-ratio, or distilled targets full of a weak teacher's repetitions); "
            "1.0 trains on what is left"
        },
    )
    ctc_blank_symbol: str = field(
        default=DEFAULT_BLANK_SYMBOL,
        metadata={
            "help": "symbol used as the CTC blank; added to both dictionaries unless it is already there "
            "(e.g. '<unk>' reuses the unknown-word symbol, as DEER does with pretrained vocabularies)"
        },
    )


def unalignable_mask(dataset, ratio: float) -> np.ndarray:
    """Bool array over the examples of a ``LanguagePairDataset``: True where the target cannot be CTC-aligned to
    ``round(ratio * source size)`` frames. Targets are read without their ``<s>``/``</s>``.

    Only pairs that could fail on length alone (``frames < 2 * target length``) have their tokens read.
    """
    import torch

    src_sizes = np.asarray(dataset.src_sizes, dtype=np.int64)
    tgt_sizes = np.asarray(dataset.tgt_sizes, dtype=np.int64)
    frames = num_frames(torch.from_numpy(src_sizes), ratio).numpy()
    content = tgt_sizes - 2  # without <s> and </s>
    mask = np.zeros(len(src_sizes), dtype=bool)
    mask[frames < content] = True
    maybe = np.nonzero((frames >= content) & (frames < 2 * content))[0]
    for i in maybe:
        tokens = dataset.tgt[int(i)][1:-1].tolist()
        mask[i] = frames[i] < ctc_required_frames(tokens)
    return mask


def _trains_with_ctc(model) -> bool:
    """Models whose training terms are CTC (nat_ctc_transformer, DEER, BnB with --length-mode ctc)."""
    from ..modules.ctc.ctc_generation import CTCGenerationMixin

    return isinstance(model, CTCGenerationMixin) and getattr(getattr(model, "decoder", None), "length_mode",
                                                             "ctc") == "ctc"


@register_task("translation_lev_ctc", dataclass=TranslationLevCTCConfig)
class TranslationLevCTCTask(AutocastMixin, ValidationBLEUMixin, UpdateCountMixin, TranslationLevenshteinTask):
    """Translation with CTC non-autoregressive decoders (see module docstring for the data policy)."""

    cfg: TranslationLevCTCConfig

    def __init__(self, cfg, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.upsample_ratio_from_flag = cfg.upsample_ratio is not None
        if cfg.upsample_ratio is None:
            cfg.upsample_ratio = DEFAULT_UPSAMPLE_RATIO  # recorded in the checkpoint's cfg.task as the value used
        if cfg.upsample_ratio <= 0:
            raise ValueError(f"--upsample-ratio must be positive, got {cfg.upsample_ratio}")
        self.blank_idx = add_blank_symbol(tgt_dict, cfg.ctc_blank_symbol)
        src_blank = add_blank_symbol(src_dict, cfg.ctc_blank_symbol)
        if src_dict is not tgt_dict and len(src_dict) == len(tgt_dict) and src_blank != self.blank_idx:
            raise ValueError("the CTC blank got different indices in the source and target dictionaries")

    @property
    def upsample_ratio(self) -> float:
        return self.cfg.upsample_ratio

    def set_upsample_ratio(self, ratio: float):
        """Adopt a checkpoint's ratio (:func:`..fingerprint.check`, before the model is built)."""
        self.cfg.upsample_ratio = ratio

    def state_dict(self):
        """fairseq saves this as the checkpoint's ``task_state``: it carries the :mod:`..fingerprint`."""
        return {**super().state_dict(), fingerprint.KEY: fingerprint.of_task(self)}

    def load_state_dict(self, state_dict):
        """Called by fairseq's checkpoint loading for generation before the model is built: checks the
        checkpoint's fingerprint against this task (adopting its ratio when --upsample-ratio was not given)."""
        state_dict, fp = fingerprint.split_task_state(state_dict)
        fingerprint.check(self, fp)
        super().load_state_dict(state_dict)

    def check_checkpoint_state(self, state, path, resuming):
        """Called by the plugin's fairseq-train restore (:mod:`..checkpoint_safety`) before the weights are
        copied: the checkpoint must fit this task (``resuming``: the ratio too, not only the dictionaries)."""
        _, fp = fingerprint.split_task_state(state.get("task_state"))
        fingerprint.check(self, fp, resuming_training=True, check_ratio=resuming)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        self._ctc_model_arch = (getattr(cfg, "arch", None) or getattr(cfg, "_name", None)) if _trains_with_ctc(
            model) else None
        return model

    def build_generator(self, models, args, **kwargs):
        """fairseq's ``IterativeRefinementGenerator``; models that can skip work when no refinement step follows
        (DEER: no per-layer source cache at --iter-decode-max-iter 0) are told how many steps it runs."""
        generator = super().build_generator(models, args, **kwargs)
        for model in models:
            if hasattr(model, "set_editor_steps"):
                model.set_editor_steps(generator.max_iter)
        return generator

    def build_criterion(self, cfg):
        arch = getattr(self, "_ctc_model_arch", None)
        if arch is not None and getattr(cfg, "_name", None) not in (None, "ctc"):
            raise ValueError(f"--arch {arch} is trained with CTC: use --criterion ctc (got --criterion {cfg._name}, "
                             "which cannot score CTC frame outputs)")
        return super().build_criterion(cfg)

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        for path in (cfg.data or "").split(os.pathsep):
            if not os.path.isdir(path):
                raise FileNotFoundError(
                    f"data directory {path!r} (the positional DATA argument) does not exist; pass the directory "
                    "written by fairseq-preprocess (it holds dict.SRC.txt, dict.TGT.txt and the .bin/.idx files)"
                )
        return super().setup_task(cfg, **kwargs)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise ValueError(
                f"[{split}] the split '{split}' in {self.cfg.data} holds no sentence pairs: there is nothing to "
                "train on, validate or translate (a validation loss over nothing would be reported as nan). "
                "Re-run fairseq-preprocess with non-empty text files for it (a validation split can also be "
                "skipped with --disable-validation)")
        if getattr(dataset, "tgt", None) is None:
            return
        mask = unalignable_mask(dataset, self.cfg.upsample_ratio)
        n_bad = int(mask.sum())
        training = split == self.cfg.train_subset
        if n_bad:
            examples = np.nonzero(mask)[0][:10].tolist()
            action = (
                "skipped in training" if training else "kept (their CTC loss is infinite and counted as ctc_inf)"
            )
            logger.warning(
                f"[{split}] {n_bad:,} of {len(mask):,} pairs cannot be CTC-aligned at --upsample-ratio "
                f"{self.cfg.upsample_ratio:g} (target longer than the upsampled source): {action}; "
                f"first example ids: {examples}. A larger --upsample-ratio keeps more pairs."
            )
        else:
            logger.info(f"[{split}] all {len(mask):,} pairs can be CTC-aligned at --upsample-ratio "
                        f"{self.cfg.upsample_ratio:g}")
        if training and n_bad == len(mask):
            raise ValueError(
                f"[{split}] none of the {n_bad:,} training pairs in {self.cfg.data} can be CTC-aligned at "
                f"--upsample-ratio {self.cfg.upsample_ratio:g} (not even --max-unalignable-fraction 1.0 leaves "
                "anything to train on): raise --upsample-ratio, or check that the targets are not much longer "
                "than the sources (distilled data from an undertrained teacher repeats tokens up to its length cap)"
            )
        if training and n_bad > self.cfg.max_unalignable_fraction * len(mask):
            raise ValueError(
                f"[{split}] {n_bad:,} of {len(mask):,} training pairs ({n_bad / len(mask):.0%}) in {self.cfg.data} "
                f"cannot be CTC-aligned at --upsample-ratio {self.cfg.upsample_ratio:g}, more than "
                f"--max-unalignable-fraction {self.cfg.max_unalignable_fraction:g}: raise --upsample-ratio, check "
                "the targets (distilled data from an undertrained teacher repeats tokens up to its length cap), or "
                "pass --max-unalignable-fraction 1.0 to train on the rest"
            )
        dataset.ctc_unalignable = mask if training else None

    def get_batch_iterator(self, dataset, **kwargs):
        """fairseq's, with two fixes.

        * Evaluation splits (every split but --train-subset) are batched with ``required_batch_size_multiple=1``:
          fairseq's ``batch_by_size`` drops a last batch whose size is not a multiple of it (default 8), which
          silently left sentences untranslated by fairseq-generate and unscored in validation.
        * A training run resumed in epoch E > 1 gets the batches an uninterrupted run has. fairseq forms the batches
          once, ordering the examples with numpy seed ``--seed + epoch`` of the epoch the iterator is created in, and
          reuses them every epoch (shuffled per epoch): 1 for an uninterrupted run, E for a resumed one, whose
          batches then held other sentences (a resumed run did not reproduce the uninterrupted one).
        """
        if dataset is not self.datasets.get(self.cfg.train_subset):
            kwargs["required_batch_size_multiple"] = 1
            return super().get_batch_iterator(dataset, **kwargs)
        epoch = kwargs.get("epoch", 1)
        reused = (not kwargs.get("disable_iterator_cache", False) and not kwargs.get("update_epoch_batch_itr", False)
                  and self.can_reuse_epoch_itr(dataset))
        if epoch > 1 and reused and dataset not in self.dataset_to_epoch_iter:
            itr = super().get_batch_iterator(dataset, **{**kwargs, "epoch": 1})
            itr.epoch = epoch
            dataset.set_epoch(epoch)
            return itr
        return super().get_batch_iterator(dataset, **kwargs)

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        """Drops the unalignable pairs of the training split (marked by :meth:`load_dataset`), then fairseq's
        usual size filtering."""
        mask = getattr(dataset, "ctc_unalignable", None)
        if mask is not None:
            indices = indices[~mask[indices]]
        return super().filter_indices_by_size(indices, dataset, max_positions, ignore_invalid_inputs)
