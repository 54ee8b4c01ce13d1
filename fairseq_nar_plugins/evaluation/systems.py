"""Building benchmark systems through fairseq's own code: the task, the model, the generator and the batches that
``fairseq-generate`` would use.

* :func:`prepare_quick_data` writes a fairseq data directory (a joined word dictionary padded to a realistic size,
  and the binarized split) from plain text, for the quick mode's random-weight models.
* :func:`build_model_systems` parses fairseq's own command line (``options.get_generation_parser`` plus the model
  flags), sets up the task, builds the model (random weights) or loads a checkpoint, and builds one generator per
  decoding with ``task.build_generator``; decoding calls ``task.inference_step`` as fairseq-generate does.
* :class:`LengthForcer` s make AR and NAR systems emit the same number of tokens in the quick mode (see
  :mod:`.registry`).
"""
import ast
import logging
import math
import os
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from .registry import Decoding, ModelSpec, Size

logger = logging.getLogger(__name__)

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------------------------
# quick-mode data


def synthetic_lines(n: int, min_len: int, max_len: int, vocab: int = 2000, seed: int = 1) -> List[str]:
    """``n`` sentences of random words ``w0 .. w{vocab-1}`` with lengths uniform in ``[min_len, max_len]``."""
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(vocab)}" for _ in range(rng.randint(min_len, max_len))) for _ in range(n)]


def prepare_quick_data(out_dir: str, source_lines: Sequence[str], target_lines: Optional[Sequence[str]],
                       src: str, tgt: str, vocab_size: int, split: str = "test") -> str:
    """Write ``dict.{src,tgt}.txt`` (one joined word-level dictionary: the words of the given lines, padded with
    fairseq's ``madeupwordNNNN`` symbols to ``vocab_size`` entries so that the output layer has a realistic size) and
    the binarized ``{split}.{src}-{tgt}.{src|tgt}.{bin,idx}``, as fairseq-preprocess does. Returns ``out_dir``."""
    from fairseq.data import Dictionary, indexed_dataset

    if target_lines is not None and len(target_lines) != len(source_lines):
        raise ValueError(f"{len(source_lines)} source lines but {len(target_lines)} target lines")
    os.makedirs(out_dir, exist_ok=True)
    d = Dictionary()
    for line in list(source_lines) + list(target_lines or []):
        for word in line.split():
            d.add_symbol(word)
    if len(d) > vocab_size:
        raise ValueError(f"the text has {len(d)} distinct words, more than --vocab-size {vocab_size}")
    i = 0
    while len(d) < vocab_size:
        d.add_symbol(f"madeupword{i:04d}")
        i += 1
    for lang in (src, tgt):
        d.save(os.path.join(out_dir, f"dict.{lang}.txt"))
    sides = [(src, source_lines)] + ([(tgt, target_lines)] if target_lines is not None else [])
    for lang, lines in sides:
        prefix = os.path.join(out_dir, f"{split}.{src}-{tgt}.{lang}")
        builder = indexed_dataset.make_builder(indexed_dataset.data_file_path(prefix), impl="mmap",
                                               vocab_size=len(d))
        for line in lines:
            builder.add_item(d.encode_line(line, add_if_not_exist=False, append_eos=True).long())
        builder.finalize(indexed_dataset.index_file_path(prefix))
    return out_dir


# ----------------------------------------------------------------------------------------------------------------
# output-length forcing (quick mode)


def content_lengths(tokens: torch.Tensor, dictionary) -> torch.Tensor:
    """Tokens per row that are not padding, ``<s>`` or ``</s>``."""
    special = tokens.eq(dictionary.pad()) | tokens.eq(dictionary.bos()) | tokens.eq(dictionary.eos())
    return (~special).sum(1)


def forced_lengths(sample, dictionary) -> torch.Tensor:
    """Per-sentence output lengths to force, ``(B,)``: the content tokens of each sentence's reference, or of its
    source if the data has no target side (at least 1)."""
    ref = sample.get("target")
    tokens = ref if ref is not None else sample["net_input"]["src_tokens"]
    return content_lengths(tokens, dictionary).clamp(min=1)


class LengthForcer:
    """Forces (``set(lengths)``, a ``(B,)`` tensor for the next batch) or frees (``set(None)``) the number of
    output tokens a system emits per sentence."""

    description = "not forced"
    forces = False  # whether set(lengths) really fixes the output length

    def set(self, lengths: Optional[torch.Tensor]) -> None:
        pass


class FramesLength(LengthForcer):
    description = "not forced: CTC decoder frames fixed by the source length"


