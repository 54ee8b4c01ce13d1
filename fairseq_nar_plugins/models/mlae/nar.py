"""MLAE non-autoregressive fine-tuning: the model ``mlae_cmlm`` (``mlae_cmlm_12_4`` ... ``mlae_cmlm_tiny``), a
conditional masked language model (CMLM, Ghazvininejad et al. 2019, arXiv:1904.09324) on MLAE's weights (§3.4, §4.4).

* Encoder: the MLAE encoder over the whole source (``<s>`` prepended when missing).
* Decoder: the MLAE decoder (bidirectional self-attention, cross-attention to the encoder: pretrained with
  ``--mlae-cross-attention``, else copied from each layer's self-attention) over the target with some tokens replaced
  by the **pretraining's** ``[MASK]``: fairseq's ``translation_lev --noise random_mask`` masks ``k ~ U{1..n}`` of the
  ``n`` target tokens with ``<unk>`` ("the number of the masked tokens is sampled from a uniform distribution between
  one and the maximum sequences' length"), and the model maps ``<unk>`` to ``[MASK]`` ("we replace the unknown tokens
  with the masked tokens used in the pre-training"). Loss (``nat_loss`` ``word_ins``) on the masked positions.
* Length: CMLM's length classification (``LengthClassifier`` at ``decoder.length`` over the mean-pooled encoder
  states, 256 classes, ``nat_loss`` ``length`` term weighted by ``--length-loss-factor``, default 0.1).
* Decoding (``IterativeRefinementGenerator``): the predicted length (capped at ``--max-length-ratio`` x source +
  ``--max-length-offset``), a canvas ``[<s> [MASK]... </s>]``, then mask-predict
  (:mod:`~fairseq_nar_plugins.modules.nat.mask_predict`) for ``--iter-decode-max-iter + 1`` steps (paper: at most 10;
  decode with ``--iter-decode-force-max-iter``), consecutive repeats merged at the last step (``--no-merge-repeats``
  to keep them); ``--iter-decode-with-beam K`` decodes K lengths around the prediction and keeps the best.

Train: ``fairseq-train DATA --task translation_lev --noise random_mask --criterion nat_loss --arch mlae_cmlm_small
--init-from-mlae PRETRAIN/checkpoint_last.pt``; decode: ``fairseq-generate DATA --task translation_lev
--iter-decode-max-iter 9 --iter-decode-force-max-iter``.
"""
import logging

from fairseq.models import FairseqEncoderDecoderModel, register_model, register_model_architecture

from ...modules.ctc.ctc_generation import placeholder_rows
from ...modules.nat.length_predictor import LengthClassifier
from ...modules.nat.mask_predict import mask_predict_update
from ..bnb import DEFAULT_MAX_LENGTH_OFFSET, DEFAULT_MAX_LENGTH_RATIO
from .checkpoint import MLAECheckpoint
from .common import (
    MLAEEncoder,
    add_mlae_args,
    build_decoder_backbone,
    build_encoder_backbone,
    prepare_dictionaries,
    register_sizes,
    source_lengths,
)
from .pretrain import MLAEDecoder

logger = logging.getLogger(__name__)


class MLAECMLMDecoder(MLAEDecoder):
    """The MLAE decoder over partially masked targets, with CMLM's length classifier."""

    def __init__(self, args, dictionary, backbone, lm_head_state=None):
        super().__init__(dictionary, backbone, lm_head_state)
        self.length = LengthClassifier(backbone.embed_dim, args.max_length_classes, args.pred_length_offset)
        self.length_loss_factor = args.length_loss_factor
        self.max_length_ratio = args.max_length_ratio
        self.max_length_offset = args.max_length_offset
        self.merge_repeats = not args.no_merge_repeats

    def forward_length(self, encoder_out):
        """Length logits ``(B, max_length_classes)`` from the mean-pooled encoder states."""
        return self.length(encoder_out["encoder_out"], encoder_out["encoder_padding_mask"])


