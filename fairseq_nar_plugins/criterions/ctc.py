"""Criterion ``ctc``: CTC loss for non-autoregressive decoders, on top of fairseq's ``nat_loss``.

A model's ``forward`` returns named loss terms, as for ``nat_loss``. A term carrying ``"ctc": True`` is scored with CTC::

    {"word_ins": {"ctc": True,
                  "out": logits (B, F, V) over decoder frames,
                  "out_mask": bool (B, F), True at real (non-padding) frames,
                  "tgt": target ids (B, L) without <s>/</s>, padded with <pad>,
                  "blank": index of the blank symbol,
                  "nll_loss": True, "factor": 1.0}}

Every other term (length classification, Levenshtein placeholder/insertion/deletion, custom ``"loss"`` terms) goes
through ``nat_loss`` unchanged, so models can mix CTC with fairseq's NAT objectives.

Normalisation (``--ctc-normalization``): ``frames`` (default) is the DEER authors' form (likelihood per frame of the
batch, label smoothing as the mean ``-log p`` over real frames); ``target_length`` follows ``nat_loss``: each term is a
per-token mean (the CTC negative log-likelihood of a sentence is divided by its target length, then averaged over
sentences); see :func:`..modules.ctc.ctc_utils.ctc_objective`. The default was chosen by an A/B on Multi30k (BnB-CTC
warm-started from the AR teacher, distilled data, same seed and batches): validation sacreBLEU 15.44 / 23.91 after
200 / 400 updates with ``frames`` against 14.51 / 23.29 with ``target_length`` (docs/bnb.md). ``sample_size`` is 1.
Sentences whose target cannot be aligned get an infinite loss; they contribute zero loss and zero gradient and are
counted in the ``ctc_inf`` stat (in training the ``translation_lev_ctc`` task has already skipped them, so a non-zero
count there means a bug).

Weights and smoothing of the other terms: a term's ``factor`` multiplies its loss, custom ``"loss"`` terms included
(fairseq's ``nat_loss`` drops the factor of custom terms; DEER's ``prune_reg`` needs it: ``--prune-lambda``). The
logged value of each term is its loss before the factor. A non-CTC term without its own ``"ls"`` gets no label
smoothing, as in ``nat_loss`` (Levenshtein Transformer's ``word_del``), unless ``--label-smoothing-all-terms``.
"""
from dataclasses import dataclass, field

from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.nat_loss import (
    LabelSmoothedDualImitationCriterion,
    LabelSmoothedDualImitationCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics

from ..modules.ctc.ctc_utils import CTC_NORMALIZATIONS, ctc_objective


@dataclass
class CTCCriterionConfig(LabelSmoothedDualImitationCriterionConfig):
    """``--label-smoothing`` applies to CTC terms (and, with ``--label-smoothing-all-terms``, to other terms that do
    not set their own ``ls``)."""

    ctc_normalization: ChoiceEnum(CTC_NORMALIZATIONS) = field(
        default="frames",
        metadata={"help": "how CTC terms are normalised: 'frames' (default; the DEER authors' form: the batch's "
                  "summed CTC loss divided by its real frames, times 1 - eps, plus eps times the mean -log p over "
                  "real frames and symbols) or 'target_length' (each sentence's CTC loss, label smoothing included, "
                  "divided by its target length, then averaged over sentences: fairseq nat_loss's per-token mean; "
                  "the default before 2026-12)"},
    )
    label_smoothing_all_terms: bool = field(
        default=False,
        metadata={"help": "also apply --label-smoothing to non-CTC terms that do not set their own (DEER's "
                  "word_del and word_del_ctc, a length term); by default they get none, as in fairseq's nat_loss "
                  "and Levenshtein Transformer"},
    )


def _take_over_criterion_name(name: str) -> None:
    """fairseq itself registers a speech-recognition criterion under ``ctc`` (``fairseq.criterions.ctc``, for
    wav2vec-style ASR models). The brief of this plugin asks for ``--criterion ctc`` to mean CTC for NAT text
    generation, so while the plugin is loaded the name points here; fairseq's speech class stays importable as
    ``fairseq.criterions.ctc.CtcCriterion``."""
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY, CRITERION_REGISTRY

    existing = CRITERION_REGISTRY.get(name)
    if existing is not None and existing.__module__ != __name__:
        CRITERION_REGISTRY.pop(name)
        CRITERION_DATACLASS_REGISTRY.pop(name, None)


_take_over_criterion_name("ctc")


@register_criterion("ctc", dataclass=CTCCriterionConfig)
class CTCCriterion(LabelSmoothedDualImitationCriterion):
    def __init__(self, task, label_smoothing, ctc_normalization="frames", label_smoothing_all_terms=False):
        super().__init__(task, label_smoothing)
        if ctc_normalization not in CTC_NORMALIZATIONS:
            raise ValueError(f"--ctc-normalization {ctc_normalization!r}: expected one of "
                             f"{', '.join(CTC_NORMALIZATIONS)}")
        self.ctc_normalization = ctc_normalization
        self.label_smoothing_all_terms = label_smoothing_all_terms

    def _compute_ctc_loss(self, term, name):
        lprobs = utils.log_softmax(term["out"], dim=-1)
        targets = term["tgt"]
        loss, nll, infinite = ctc_objective(
            lprobs,
            frame_padding_mask=~term["out_mask"],
            targets=targets,
            target_padding_mask=targets.eq(self.padding_idx),
            blank=term["blank"],
            label_smoothing=self.label_smoothing,
            normalization=self.ctc_normalization,
        )
        factor = term.get("factor", 1.0)
        return {
            "name": name,
            "loss": loss * factor,
            "unweighted": loss,
            "nll_loss": nll,
            "factor": factor,
            "ctc_inf": int(infinite.sum()),
        }

    def forward(self, model, sample, reduce=True):
        nsentences, ntokens = sample["nsentences"], sample["ntokens"]
        src_tokens = sample["net_input"]["src_tokens"]
        src_lengths = sample["net_input"]["src_lengths"]
        outputs = model(src_tokens, src_lengths, sample.get("prev_target"), sample["target"])

        losses, nll_losses, n_inf = [], [], 0
        for name, term in outputs.items():
            if term.get("ctc", False):
                result = self._compute_ctc_loss(term, name + "-loss")
                n_inf += result["ctc_inf"]
            elif term.get("loss", None) is None:
                result = self._compute_loss(
                    term.get("out"), term.get("tgt"), term.get("mask", None),
                    term.get("ls", self.label_smoothing if self.label_smoothing_all_terms else 0.0),
                    name=name + "-loss", factor=term.get("factor", 1.0),
                )
            else:  # nat_loss's _custom_loss ignores the factor: apply it here
                factor = term.get("factor", 1.0)
                result = self._custom_loss(term["loss"] * factor, name=name + "-loss", factor=factor)
                result["unweighted"] = term["loss"]
            losses.append(result)
            if term.get("nll_loss", False):
                nll_losses.append(result.get("nll_loss", 0.0))

        loss = sum(r["loss"] for r in losses)
        nll_loss = sum(nll_losses) if nll_losses else loss.new_tensor(0)
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": 1,
            "ctc_inf": n_inf,
        }
        for r in losses:
            unweighted = r["unweighted"] if "unweighted" in r else r["loss"] / r["factor"]
            logging_output[r["name"]] = utils.item(unweighted.data)
        return loss, 1, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        LabelSmoothedDualImitationCriterion.reduce_metrics(logging_outputs)
        n_inf = sum(log.get("ctc_inf", 0) for log in logging_outputs)
        metrics.log_scalar_sum("ctc_inf", n_inf, round=0)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