def _forced_length_search_class():
    from fairseq.search import Search

    class ForcedLengthSearch(Search):
        """Wraps a ``SequenceGenerator``'s search: bans ``</s>`` before each sentence's forced length and allows only
        ``</s>`` from it on, per sentence (the same masking fairseq applies at ``max_len``, but per row). Follows the
        generator's batch shrinking through the ``prune_sentences`` hook; delegates everything else."""

        def __init__(self, inner, tgt_dict):
            super().__init__(tgt_dict)
            self.inner = inner
            self.supports_constraints = inner.supports_constraints
            self.stop_on_max_len = inner.stop_on_max_len
            self.lengths: Optional[torch.Tensor] = None
            self.current: Optional[torch.Tensor] = None

        def init_constraints(self, batch_constraints, beam_size: int):  # called once at the start of a batch
            self.current = self.lengths
            self.inner.init_constraints(batch_constraints, beam_size)

        def prune_sentences(self, batch_idxs):
            if self.current is not None:
                self.current = self.current[batch_idxs.to(self.current.device)]
            self.inner.prune_sentences(batch_idxs)

        def update_constraints(self, active_hypos):
            self.inner.update_constraints(active_hypos)

        def set_src_lengths(self, src_lengths):
            self.inner.set_src_lengths(src_lengths)

        def step(self, step, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None):
            if self.current is not None:  # lprobs: (bsz, beam, vocab)
                early = step < self.current
                lprobs[early, :, self.eos] = -math.inf
                done = ~early
                lprobs[done, :, : self.eos] = -math.inf
                lprobs[done, :, self.eos + 1:] = -math.inf
            return self.inner.step(step, lprobs, scores, prev_output_tokens, original_batch_idxs)

    return ForcedLengthSearch


class ARLength(LengthForcer):
    """Replaces the ``SequenceGenerator``'s search by a wrapper that makes sentence i end after exactly
    ``lengths[i]`` tokens (then ``</s>``), so that fairseq's batch shrinking works as with a trained model."""

    description = "forced per sentence: SequenceGenerator search masks </s>"
    forces = True

    def __init__(self, generator):
        self.generator = generator
        self.search = _forced_length_search_class()(generator.search, generator.tgt_dict)
        generator.search = self.search

    def set(self, lengths):
        if lengths is not None and int(lengths.max()) >= self.generator.max_len - 1:
            raise ValueError(f"forced length {int(lengths.max())} exceeds the model's maximum output length")
        if lengths is not None:
            g = self.generator
            g.max_len_a, g.max_len_b = 0, max(g.max_len_b, int(lengths.max()) + 1)
        self.search.lengths = lengths


class _ReplacedLength(LengthForcer):
    """Installs itself in place of ``owner.method`` (a length predictor), which still runs (so its cost stays in the
    timing); :meth:`replace` then swaps its answer for the forced lengths ``+ 2`` (``<s>`` and ``</s>``, as
    fairseq's NAT models count)."""

    forces = True

    def __init__(self, owner, method: str):
        self.original = getattr(owner, method)
        self.lengths = None
        setattr(owner, method, self)

    def replace(self, predicted):
        if self.lengths is None:
            return predicted
        if self.lengths.shape != predicted.shape:
            raise ValueError(f"forced lengths {tuple(self.lengths.shape)} for a batch of {tuple(predicted.shape)}")
        return (self.lengths + 2).to(device=predicted.device, dtype=predicted.dtype)

    def set(self, lengths):
        self.lengths = lengths


class PredictedLength(_ReplacedLength):
    """A fairseq NAT decoder's ``forward_length_prediction``, overridden at generation (not when it is given
    the gold target)."""

    description = "forced per sentence: length prediction overridden"

    def __init__(self, decoder):
        super().__init__(decoder, "forward_length_prediction")

    def __call__(self, length_out, encoder_out, tgt_tokens=None):
        predicted = self.original(length_out, encoder_out, tgt_tokens)
        return predicted if tgt_tokens is not None else self.replace(predicted)


class ClassifiedLength(_ReplacedLength):
    """The ``predict`` of a :class:`~fairseq_nar_plugins.modules.nat.length_predictor.LengthClassifier` at
    ``model.decoder.length`` (BnB with ``--length-mode lc``), overridden."""

    description = "forced per sentence: length classification overridden"

    def __init__(self, classifier):
        super().__init__(classifier, "predict")

    def __call__(self, *args, **kwargs):
        return self.replace(self.original(*args, **kwargs))