@register_model("mlae_cmlm")
class MLAECMLMModel(FairseqEncoderDecoderModel):
    """MLAE + CMLM mask-predict; see the module docstring."""

    def __init__(self, args, encoder: MLAEEncoder, decoder: MLAECMLMDecoder, mask_idx: int):
        super().__init__(encoder, decoder)
        self.args = args
        d = decoder.dictionary
        self.bos, self.eos, self.pad, self.unk = d.bos(), d.eos(), d.pad(), d.unk()
        self.mask_idx = mask_idx

    @staticmethod
    def add_args(parser):
        add_mlae_args(parser)
        parser.add_argument("--max-length-classes", type=int, metavar="N",
                            help="classes of the length classifier: the longest predictable target (CMLM: 256)")
        parser.add_argument("--pred-length-offset", action="store_true",
                            help="classify len(target) - len(source) instead of len(target)")
        parser.add_argument("--length-loss-factor", type=float, metavar="W",
                            help="weight of the length classification loss (CMLM: 0.1)")
        parser.add_argument("--max-length-ratio", type=float, metavar="A",
                            help="generation: predicted lengths (with <s> and </s>) are at most A x source length + "
                            f"--max-length-offset (default {DEFAULT_MAX_LENGTH_RATIO})")
        parser.add_argument("--max-length-offset", type=float, metavar="B",
                            help=f"the B of --max-length-ratio (default {DEFAULT_MAX_LENGTH_OFFSET})")
        parser.add_argument("--no-merge-repeats", action="store_true",
                            help="keep consecutive repeated tokens in the final output (MLAE merges them, §4.4; "
                            "at generation: --model-overrides \"{'no_merge_repeats': True}\")")

    @classmethod
    def build_model(cls, args, task):
        mlae_cmlm_12_4(args)
        checkpoint = MLAECheckpoint(args.init_from_mlae) if args.init_from_mlae else None
        if checkpoint:
            checkpoint.configure(args, decoder_cross_attention=True)
        mask_idx = prepare_dictionaries(task, args.mlae_mask_symbol)
        dictionary = task.target_dictionary
        if checkpoint:
            checkpoint.check_vocabulary(dictionary)
        enc_backbone, lm_head = build_encoder_backbone(args, dictionary)
        dec_backbone, dec_lm_head = build_decoder_backbone(args, dictionary, enc_backbone.cfg, True)
        dec_backbone.embeddings.embed_tokens = enc_backbone.embeddings.embed_tokens
        model = cls(args, MLAEEncoder(dictionary, enc_backbone),
                    MLAECMLMDecoder(args, dictionary, dec_backbone, dec_lm_head or lm_head), mask_idx)
        if checkpoint:
            checkpoint.load_into(model, args.cross_attention_init)
        args.pretrained_encoder = args.pretrained_decoder = args.init_from_mlae = None
        return model

    def max_positions(self):
        return (self.encoder.max_positions(), self.decoder.max_positions())

    @property
    def allow_length_beam(self):
        return True

    @property
    def allow_ensemble(self):
        return False

    # ---------------------------------------------------------------------------------------------- training
    def decoder_tokens(self, prev_output_tokens):
        """``(tokens, masked)``: ``prev_output_tokens`` with ``<unk>`` (fairseq's NAT mask) replaced by the
        pretraining mask id, and where the masks are ``(B, T)``."""
        masked = prev_output_tokens.eq(self.unk) | prev_output_tokens.eq(self.mask_idx)
        return prev_output_tokens.masked_fill(masked, self.mask_idx), masked

    def forward(self, src_tokens, src_lengths, prev_output_tokens, tgt_tokens, **kwargs):
        """``nat_loss`` terms: ``word_ins`` (logits ``(B, T, V)``, loss on the masked positions) and ``length``."""
        encoder_out = self.encoder(src_tokens, src_lengths)
        tokens, masked = self.decoder_tokens(prev_output_tokens)
        logits = self.decoder(tokens, encoder_out)
        length_out = self.decoder.forward_length(encoder_out)
        tgt_lengths = tgt_tokens.ne(self.pad).sum(1)
        return {
            "word_ins": {"out": logits, "tgt": tgt_tokens, "mask": masked,
                         "ls": getattr(self.args, "label_smoothing", 0.0), "nll_loss": True},
            "length": {"out": length_out, "tgt": self.decoder.length.target(tgt_lengths, source_lengths(encoder_out)),
                       "factor": self.decoder.length_loss_factor},
        }

    # -------------------------------------------------------------------------------------------- generation
    def forward_encoder(self, encoder_inputs):
        return self.encoder(*encoder_inputs)

    def initialize_output_tokens(self, encoder_out, src_tokens):
        """``[<s>, [MASK] x (L - 2), </s>]`` rows of the predicted lengths ``L``."""
        lengths = self.decoder.length.predict(self.decoder.forward_length(encoder_out), source_lengths(encoder_out),
                                              max_ratio=self.decoder.max_length_ratio,
                                              max_offset=self.decoder.max_length_offset)
        return placeholder_rows(lengths, src_tokens, self.bos, self.eos, self.pad, self.mask_idx,
                                encoder_out["encoder_out"].dtype)

    def regenerate_length_beam(self, decoder_out, beam_size):
        """``beam_size`` canvases per sentence, of lengths ``L - beam_size // 2 ... `` around its ``L`` (at least 2),
        filled with the mask id (fairseq's version fills ``<unk>``)."""
        lengths = decoder_out.output_tokens.ne(self.pad).sum(1)
        offsets = decoder_out.output_tokens.new_tensor(range(beam_size)) - beam_size // 2
        lengths = (lengths[:, None] + offsets[None, :]).view(-1).clamp(min=2)
        rows = placeholder_rows(lengths, decoder_out.output_tokens, self.bos, self.eos, self.pad, self.mask_idx,
                                decoder_out.output_scores.dtype)
        return decoder_out._replace(output_tokens=rows.output_tokens, output_scores=rows.output_scores)

    def forward_decoder(self, decoder_out, encoder_out, decoding_format=None, **kwargs):
        """One mask-predict step (:func:`~fairseq_nar_plugins.modules.nat.mask_predict.mask_predict_update`)."""
        lprobs = self.decoder(decoder_out.output_tokens, encoder_out, normalize=True)
        tokens, scores = mask_predict_update(
            decoder_out.output_tokens, decoder_out.output_scores, lprobs, decoder_out.step, decoder_out.max_step,
            self.mask_idx, self.pad, self.bos, self.eos, banned=(self.unk,), merge=self.decoder.merge_repeats)
        history = decoder_out.history
        if history is not None:
            history.append(tokens.clone())
        return decoder_out._replace(output_tokens=tokens, output_scores=scores, attn=None, history=history)


def mlae_cmlm_defaults(args):
    for name, default in (("max_length_classes", 256), ("length_loss_factor", 0.1),
                          ("max_length_ratio", DEFAULT_MAX_LENGTH_RATIO),
                          ("max_length_offset", DEFAULT_MAX_LENGTH_OFFSET)):
        if getattr(args, name, None) is None:
            setattr(args, name, default)
    args.pred_length_offset = getattr(args, "pred_length_offset", False)
    args.no_merge_repeats = getattr(args, "no_merge_repeats", False)


ARCHS = register_sizes("mlae_cmlm", register_model_architecture, mlae_cmlm_defaults,
                       " CMLM mask-predict fine-tuning.")
mlae_cmlm_12_4 = ARCHS["12_4"]
