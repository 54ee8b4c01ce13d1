"""Validation BLEU for fairseq's non-autoregressive tasks: :class:`ValidationBLEUMixin` and task ``translation_lev_bleu``.

fairseq's ``translation`` task decodes the validation set and logs sacreBLEU with ``--eval-bleu``.
``translation_lev`` inherits the flags (``--eval-bleu-args``, ``--eval-bleu-detok``, ``--eval-bleu-remove-bpe``, ...)
and builds the generator for them, but its ``valid_step`` only runs the criterion, so NAR models could only be
compared and selected by loss. The mixin adds, to any subclass of ``translation_lev``:

* ``--eval-bleu``: each validation batch is decoded with the task's generator, fairseq's
  ``IterativeRefinementGenerator``, built from ``--eval-bleu-args`` (a JSON object of fairseq-generate options with
  underscores, e.g. ``'{"iter_decode_max_iter": 0}'`` for one-pass CTC decoding, ``'{"iter_decode_max_iter": 10}'``
  for CMLM mask-predict), and scored as fairseq's ``translation`` task does (``TranslationTask._inference_with_bleu``:
  detokenized with ``--eval-bleu-detok``, sacreBLEU 13a, or ``--eval-tokenized-bleu``). Each batch logs sacreBLEU's
  sufficient statistics (n-gram matches and totals, hypothesis and reference lengths); :meth:`reduce_metrics` sums
  them over batches and workers, so the logged ``bleu`` is the corpus BLEU of the whole validation subset. A
  validation whose hypotheses are all empty logs ``bleu 0`` (fairseq's ``translation`` logs nothing, and
  ``--best-checkpoint-metric bleu`` then stops training with a KeyError).
* ``--eval-bleu-interval-updates N``: decoding is slow next to the loss, so a validation decodes only if it is the
  first of the run or the first since the number of updates crossed a multiple of N; the other validations log the
  loss and ``bleu -inf``.
* ``wall`` (seconds since training began) on every validation line, as on the training lines, for learning curves
  (``scripts/learning_curve.py``).

Why ``-inf`` and not the last measured BLEU: fairseq reads the best-checkpoint metric at every validation, and
``checkpoint_best.pt`` is overwritten when the metric *equals* the best so far (``>=``). A carried BLEU equal to the
best would therefore label a model that was never decoded as the best one. With ``-inf`` (under
``--maximize-best-checkpoint-metric``, which BLEU needs anyway) ``checkpoint_best.pt`` and ``best_bleu`` only ever
follow decoded validations. ``--patience`` still counts every validation without a gain, decoded or not: to stop after
P decodings without a gain, pass ``--patience`` P x N / (validation interval in updates).

``translation_lev_bleu`` is ``translation_lev`` with the mixin, for fairseq's own NAR models (``cmlm_transformer``,
``nonautoregressive_transformer``, ...): fairseq's task name cannot be re-registered by a plugin. Train with
``--task translation_lev_bleu``; its checkpoints decode with ``--task translation_lev`` or ``translation_lev_bleu``.
``translation_lev_ctc`` (:mod:`.translation_lev_ctc`) has the same flags through the same mixin. Both tasks also take
``--autocast-bf16`` (bfloat16 mixed precision on any device, :mod:`.autocast`) and tell the model the update number
(:class:`UpdateCountMixin`).
"""
import json
import logging
from dataclasses import dataclass, field, fields

from fairseq import metrics
from fairseq.dataclass.configs import GenerationConfig
from fairseq.tasks import register_task
from fairseq.tasks.translation import EVAL_BLEU_ORDER
from fairseq.tasks.translation_lev import TranslationLevenshteinConfig, TranslationLevenshteinTask

from .autocast import AutocastMixin

logger = logging.getLogger(__name__)

# keys of the per-batch logging outputs and of the validation meters (fairseq's translation task uses "_bleu_*"; its
# reduce_metrics, which this task inherits, must not see and double-count ours)
_DECODED = "_nar_bleu_decoded"
_SYS_LEN = "_nar_bleu_sys_len"
_REF_LEN = "_nar_bleu_ref_len"
_COUNTS = [f"_nar_bleu_counts_{i}" for i in range(EVAL_BLEU_ORDER)]
_TOTALS = [f"_nar_bleu_totals_{i}" for i in range(EVAL_BLEU_ORDER)]
_ALL_KEYS = [_DECODED, _SYS_LEN, _REF_LEN] + _COUNTS + _TOTALS

