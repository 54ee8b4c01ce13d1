"""Criterion ``layer_permutation``: the training objectives of ELMER (Li et al. 2022, arXiv:2210.13304), led by its
Layer Permutation LM (LPLM, Eq. 9).

For a model with ``--exit-mode lplm`` (``models/elmer.py``), every target position of every sequence gets an exit
layer drawn uniformly from ``1..L``, ``--lplm-samples`` K times per sequence (K exit-layer permutations; the paper's
k = 10), and its cross-entropy is taken from the off-ramp of that layer, the states of exited tokens copied upward.
The loss is the mean over the K samples, i.e. a Monte-Carlo estimate of the expected Eq. 9 loss over permutations.
Exit draws use torch's global generator in training (fairseq's trainer reseeds it with ``seed + num_updates`` before
each update: identical on every rank and after resuming) and, in validation, a generator seeded by the batch's
sentence ids, so that validation losses are comparable across epochs.

The other exit modes are trained by the same criterion (it reads the model's terms): ``hard`` (entropy-chosen exits,
loss at the exit layer or up to it), ``soft`` (mean of the L layers' losses), ``last`` (last layer only).

Loss: ``sum_rows w * CE`` with fairseq's label smoothing (``--label-smoothing``), ``sample_size = sum_rows w``,
where the weights make every supervised canvas position count once (``1/K`` per sample, ``1/L`` per layer in soft
mode, ``--eos-fill-weight`` at the positions after the end). Logged, besides ``loss`` / ``nll_loss`` (bits):

* ``loss_l{l}``: the mean NLL (bits) of the rows scored at layer ``l`` (per exit layer for lplm/hard, per layer for
  soft);
* ``exit_l{l}``: the share of supervised positions that exited at layer ``l`` (lplm: the sampled exits, uniform by
  construction; hard: the entropy rule's choice), and ``exit_mean``, the mean exit layer;
* ``canvas_overflow``: rows skipped because their target did not fit the canvas (see ``--canvas-max-length``).
"""
import math
from dataclasses import dataclass, field

import torch
from fairseq import utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics


@dataclass
class LayerPermutationConfig(FairseqDataclass):
    lplm_samples: int = field(
        default=10,
        metadata={"help": "exit-layer permutations K drawn per sequence per update for --exit-mode lplm (the paper's "
                  "k = 10): the decoder runs on K copies of the batch (the encoder once), so memory and decoder "
                  "time grow with K"},
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "epsilon for label smoothing (fairseq's), 0 means none"},
    )


@register_criterion("layer_permutation", dataclass=LayerPermutationConfig)
class LayerPermutationCriterion(FairseqCriterion):
    def __init__(self, task, lplm_samples=10, label_smoothing=0.0):
        super().__init__(task)
        if lplm_samples < 1:
            raise ValueError(f"--lplm-samples must be >= 1, got {lplm_samples}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"--label-smoothing must lie in [0, 1), got {label_smoothing}")
        self.lplm_samples = lplm_samples
        self.label_smoothing = label_smoothing

    def forward(self, model, sample, reduce=True):
        net = sample["net_input"]
        generator = None
        if not model.training:  # validation draws depend on the batch only
            generator = torch.Generator().manual_seed(int(sample["id"].sum()) + 7919 * len(sample["id"]))
        if not hasattr(model, "exit_mode"):
            raise ValueError(f"--criterion layer_permutation trains ELMER models (--arch elmer_*), not "
                             f"{type(model).__name__}")
        out = model(net["src_tokens"], net["src_lengths"], net.get("prev_output_tokens"), sample["target"],
                    full_target=sample.get("full_target"), lplm_samples=self.lplm_samples, generator=generator)
        lprobs = utils.log_softmax(out["logits"], dim=-1)
        loss_rows, nll_rows = label_smoothed_nll_loss(lprobs, out["target"], self.label_smoothing, reduce=False)
        weight = out["weight"].to(loss_rows)
        loss = (loss_rows * weight).sum()
        sample_size = float(weight.sum())
        logging_output = {
            "loss": loss.data,
            "nll_loss": (nll_rows.detach() * weight).sum(),
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
            "canvas_overflow": out["canvas_overflow"],
            "canvas_rows": out["rows"],
        }
        layers = out["layer"]
        for layer in range(1, out["num_layers"] + 1):
            rows = layers.eq(layer)
            logging_output[f"layer_nll_{layer}"] = float((nll_rows.detach() * weight)[rows].sum())
            logging_output[f"layer_w_{layer}"] = float(weight[rows].sum())
        exits = out.get("exit_layers")
        if exits is not None:
            counts = torch.bincount(exits, minlength=out["num_layers"] + 1)[1:].tolist()
            for layer, count in enumerate(counts, 1):
                logging_output[f"exit_n_{layer}"] = count
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        sample_size = total("sample_size")
        denom = max(sample_size, 1e-8) * math.log(2)
        metrics.log_scalar("loss", total("loss") / denom, sample_size, round=3)
        metrics.log_scalar("nll_loss", total("nll_loss") / denom, sample_size, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
        keys = set().union(*(log.keys() for log in logging_outputs)) if logging_outputs else set()
        layers = sorted(int(k.rsplit("_", 1)[1]) for k in keys if k.startswith("layer_w_"))
        for layer in layers:
            w = total(f"layer_w_{layer}")
            if w > 0:
                metrics.log_scalar(f"loss_l{layer}", total(f"layer_nll_{layer}") / w / math.log(2), w, round=3)
        exit_layers = sorted(int(k.rsplit("_", 1)[1]) for k in keys if k.startswith("exit_n_"))
        n_exits = sum(total(f"exit_n_{layer}") for layer in exit_layers)
        if n_exits > 0:
            for layer in exit_layers:
                metrics.log_scalar(f"exit_l{layer}", total(f"exit_n_{layer}") / n_exits, n_exits, round=3)
            mean = sum(layer * total(f"exit_n_{layer}") for layer in exit_layers) / n_exits
            metrics.log_scalar("exit_mean", mean, n_exits, round=3)
        metrics.log_scalar_sum("canvas_overflow", total("canvas_overflow"), round=0)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