class CanvasLength(LengthForcer):
    """A length-free canvas decoder (ELMER: the output ends at the first ``</s>``): ``model.force_output_lengths``
    gives each sentence a canvas of the forced length + 1 and keeps its first ``length`` predictions."""

    description = "forced per sentence: canvas of length + 1, </s> banned before the end"
    forces = True

    def __init__(self, model):
        if not hasattr(model, "force_output_lengths"):
            raise ValueError(f"{type(model).__name__} has no force_output_lengths")
        self.model = model

    def set(self, lengths):
        self.model.force_output_lengths(lengths)


def make_length_forcer(spec: ModelSpec, model, generator) -> LengthForcer:
    control = spec.length_control
    if callable(control):
        return control(model, generator)
    if control == "ar":
        return ARLength(generator)
    if control == "frames":
        return FramesLength()
    if control == "canvas":
        return CanvasLength(model)
    if control == "length_predictor":
        decoder = getattr(model, "decoder", None)
        if decoder is None or not hasattr(decoder, "forward_length_prediction"):
            raise ValueError(f"{spec.name}: length_control='length_predictor' but the decoder has no "
                             "forward_length_prediction")
        existing = decoder.forward_length_prediction
        return existing if isinstance(existing, PredictedLength) else PredictedLength(decoder)
    if control == "length_classifier":
        classifier = getattr(getattr(model, "decoder", None), "length", None)
        if classifier is None or not hasattr(classifier, "predict"):
            raise ValueError(f"{spec.name}: length_control='length_classifier' but model.decoder.length has no "
                             "predict")
        existing = classifier.predict
        return existing if isinstance(existing, ClassifiedLength) else ClassifiedLength(classifier)
    raise ValueError(f"{spec.name}: unknown length_control {control!r}")


# ----------------------------------------------------------------------------------------------------------------
# systems


@dataclass
class System:
    spec: ModelSpec
    decoding: Decoding
    task: object
    model: torch.nn.Module
    generator: object
    cfg: object
    forcer: LengthForcer
    device: str = "cpu"
    label: Optional[str] = None  # tells apart several checkpoints of one model, e.g. "lc-minilm-distilled"
    autocast_bf16: bool = False  # decode under torch.autocast(bfloat16), as the NAR tasks' --autocast-bf16 does

    @property
    def model_name(self) -> str:
        """The registered model's name, with ``@label`` when one was given."""
        return f"{self.spec.name}@{self.label}" if self.label else self.spec.name

    @property
    def name(self) -> str:
        return f"{self.model_name} {self.decoding.label}"

    @property
    def kind(self) -> str:
        return self.spec.kind

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def dataset(self, split: str):
        return self.task.dataset(split)

    def to_device(self, sample):
        if self.device == "cpu":
            return sample
        from fairseq import utils

        return utils.move_to_cuda(sample, device=torch.device(self.device))

    def activate(self) -> None:
        """Ready the model for this system's decoding. fairseq-generate builds a model per run; here the decodings
        of a model share it, so per-decoding model state is reset before each use: the beam size of models with
        beamable encoder-decoder attention (``set_beam_size``, e.g. BART), which a beam generator sets at its
        construction and a greedy one never resets; and, for models with ``apply_model_overrides`` (ELMER), the
        decoding's ``--model-overrides``."""
        beam = getattr(self.generator, "beam_size", None)
        if beam is not None and hasattr(self.model, "set_beam_size"):
            self.model.set_beam_size(beam)
        # generation settings a model takes at run time (ELMER's exit threshold): each decoding's own
        # --model-overrides, so that decodings of one loaded model differ as separate fairseq-generate runs would
        if hasattr(self.model, "apply_model_overrides"):
            overrides = getattr(getattr(self.cfg, "common_eval", None), "model_overrides", None) or "{}"
            self.model.apply_model_overrides(ast.literal_eval(overrides))

    def inference(self, sample):
        """What fairseq-generate times: ``task.inference_step(generator, models, sample)``; with ``autocast_bf16``
        under ``torch.autocast(bfloat16)`` on the system's device, whatever the task (fairseq's ``translation``
        has no such flag, so the AR baseline is autocast here the same way as the NAR systems)."""
        from ..tasks.autocast import bf16_generation

        if not self.autocast_bf16:
            return self.task.inference_step(self.generator, [self.model], sample)
        with bf16_generation(self.model):
            return self.task.inference_step(self.generator, [self.model], sample)

    def batches_by_ids(self, split: str, ids: Sequence[int]):
        """One batch per sentence id (batch size 1), collated by the dataset as fairseq's iterator does."""
        dataset = self.dataset(split)
        return [self.to_device(dataset.collater([dataset[int(i)]])) for i in ids]

    def batches(self, split: str, max_tokens: Optional[int], max_sentences: Optional[int]):
        """All batches of ``split`` as fairseq-generate builds them (``--required-batch-size-multiple 1``); refuses a
        batching that drops a sentence."""
        from fairseq import utils

        dataset = self.dataset(split)
        itr = self.task.get_batch_iterator(
            dataset=dataset, max_tokens=max_tokens, max_sentences=max_sentences,
            max_positions=utils.resolve_max_positions(self.task.max_positions(), self.model.max_positions()),
            ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1, num_shards=1, shard_id=0,
            num_workers=0,
        ).next_epoch_itr(shuffle=False)
        batches = [self.to_device(b) for b in itr if "net_input" in b]
        n = sum(len(b["id"]) for b in batches)
        if n != len(dataset):
            raise RuntimeError(f"{self.name}: the batch iterator yields {n} of {len(dataset)} sentences")
        return batches