NOT_DECODED = float("-inf")
"""The ``bleu`` logged by a validation that did not decode (see the module docstring)."""


@dataclass
class TranslationLevBLEUConfig(TranslationLevenshteinConfig):
    eval_bleu_interval_updates: int = field(
        default=0,
        metadata={
            "help": "with --eval-bleu: decode the validation set only at the first validation of the run and at the "
            "first validation after each multiple of N updates; other validations log the loss and 'bleu -inf', "
            "so that checkpoint_best.pt and best_bleu only follow decoded models (needs "
            "--maximize-best-checkpoint-metric; --patience counts every validation). 0: decode at every validation"
        },
    )
    autocast_bf16: bool = field(
        default=False,
        metadata={
            "help": "bfloat16 mixed precision on any device, the CPU included (fairseq's --bf16 needs a TPU): the "
            "forward passes of training, validation and generation run under torch.autocast(bfloat16), weights, "
            "optimizer and losses stay fp32. Faster only with native bf16 arithmetic (AVX512-BF16/AMX CPUs, "
            "Ampere+ GPUs); emulated elsewhere, and then slower than fp32"
        },
    )


def bleu_logging_output(bleu) -> dict:
    """Per-batch logging-output entries of a sacreBLEU ``BLEUScore`` (its sufficient statistics, as plain numbers)."""
    out = {_DECODED: 1, _SYS_LEN: int(bleu.sys_len), _REF_LEN: int(bleu.ref_len)}
    for i in range(EVAL_BLEU_ORDER):
        out[_COUNTS[i]] = int(bleu.counts[i])
        out[_TOTALS[i]] = int(bleu.totals[i])
    return out


def bleu_from_statistics(counts, totals, sys_len, ref_len) -> float:
    """Corpus BLEU (0-100, rounded to 2 decimals as fairseq logs it) from summed sacreBLEU statistics: n-gram matches
    ``counts`` and n-gram ``totals`` for n = 1..4, hypothesis and reference lengths. Same smoothing ('exp') as
    ``sacrebleu.corpus_bleu`` and fairseq's translation task; 0 when there are no hypothesis tokens."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU.compute_bleu(
        correct=[int(c) for c in counts], total=[int(t) for t in totals], sys_len=int(sys_len),
        ref_len=int(ref_len), smooth_method="exp",
    )
    return round(bleu.score, 2)


def _bleu_from_meters(meters) -> float:
    if meters[_DECODED].sum == 0:
        return NOT_DECODED
    return bleu_from_statistics(
        [meters[k].sum for k in _COUNTS], [meters[k].sum for k in _TOTALS], meters[_SYS_LEN].sum,
        meters[_REF_LEN].sum,
    )


def _current_num_updates():
    """The trainer's update count (fairseq logs it in the 'default' meters at every update and on checkpoint load);
    None outside fairseq-train (e.g. fairseq-validate), where every validation decodes."""
    meter = metrics.get_meter("default", "num_updates")
    return None if meter is None else int(meter.val)


class UpdateCountMixin:
    """Tells the model the update number before each training step, as fairseq's base task does
    (``FairseqTask.train_step`` calls ``model.set_num_updates(update_num)``). fairseq's ``translation_lev`` overrides
    ``train_step`` without that call, so a model under it kept the count of its last checkpoint load for a whole
    run: DEER sampled one pruning size (0.5) for every update, never refreshed its thresholds, never annealed its
    glancing ratio and never started its editor under ``--editor-start-update``. List it before the task class."""

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.set_num_updates(update_num)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)


class ValidationBLEUMixin:
    """Adds ``--eval-bleu`` scoring (and ``--eval-bleu-interval-updates``) to a subclass of fairseq's ``translation_lev``
    task. List it before the task class: ``class T(ValidationBLEUMixin, TranslationLevenshteinTask)``; the config
    must extend :class:`TranslationLevBLEUConfig`. See the module docstring."""

    def __init__(self, cfg, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        check_eval_bleu_config(cfg)
        self._bleu_last_decoded_update = None  # num_updates at the last validation that decoded (this run)
        self._bleu_decode_this_validation = True  # fairseq-validate never calls begin_valid_epoch: always decode

    def bleu_due(self, num_updates) -> bool:
        """Whether a validation at ``num_updates`` decodes: always without an interval or an update count, else at the
        first validation of the run and at the first one after each multiple of --eval-bleu-interval-updates."""
        n = self.cfg.eval_bleu_interval_updates
        if n <= 0 or num_updates is None or self._bleu_last_decoded_update is None:
            return True
        return num_updates // n > self._bleu_last_decoded_update // n

    def begin_valid_epoch(self, epoch, model):
        """Decides once per validation (all its subsets and batches) whether it decodes."""
        super().begin_valid_epoch(epoch, model)
        if not self.cfg.eval_bleu:
            return
        num_updates = _current_num_updates()
        self._bleu_decode_this_validation = self.bleu_due(num_updates)
        if self._bleu_decode_this_validation:
            self._bleu_last_decoded_update = num_updates

    def valid_step(self, sample, model, criterion, **kwargs):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion, **kwargs)
        if self.cfg.eval_bleu:
            if self._bleu_decode_this_validation:
                bleu = self._inference_with_bleu(self.sequence_generator, sample, model)
                logging_output.update(bleu_logging_output(bleu))
            else:
                logging_output.update({k: 0 for k in _ALL_KEYS})
        return loss, sample_size, logging_output

    def post_validate(self, model, stats, agg):
        """fairseq-train's hook after a validation's stats are computed: adds ``wall`` (seconds since training began,
        counting earlier runs of a resumed checkpoint, as on the train lines) so that each ``valid on`` line places its
        BLEU in time (scripts/learning_curve.py)."""
        parent = getattr(super(), "post_validate", None)
        if parent is not None:
            parent(model, stats, agg)
        wall = metrics.get_meter("default", "wall")
        if wall is not None and "wall" not in stats:
            stats["wall"] = round(wall.elapsed_time, 0)

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        # only validation batches carry the keys (training batches must not log a bleu)
        if not self.cfg.eval_bleu or not any(_DECODED in log for log in logging_outputs):
            return
        for key in _ALL_KEYS:
            metrics.log_scalar_sum(key, sum(int(log.get(key, 0)) for log in logging_outputs))
        metrics.log_derived("bleu", _bleu_from_meters)


def check_eval_bleu_config(cfg):
    """Refuses inconsistent --eval-bleu flags before training starts, naming the flag."""
    interval = cfg.eval_bleu_interval_updates
    if interval < 0:
        raise ValueError(f"--eval-bleu-interval-updates must be >= 0 (0: decode at every validation), got {interval}")
    if interval > 0 and not cfg.eval_bleu:
        raise ValueError(f"--eval-bleu-interval-updates {interval} needs --eval-bleu (it sets how often BLEU is scored)")
    if not cfg.eval_bleu:
        return
    try:
        gen_args = json.loads(cfg.eval_bleu_args or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(
            f"--eval-bleu-args {cfg.eval_bleu_args!r} is not valid JSON ({e}); pass an object such as "
            "'{\"iter_decode_max_iter\": 0}'"
        ) from None
    if not isinstance(gen_args, dict):
        raise ValueError(f"--eval-bleu-args must be a JSON object, got {cfg.eval_bleu_args!r}")
    known = {f.name for f in fields(GenerationConfig)}
    unknown = sorted(k for k in gen_args if k not in known)
    if unknown:
        raise ValueError(
            f"--eval-bleu-args: unknown generation option(s) {unknown}; use fairseq-generate's option names with "
            "underscores, e.g. {\"iter_decode_max_iter\": 0, \"iter_decode_with_beam\": 1}"
        )
    try:
        json.loads(cfg.eval_bleu_detok_args or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"--eval-bleu-detok-args {cfg.eval_bleu_detok_args!r} is not valid JSON ({e})") from None


@register_task("translation_lev_bleu", dataclass=TranslationLevBLEUConfig)
class TranslationLevBLEUTask(AutocastMixin, ValidationBLEUMixin, UpdateCountMixin, TranslationLevenshteinTask):
    """fairseq's ``translation_lev`` with validation BLEU (``--eval-bleu``, ``--eval-bleu-interval-updates``) for
    fairseq's NAR models; otherwise identical (data, noise, generator). See the module docstring."""

    cfg: TranslationLevBLEUConfig