def _base_argv(spec: ModelSpec, data_dir: str, src: str, tgt: str, split: str, device: str) -> List[str]:
    argv = [data_dir, "--task", spec.task, *spec.task_args, "--source-lang", src, "--target-lang", tgt,
            "--gen-subset", split, "--seed", "1", "--required-batch-size-multiple", "1"]
    if device == "cpu":
        argv.append("--cpu")
    if spec.user_dir:
        argv += ["--user-dir", PLUGIN_DIR]
    return argv


def _parse(argv: List[str], with_model: bool):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_generation_parser()
    if with_model:
        options.add_model_args(parser)
    args = options.parse_args_and_arch(parser, argv)
    return convert_namespace_to_omegaconf(args)


def build_model_systems(spec: ModelSpec, data_dir: str, src: str, tgt: str, split: str,
                        size: Optional[Size] = None, checkpoint: Optional[str] = None,
                        extra_args: Sequence[str] = (), device: str = "cpu", force_lengths: bool = False,
                        label: Optional[str] = None, autocast_bf16: bool = False) -> List[System]:
    """One :class:`System` per decoding of ``spec``, sharing one task and one model.

    Without ``checkpoint`` the model is built with random weights from ``spec.arch``, ``spec.model_args`` and the
    ``size`` flags; with it, the model (and its architecture) come from the checkpoint, as fairseq-generate loads
    it. ``extra_args``: more fairseq flags for every system (e.g. ``--bpe sentencepiece --sentencepiece-model M``).
    ``force_lengths``: install the model's :class:`LengthForcer` (quick mode); otherwise generators stay exactly as
    ``task.build_generator`` made them.
    ``autocast_bf16``: every decoding runs under ``torch.autocast(bfloat16)`` (:meth:`System.inference`).
    """
    from fairseq import checkpoint_utils, tasks

    base = _base_argv(spec, data_dir, src, tgt, split, device) + list(extra_args)
    if checkpoint is None:
        if size is None:
            raise ValueError("random-weight models need a size")
        model_argv = ["--arch", spec.arch, "--share-all-embeddings", *size.args(), *spec.model_args]
        cfg = _parse(base + model_argv + list(spec.decodings[0].args), with_model=True)
        task = tasks.setup_task(cfg.task)
        torch.manual_seed(1)
        model = task.build_model(cfg.model)
        task.load_dataset(split)
    else:
        cfg = _parse(base + ["--path", checkpoint] + list(spec.decodings[0].args), with_model=False)
        task = tasks.setup_task(cfg.task)
        # --model-overrides as fairseq-generate applies them (e.g. DEER's "{'prune_size':0.5}")
        overrides = {**ast.literal_eval(cfg.common_eval.model_overrides or "{}"), "data": data_dir}
        models, saved_cfg = checkpoint_utils.load_model_ensemble([checkpoint], arg_overrides=overrides, task=task)
        model = models[0]
        task.load_dataset(split, task_cfg=saved_cfg.task)
    if device != "cpu":
        model = model.to(device)
    model.prepare_for_inference_(cfg)
    model.eval()
    systems = []
    for decoding in spec.decodings:
        dcfg = cfg if decoding is spec.decodings[0] else _parse(
            base + (["--path", checkpoint] if checkpoint else ["--arch", spec.arch]) + list(decoding.args),
            with_model=checkpoint is None)
        generator = task.build_generator([model], dcfg.generation)
        forcer = make_length_forcer(spec, model, generator) if force_lengths else LengthForcer()
        systems.append(System(spec, decoding, task, model, generator, dcfg, forcer, device, label, autocast_bf16))
    return systems
