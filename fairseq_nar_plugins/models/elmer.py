"""ELMER: a non-autoregressive encoder-decoder whose tokens exit at different decoder layers, pretrained with the
Layer Permutation LM.

This file implements:
Li, Junyi, Tianyi Tang, Wayne Xin Zhao, Jian-Yun Nie and Ji-Rong Wen.
"ELMER: A Non-Autoregressive Pre-trained Language Model for Efficient and Effective Text Generation."
EMNLP 2022, arXiv:2210.13304. Equation and section numbers below are the paper's.

* Encoder: the BERT-family backbone (:mod:`..modules.backbone.bert_backbone`), bidirectional, over the source.
* Decoder (section 4.1): the same layers with cross-attention to the encoder and *bidirectional* self-attention.
  Its input is a canvas of ``[MASK]`` embeddings plus positions (Eq. 5; never target tokens). The canvas length
  comes from the source alone by ``--canvas-ratio/--canvas-offset/--canvas-max-length``, in training and at
  generation alike (:mod:`..modules.exits.canvas`); position ``i`` predicts target token ``i + 1``, then ``</s>``;
  the output ends at the first ``</s>`` (no length predictor). A training target longer than its canvas has no
  labelling under the rule: its row is skipped, counted (``canvas_overflow`` in the logs) and training stops when
  more than ``--max-canvas-overflow-fraction`` of the rows seen so far did not fit.
* Off-ramps at every decoder layer (Eq. 7-8), shared or independent (``--off-ramps``), projections tied to the
  decoder embeddings (:mod:`..modules.exits.off_ramps`). A token that exits at layer ``l`` keeps ``h^l``; upper
  layers read it as key/value without updating it (``--no-detach-exited`` lets gradient through those copies).
* ``--exit-mode`` is both the training objective (with ``--criterion layer_permutation``) and the decoding rule:

  ==========  ========================================================  =============================================
  mode        training                                                  decoding
  ==========  ========================================================  =============================================
  ``lplm``    Layer Permutation LM (Eq. 9): exit layers drawn uniformly  hard exit
              per token, ``--lplm-samples`` K permutations per
              sequence (criterion flag), loss at each exit layer
  ``hard``    exits chosen by the entropy rule (Eq. 10) during          entropy < ``--exit-threshold`` (default 0.5;
              training, loss at the exit layer (``--hard-exit-loss      ``--model-overrides "{'exit_threshold': D}"``)
              exit``) or at every layer up to it (``upto``)
  ``soft``    every layer predicts, its argmax embedding is fused into  the last layer's argmax
              the next layer's input (Eq. 11-12); mean of the L
              layers' losses
  ``last``    the plain NAR decoder: loss at the last layer only        the last layer (no exits)
  ==========  ========================================================  =============================================

  Hard exit saves real compute: the layer loop stops when every token has exited, and exited positions cost no
  query or FFN work in the layers above (their states stay keys/values; ``--no-live-gather`` computes them anyway,
  for comparison). The model reports what it did in :attr:`ELMERModel.exit_stats` (mean exit layer, share of the
  full-depth layer work done; ``examples/elmer/exit_report.py`` prints them with timings).
* Generation: fairseq's ``IterativeRefinementGenerator`` with ``--iter-decode-max-iter 0`` (one pass; further steps
  change nothing), per-token scores = log-probability of each emitted token at its exit layer.
* Initialisation: random (the paper pretrains from scratch), or the encoder and decoder from any BERT-family
  checkpoint the importer reads (``--pretrained-encoder``, ``--pretrained-decoder``; a checkpoint's MLM head
  initialises the off-ramps). Fine-tuning from an LPLM checkpoint: ``--restore-file CKPT --reset-optimizer
  --reset-lr-scheduler --reset-meters --reset-dataloader``; tensors the checkpoint lacks (the soft-exit fusion,
  independent off-ramps after shared ones) are initialised (fusion) or copied from the shared off-ramp, and logged;
  a checkpoint of another model is refused with what it looks like.

Tasks: ``translation_lev`` (fine-tuning; ``--noise`` is ignored: the decoder never reads ``prev_output_tokens``) and
``masked_autoencoder_pretrain --corruptions shuffle,infill --loss-positions all`` (LPLM pretraining).
"""
import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.iterative_refinement_generator import DecoderOut
from fairseq.models import FairseqDecoder, FairseqEncoder, FairseqEncoderDecoderModel, register_model, \
    register_model_architecture

from ..modules.backbone.backbone_args import add_dropout_args, set_dropout_defaults
from ..modules.backbone.bert_backbone import BertBackbone
from ..modules.exits.canvas import CANVAS_FILLS, CanvasRule, canvas_labels, canvas_tokens, cut_at_first_eos
from ..modules.exits.live_layer import decoder_layer_at, pack_positions, scatter_positions
from ..modules.exits.off_ramps import OFF_RAMP_HEADS, SOFT_EXIT_INITS, OffRamps, SoftExitFusion
from ..modules.exits.policies import run_hard_exit, run_lplm, run_soft_exit
from ..modules.exits.sampling import sample_exit_layers
from ..modules.pretrained.warm_start import add_init_from_checkpoint_arg, encoder_decoder_rename, init_from_checkpoint, \
    refuse_with_pretrained
from ..tasks.masked_autoencoder_pretrain import MaskedAutoencoderPretrainTask
from .bnb import build_backbone

logger = logging.getLogger(__name__)

EXIT_MODES = ("lplm", "hard", "soft", "last")
HARD_EXIT_LOSSES = ("exit", "upto")
OFF_RAMP_SHARING = ("shared", "independent")
MASK_SYMBOLS = ("<mask>", "[MASK]")


@dataclass
class ExitStats:
    """What hard/soft/last decoding did, summed over the batches decoded since :meth:`reset`.

    ``emitted_exit_sum / emitted`` is the mean exit layer of the emitted tokens (up to and including the first
    ``</s>``); ``work / full_work`` the share of the full-depth layer work done (positions computed per layer,
    summed over layers, against every canvas position at every layer); ``layers_run / batches`` the mean number of
    layers the loop ran."""

    num_layers: int = 0
    batches: int = 0
    emitted: int = 0
    emitted_exit_sum: int = 0
    exit_histogram: List[int] = field(default_factory=list)
    work: int = 0
    full_work: int = 0
    layers_run: int = 0

    def reset(self):
        self.batches = self.emitted = self.emitted_exit_sum = self.work = self.full_work = self.layers_run = 0
        self.exit_histogram = [0] * self.num_layers

    @property
    def mean_exit_layer(self) -> float:
        return self.emitted_exit_sum / self.emitted if self.emitted else float("nan")

    @property
    def work_share(self) -> float:
        return self.work / self.full_work if self.full_work else float("nan")

    def summary(self) -> dict:
        shares = [c / self.emitted if self.emitted else 0.0 for c in self.exit_histogram]
        return {"mean_exit_layer": self.mean_exit_layer, "work_share": self.work_share,
                "mean_layers_run": self.layers_run / self.batches if self.batches else float("nan"),
                "exit_share_by_layer": shares, "emitted_tokens": self.emitted, "batches": self.batches}


def mask_index(dictionary, task=None) -> int:
    """The ``[MASK]`` the canvas holds: the pretraining task's mask symbol when the task has one
    (``masked_autoencoder_pretrain``), else the dictionary's ``<mask>`` / ``[MASK]``, else ``<mask>`` added at the
    end of the dictionary (as the pretraining task adds it, so a fine-tuning dictionary binarized with the
    pretraining ``dict.txt`` gets the same row)."""
    task_mask = getattr(task, "mask_idx", None)
    if task_mask is not None and getattr(task, "target_dictionary", None) is dictionary:
        return int(task_mask)
    for symbol in MASK_SYMBOLS:
        if symbol in dictionary.indices:
            return dictionary.index(symbol)
    return MaskedAutoencoderPretrainTask.add_mask_symbol(dictionary, "<mask>")


class ELMEREncoder(FairseqEncoder):
    """The BERT-family encoder over the source."""

    def __init__(self, dictionary, backbone: BertBackbone):
        super().__init__(dictionary)
        self.backbone = backbone

    def forward(self, src_tokens, src_lengths=None, **kwargs):
        """Returns ``encoder_out`` ``(B, S, C)`` final states and ``encoder_padding_mask`` ``(B, S)`` (True at
        padding)."""
        padding_mask = src_tokens.eq(self.dictionary.pad())
        states = self.backbone(src_tokens, padding_mask=padding_mask)["hidden_states"]
        return {"encoder_out": states, "encoder_padding_mask": padding_mask}

    def reorder_encoder_out(self, encoder_out, new_order):
        new_order = new_order.reshape(-1)
        return {k: v.index_select(0, new_order) for k, v in encoder_out.items()}

    def max_positions(self):
        return self.backbone.max_positions()


class ELMERDecoder(FairseqDecoder):
    """The bidirectional decoder over a ``[MASK]`` canvas, with off-ramps at every layer and the soft-exit fusion
    (``--exit-mode soft`` only). Its own layer loop runs the backbone's layers (:mod:`..modules.exits.policies`)."""

    def __init__(self, args, dictionary, backbone: BertBackbone, mask_idx: int, lm_head_state=None):
        super().__init__(dictionary)
        self.backbone = backbone
        self.num_layers = backbone.cfg.layers
        self.mask_idx = mask_idx
        self.canvas_rule = CanvasRule(args.canvas_ratio, args.canvas_offset, args.canvas_max_length)
        self.off_ramps = OffRamps(backbone.cfg, backbone.embeddings.embed_tokens.weight, self.num_layers,
                                  shared=args.off_ramps == "shared", head=args.off_ramp_head)
        if lm_head_state:
            unused = self.off_ramps.load_head_state(lm_head_state)
            logger.info(f"off-ramps ({args.off_ramps}, {args.off_ramp_head} head) initialised from the checkpoint's "
                        f"masked-LM head; checkpoint head tensors not used: {unused or 'none'}")
        self.soft_fusion = SoftExitFusion(backbone.embed_dim, args.soft_exit_init) if args.exit_mode == "soft" \
            else None
        self.detach_exited = not args.no_detach_exited
        self.live_gather = not args.no_live_gather

    # --------------------------------------------------------------------------------------------------- canvas
    def canvas_lengths(self, encoder_out):
        """``(B,)`` canvas lengths from the source lengths (never the target)."""
        src_lengths = (~encoder_out["encoder_padding_mask"]).sum(1)
        return self.canvas_rule.lengths(src_lengths, self.backbone.max_positions())

    def canvas(self, encoder_out, lengths=None):
        """``(canvas (B, T), padding_mask (B, T))``: ``[MASK]`` x T_b per row, right-padded."""
        lengths = self.canvas_lengths(encoder_out) if lengths is None else lengths
        tokens = canvas_tokens(lengths, self.mask_idx, self.dictionary.pad())
        return tokens, tokens.eq(self.dictionary.pad())

    def embed(self, canvas, padding_mask):
        """``h^0`` ``(B, T, C)``: [MASK] word embedding + position embedding (LayerNorm, dropout)."""
        return self.backbone.embeddings(canvas, padding_mask)

    # ------------------------------------------------------------------------------------------------ layers
    def layer_functions(self, encoder_out, padding_mask):
        """``(layer_fn, live_fn)`` (see :mod:`..modules.exits.policies`) bound to this batch's encoder states."""
        enc = encoder_out["encoder_out"].transpose(0, 1)
        enc_pad = encoder_out["encoder_padding_mask"]
        enc_pad = enc_pad if bool(enc_pad.any()) else None
        self_pad = padding_mask if bool(padding_mask.any()) else None
        layers = self.backbone.layers

        def layer_fn(i, x):
            y, _, _ = layers[i](x.transpose(0, 1), enc, enc_pad, self_attn_padding_mask=self_pad)
            return y.transpose(0, 1)

        def live_fn(i, x, live):
            xt = x.transpose(0, 1)
            index, valid = pack_positions(live)
            out = decoder_layer_at(layers[i], xt, index, valid, enc, enc_pad, self_pad)
            return scatter_positions(xt, out, index, valid).transpose(0, 1)

        return layer_fn, live_fn

    def fuse(self, predicted, states):
        """Eq. 12: ``W [E(y^) ; h]`` with ``E`` the decoder's word embeddings (no position, no LayerNorm)."""
        return self.soft_fusion(self.backbone.embeddings.embed_tokens(predicted), states)

    def run_last(self, encoder_out, canvas, padding_mask):
        """Final-layer states ``(B, T, C)`` of the plain decoder (no exits)."""
        layer_fn, _ = self.layer_functions(encoder_out, padding_mask)
        x = self.embed(canvas, padding_mask)
        for i in range(self.num_layers):
            x = layer_fn(i, x)
        return x

    def run_lplm(self, encoder_out, canvas, padding_mask, exit_layers):
        """``h_t^{l_t}`` ``(B, T, C)`` for assigned exit layers ``(B, T)``."""
        layer_fn, _ = self.layer_functions(encoder_out, padding_mask)
        states, _ = run_lplm(layer_fn, self.embed(canvas, padding_mask), exit_layers, self.detach_exited)
        return states

    def run_hard(self, encoder_out, canvas, padding_mask, threshold, banned=(), keep_states=False, predict=True,
                 live_gather=None):
        layer_fn, live_fn = self.layer_functions(encoder_out, padding_mask)
        gather = self.live_gather if live_gather is None else live_gather
        return run_hard_exit(layer_fn, self.off_ramps, self.embed(canvas, padding_mask), padding_mask,
                             self.num_layers, threshold, banned=banned, live_fn=live_fn if gather else None,
                             detach=self.detach_exited, keep_states=keep_states, predict=predict)

    def run_soft(self, encoder_out, canvas, padding_mask, keep=None, gold=None, gold_prob=0.0):
        if self.soft_fusion is None:
            raise ValueError("this decoder was built without the soft-exit fusion (--exit-mode soft)")
        layer_fn, _ = self.layer_functions(encoder_out, padding_mask)
        return run_soft_exit(layer_fn, self.off_ramps, self.fuse, self.embed(canvas, padding_mask), self.num_layers,
                             keep=keep, gold=gold, gold_prob=gold_prob)

    def forward(self, prev_output_tokens, encoder_out=None, **kwargs):
        """fairseq's decoder interface: last-layer logits ``(B, T, V)`` of the plain decoder over the canvas
        ``prev_output_tokens`` (its non-pad positions; its symbols are not read)."""
        padding = prev_output_tokens.eq(self.dictionary.pad())
        canvas = prev_output_tokens.masked_fill(~padding, self.mask_idx)
        return self.off_ramps(self.num_layers - 1, self.run_last(encoder_out, canvas, padding)), None

    def max_positions(self):
        return self.backbone.max_positions()


@register_model("elmer")
class ELMERModel(FairseqEncoderDecoderModel):
    """ELMER; see the module docstring."""

    def __init__(self, args, encoder, decoder):
        super().__init__(encoder, decoder)
        self.args = args
        d = decoder.dictionary
        self.bos, self.eos, self.pad = d.bos(), d.eos(), d.pad()
        self.mask_idx = decoder.mask_idx
        self.exit_mode = args.exit_mode
        self.exit_threshold = float(args.exit_threshold)
        self.hard_exit_loss = args.hard_exit_loss
        self.soft_exit_gold_prob = args.soft_exit_gold_prob
        self.canvas_fill = args.canvas_fill
        self.eos_fill_weight = args.eos_fill_weight
        self.max_canvas_overflow_fraction = args.max_canvas_overflow_fraction
        self.rows_seen = 0
        self.rows_overflowing = 0
        self._overflow_warned = False
        self.forced_lengths = None  # the benchmark's quick mode (force_output_lengths)
        self.exit_stats = ExitStats(num_layers=decoder.num_layers)
        self.exit_stats.reset()
        self.last_exit_layers = None

    # ------------------------------------------------------------------------------------------------- flags
    @staticmethod
    def add_args(parser):
        for side in ("encoder", "decoder"):
            parser.add_argument(f"--{side}-layers", type=int, metavar="N", help=f"number of {side} layers")
            parser.add_argument(f"--{side}-embed-dim", type=int, metavar="N", help=f"{side} hidden size")
            parser.add_argument(f"--{side}-ffn-embed-dim", type=int, metavar="N", help=f"{side} FFN hidden size")
            parser.add_argument(f"--{side}-attention-heads", type=int, metavar="N", help=f"{side} attention heads")
        parser.add_argument("--pretrained-encoder", type=str, metavar="PATH",
                            help="initialise the encoder from a BERT-family checkpoint: a Hugging Face folder, a "
                            "fairseq RoBERTa/XLM-R model.pt, or the output of scripts/convert_pretrained.py; its "
                            "sizes replace the architecture's and the data must use its dictionary (default: "
                            "random, as the paper's pretraining from scratch)")
        add_init_from_checkpoint_arg(
            parser, "its encoder layers initialise the encoder's, its decoder layers (self-attention, "
            "cross-attention, FFN) the decoder's, its embeddings the word embeddings (and so the tied off-ramp "
            "outputs); positions, off-ramp transforms and soft-exit fusion keep their initialisation (instead of "
            "--pretrained-encoder)")
        parser.add_argument("--pretrained-decoder", type=str, metavar="PATH",
                            help="initialise the decoder's self-attention/FFN/embeddings (and the off-ramps from "
                            "its masked-LM head) from this checkpoint (default: the --pretrained-encoder "
                            "checkpoint)")
        parser.add_argument("--cross-attention-init", choices=("random", "self_attention"),
                            help="decoder cross-attention of a pretrained-initialised decoder: 'random' (BERT2BERT) "
                            "or a copy of each layer's self-attention")
        parser.add_argument("--share-all-embeddings", action="store_true",
                            help="one word-embedding table for encoder, decoder and off-ramps (needs a joined "
                            "dictionary)")
        parser.add_argument("--max-positions-table", type=int, metavar="N",
                            help="rows of the position embedding tables of a randomly initialised model (the "
                            "canvas must fit the decoder's)")
        parser.add_argument("--exit-mode", choices=EXIT_MODES,
                            help="training objective and decoding rule: 'lplm' Layer Permutation LM (pretraining; "
                            "decodes with the hard exit), 'hard' entropy-threshold exit, 'soft' every layer's "
                            "prediction fed to the next (Eq. 11-12), 'last' the plain NAR decoder (default lplm)")
        parser.add_argument("--off-ramps", choices=OFF_RAMP_SHARING,
                            help="one off-ramp classifier shared by every decoder layer (the paper's pretraining, "
                            "default) or one per layer ('independent'; projections stay tied to the embeddings)")
        parser.add_argument("--off-ramp-head", choices=OFF_RAMP_HEADS,
                            help="off-ramp classifier: 'mlm' BERT's masked-LM head (dense, GELU, LayerNorm, tied "
                            "projection, bias; a pretrained checkpoint's head initialises it; default) or 'linear' "
                            "(tied projection + bias, Eq. 8 literally)")
        parser.add_argument("--no-detach-exited", action="store_true",
                            help="let gradient flow through the copies of exited states that upper layers read "
                            "(by default they are detached, as in the authors' code)")
        parser.add_argument("--exit-threshold", type=float, metavar="DELTA",
                            help="hard exit: a token exits at a layer whose off-ramp entropy (natural log) is below "
                            "DELTA, in [0, ln V]; 0 sends every token to the last layer, larger exits earlier "
                            "(default 0.5, the paper's; change it at generation with --model-overrides "
                            "\"{'exit_threshold': 0.25}\")")
        parser.add_argument("--hard-exit-loss", choices=HARD_EXIT_LOSSES,
                            help="--exit-mode hard training: cross-entropy at each token's entropy-chosen exit layer "
                            "only ('exit', Eq. 9 with those exits; default) or averaged over every layer up to it "
                            "('upto'; from random weights on the toy task it learned far less than 'exit': "
                            "sacreBLEU 18.6 against 63.1 after 400 updates)")
        parser.add_argument("--soft-exit-gold-prob", type=float, metavar="P",
                            help="--exit-mode soft training: fraction of positions that feed the reference symbol "
                            "instead of the layer's prediction to the next layer (the authors' code: 0.3; the paper "
                            "has none; default 0)")
        parser.add_argument("--soft-exit-init", choices=SOFT_EXIT_INITS,
                            help="soft-exit fusion W: 'identity' W = [0 | I] (the fused state starts equal to h, so a "
                            "pretrained decoder keeps working; default) or 'random'")
        parser.add_argument("--canvas-ratio", type=float, metavar="A",
                            help="canvas length T = min(N, floor(A x source length + B)), source length with <s> "
                            "and </s>; A = 0 (default): a fixed canvas of N positions. The same rule in training "
                            "and generation: never the reference length")
        parser.add_argument("--canvas-offset", type=float, metavar="B", help="the B of --canvas-ratio (default 0)")
        parser.add_argument("--canvas-max-length", type=int, metavar="N",
                            help="longest canvas, the decoder's maximum output length with </s> (default 64)")
        parser.add_argument("--canvas-fill", choices=CANVAS_FILLS,
                            help="canvas positions after the target's </s>: trained to emit </s> again ('eos', "
                            "default) or not trained ('ignore')")
        parser.add_argument("--eos-fill-weight", type=float, metavar="W",
                            help="loss weight of the 'eos' fill positions relative to target positions (default 1)")
        parser.add_argument("--max-canvas-overflow-fraction", type=float, metavar="F",
                            help="training rows whose target does not fit its canvas are skipped and counted "
                            "(canvas_overflow); training stops with an error when more than F of the rows seen so "
                            "far did not fit (default 0.5; 1.0 never stops)")
        parser.add_argument("--no-live-gather", action="store_true",
                            help="hard exit: compute exited positions in the layers above anyway (results "
                            "discarded), so that only the whole-batch early stop saves compute (for comparisons)")
        add_dropout_args(parser)

    # ------------------------------------------------------------------------------------------------- build
    @classmethod
    def build_model(cls, args, task):
        elmer_base(args)
        validate_args(args)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        if src_dict is None or tgt_dict is None:
            raise ValueError("elmer needs a task with source and target dictionaries (translation_lev, "
                             "masked_autoencoder_pretrain)")
        joined = src_dict == tgt_dict
        mask = mask_index(tgt_dict, task)
        if src_dict is not tgt_dict and joined:
            mask_index(src_dict, task)  # keep a joined dictionary joined
        check_threshold(args.exit_threshold, len(tgt_dict))
        enc_backbone, _ = build_backbone(args, "encoder", src_dict, args.pretrained_encoder, False)
        refuse_with_pretrained(args)
        dec_path = args.pretrained_decoder or args.pretrained_encoder
        dec_backbone, lm_head = build_backbone(args, "decoder", tgt_dict, dec_path, True)
        if args.share_all_embeddings:
            if src_dict != tgt_dict:
                raise ValueError("--share-all-embeddings needs a joined dictionary (fairseq-preprocess "
                                 "--joined-dictionary, or the same pretrained dict.txt for both sides)")
            if enc_backbone.embed_dim != dec_backbone.embed_dim:
                raise ValueError("--share-all-embeddings needs --encoder-embed-dim == --decoder-embed-dim")
            dec_backbone.embeddings.embed_tokens = enc_backbone.embeddings.embed_tokens
        rule = CanvasRule(args.canvas_ratio, args.canvas_offset, args.canvas_max_length)
        if rule.max_length > dec_backbone.max_positions():
            raise ValueError(f"--canvas-max-length {rule.max_length} exceeds the decoder's "
                             f"{dec_backbone.max_positions()} positions (--max-positions-table, or the pretrained "
                             "checkpoint's table)")
        encoder = ELMEREncoder(src_dict, enc_backbone)
        decoder = ELMERDecoder(args, tgt_dict, dec_backbone, mask, lm_head)
        # the checkpoint is only read when the model is first built: a trained model reloads its own weights
        args.pretrained_encoder = args.pretrained_decoder = None
        args.max_source_positions = min(args.max_source_positions, enc_backbone.max_positions())
        args.max_target_positions = min(args.max_target_positions, dec_backbone.max_positions())
        logger.info(f"ELMER: {enc_backbone.cfg.layers} + {dec_backbone.cfg.layers} layers, exit mode {args.exit_mode}, "
                    f"{args.off_ramps} {args.off_ramp_head} off-ramps, canvas {rule.describe()}, mask symbol "
                    f"{tgt_dict[mask]!r} = {mask}")
        model = cls(args, encoder, decoder)
        init_from_checkpoint(model, args, rename=encoder_decoder_rename(len(enc_backbone.layers),
                                                                        len(dec_backbone.layers)))
        return model

    def max_positions(self):
        return (self.args.max_source_positions, self.args.max_target_positions)

    @property
    def num_layers(self) -> int:
        return self.decoder.num_layers

    @property
    def allow_length_beam(self):
        return False

    @property
    def allow_ensemble(self):
        return False

    # ---------------------------------------------------------------------------------------------- training
    def forward(self, src_tokens, src_lengths, prev_output_tokens=None, tgt_tokens=None, full_target=None,
                exit_layers=None, lplm_samples=1, generator=None, **kwargs):
        """Training terms for ``--criterion layer_permutation`` (``prev_output_tokens`` is ignored: the decoder
        never reads target symbols).

        Args:
            tgt_tokens: ``(B, L)`` targets (``sample["target"]``), right-padded, optionally starting with ``<s>``.
            full_target: ``(B, L)`` targets without unsupervised ``<pad>`` (``masked_autoencoder_pretrain``'s
                ``full_target``), for the row lengths; default ``tgt_tokens``.
            exit_layers: ``--exit-mode lplm``: ``(K, B, T)`` (or ``(B, T)``) assigned exit layers in ``1..L``;
                default: drawn uniformly, ``lplm_samples`` permutations per sequence, with ``generator``.

        Returns a dict: ``logits`` ``(N, V)`` one row per (supervised position, layer it is scored at[, sample]),
        ``target`` ``(N,)``, ``layer`` ``(N,)`` 1-based layer of the row, ``weight`` ``(N,)`` (summing to the
        number of supervised positions, fill positions weighted by ``--eos-fill-weight``), ``exit_layers`` ``(M,)``
        the exit layer of each supervised position (and sample) or None (soft/last), ``num_layers``, ``rows``,
        ``canvas_overflow`` (rows whose target did not fit), ``positions`` (supervised positions).
        """
        if tgt_tokens is None:
            raise ValueError("elmer's forward needs the targets (sample['target'])")
        encoder_out = self.encoder(src_tokens, src_lengths)
        lengths = self.decoder.canvas_lengths(encoder_out)
        canvas, padding = self.decoder.canvas(encoder_out, lengths)
        lab = canvas_labels(tgt_tokens, lengths, self.bos, self.eos, self.pad, self.canvas_fill, full_target)
        overflow = int((~lab.fits).sum())
        self._account_overflow(overflow, canvas.size(0), lab, lengths)
        sup = lab.supervised
        base_weight = torch.ones(sup.shape, dtype=torch.float, device=sup.device).masked_fill(
            lab.fill, self.eos_fill_weight)
        L = self.num_layers
        out = {"num_layers": L, "rows": canvas.size(0), "canvas_overflow": overflow, "positions": int(sup.sum())}
        if self.exit_mode == "lplm":
            bsz, width = canvas.shape
            if exit_layers is None:
                exit_layers = sample_exit_layers((lplm_samples, bsz, width), L, generator=generator,
                                                 device=canvas.device)
            exit_layers = exit_layers.reshape(-1, bsz, width).to(canvas.device)
            k = exit_layers.size(0)
            if bool(((exit_layers < 1) | (exit_layers > L)).any()):
                raise ValueError(f"exit layers must lie in 1..{L}")
            exits = exit_layers.masked_fill(padding[None], 1).reshape(k * bsz, width)
            order = torch.arange(bsz, device=canvas.device).repeat(k)
            enc_k = self.encoder.reorder_encoder_out(encoder_out, order) if k > 1 else encoder_out
            states = self.decoder.run_lplm(enc_k, canvas.repeat(k, 1), padding.repeat(k, 1), exits)
            sup_k = sup.repeat(k, 1)
            layer = exits[sup_k]
            out.update(logits=self.decoder.off_ramps.by_layer(layer, states[sup_k]),
                       target=lab.labels.repeat(k, 1)[sup_k], layer=layer,
                       weight=base_weight.repeat(k, 1)[sup_k] / k, exit_layers=layer)
        elif self.exit_mode == "hard":
            res = self.decoder.run_hard(encoder_out, canvas, padding, self.exit_threshold, keep_states=True,
                                        predict=False)
            exits = res.exit_layers
            logits, targets, layers, weights = [], [], [], []
            for layer in range(1, res.layers_run + 1):
                rows = sup & (exits.eq(layer) if self.hard_exit_loss == "exit" else exits.ge(layer))
                logits.append(self.decoder.off_ramps(layer - 1, res.states[layer - 1][rows]))
                targets.append(lab.labels[rows])
                layers.append(torch.full_like(targets[-1], layer))
                w = base_weight[rows]
                weights.append(w if self.hard_exit_loss == "exit" else w / exits[rows].float())
            out.update(logits=torch.cat(logits, 0), target=torch.cat(targets, 0), layer=torch.cat(layers, 0),
                       weight=torch.cat(weights, 0), exit_layers=exits[sup])
        elif self.exit_mode == "soft":
            per_layer, _ = self.decoder.run_soft(encoder_out, canvas, padding, keep=sup, gold=lab.labels,
                                                 gold_prob=self.soft_exit_gold_prob if self.training else 0.0)
            n = int(sup.sum())
            out.update(logits=torch.cat(per_layer, 0), target=lab.labels[sup].repeat(L),
                       layer=torch.arange(1, L + 1, device=canvas.device).repeat_interleave(n),
                       weight=base_weight[sup].repeat(L) / L, exit_layers=None)
        else:  # last
            states = self.decoder.run_last(encoder_out, canvas, padding)
            out.update(logits=self.decoder.off_ramps(L - 1, states[sup]), target=lab.labels[sup],
                       layer=torch.full_like(lab.labels[sup], L), weight=base_weight[sup], exit_layers=None)
        return out

    def _account_overflow(self, overflow: int, rows: int, lab, lengths):
        """Counts training rows whose target does not fit the canvas; refuses to go on when they are too many."""
        if not self.training:
            return
        self.rows_seen += rows
        self.rows_overflowing += overflow
        if overflow and not self._overflow_warned:
            self._overflow_warned = True
            i = int((~lab.fits).nonzero()[0, 0])
            logger.warning(
                f"{overflow} of {rows} training rows need more canvas positions than the rule gives "
                f"({self.decoder.canvas_rule.describe()}; e.g. a target needing {int(lab.needed[i])} positions, "
                f"with </s>, on a canvas of {int(lengths[i])}): they are skipped (no loss) and counted as "
                "canvas_overflow in the logs. Raise --canvas-max-length / --canvas-ratio / --canvas-offset to "
                "train on them.")
        if self.rows_overflowing > self.max_canvas_overflow_fraction * self.rows_seen:
            raise ValueError(
                f"{self.rows_overflowing:,} of the {self.rows_seen:,} training rows seen so far "
                f"({self.rows_overflowing / self.rows_seen:.0%}) have targets longer than their canvas "
                f"({self.decoder.canvas_rule.describe()}), more than --max-canvas-overflow-fraction "
                f"{self.max_canvas_overflow_fraction:g}: raise --canvas-max-length (the longest output with </s>) "
                "or --canvas-ratio / --canvas-offset, or pass --max-canvas-overflow-fraction 1.0 to train on the "
                "rows that fit")

    # -------------------------------------------------------------------------------------------- generation
    def forward_encoder(self, encoder_inputs):
        return self.encoder(*encoder_inputs)

    def force_output_lengths(self, lengths: Optional[torch.Tensor]):
        """Benchmark quick mode: the next batch's rows get ``lengths[b]`` output tokens (canvas ``lengths + 1``,
        the first ``lengths[b]`` predictions kept whatever they are); None frees them."""
        self.forced_lengths = lengths

    def initialize_output_tokens(self, encoder_out, src_tokens):
        """The canvas ``(B, T)`` of ``[MASK]`` (its length from the source only)."""
        lengths = self.decoder.canvas_lengths(encoder_out)
        if self.forced_lengths is not None:
            lengths = (self.forced_lengths.to(lengths) + 1).clamp(max=self.decoder.max_positions())
        canvas, _ = self.decoder.canvas(encoder_out, lengths)
        return DecoderOut(output_tokens=canvas,
                          output_scores=torch.zeros(canvas.shape, dtype=encoder_out["encoder_out"].dtype,
                                                    device=canvas.device),
                          attn=None, step=0, max_step=0, history=None)

    @property
    def banned_symbols(self) -> List[int]:
        """Never emitted: ``<s>``, ``<pad>``, the canvas ``[MASK]``."""
        return sorted({self.bos, self.pad, self.mask_idx})

    def decode_canvas(self, encoder_out, canvas, padding_mask, banned=None):
        """One decoding pass under ``--exit-mode``'s rule. Returns ``(tokens, scores, exit_layers, work,
        layers_run)``: ``(B, T)`` argmax symbols, their log-probabilities at the exit layer, 1-based exit layers (0
        at padding), and the layer work done (positions computed, summed over layers) and layers run."""
        banned = self.banned_symbols if banned is None else banned
        L = self.num_layers
        real = ~padding_mask
        if self.exit_mode in ("lplm", "hard"):
            res = self.decoder.run_hard(encoder_out, canvas, padding_mask, self.exit_threshold, banned=banned)
            return res.tokens, res.scores, res.exit_layers, sum(res.work), res.layers_run
        if self.exit_mode == "soft":
            _, logits = self.decoder.run_soft(encoder_out, canvas, padding_mask)
        else:
            logits = self.decoder.off_ramps(L - 1, self.decoder.run_last(encoder_out, canvas, padding_mask))
        lprobs = torch.log_softmax(logits.float(), dim=-1)
        choice = lprobs.clone()
        choice[:, :, banned] = float("-inf")
        tokens = choice.argmax(-1)
        scores = lprobs.gather(2, tokens[..., None])[..., 0]
        exits = real.long() * L
        return tokens, scores, exits, int(real.sum()) * L, L

    def forward_decoder(self, decoder_out, encoder_out, **kwargs):
        """Step 0: one pass, rows ``[<s>, y_1 .. y_k, </s>]`` cut at the first predicted ``</s>``, with per-token
        scores. Later steps return the rows unchanged (the generator then stops)."""
        if decoder_out.step > 0:
            return decoder_out
        canvas = decoder_out.output_tokens
        padding = canvas.eq(self.pad)
        forced = self.forced_lengths
        banned = self.banned_symbols + ([self.eos] if forced is not None else [])
        tokens, scores, exits, work, layers_run = self.decode_canvas(encoder_out, canvas, padding, banned)
        rows, row_scores = cut_at_first_eos(tokens, scores, padding, self.bos, self.eos, self.pad,
                                            lengths=None if forced is None else forced.to(tokens.device))
        self._record_exits(exits, padding, rows, work, layers_run)
        history = decoder_out.history
        if history is not None:
            history.append(rows.clone())
        return decoder_out._replace(output_tokens=rows, output_scores=row_scores.to(decoder_out.output_scores),
                                    attn=None, history=history)

    def _record_exits(self, exits, padding, rows, work, layers_run):
        """Adds one batch to :attr:`exit_stats`; keeps its exit layers in :attr:`last_exit_layers` ``(B, T)``."""
        self.last_exit_layers = exits
        s = self.exit_stats
        emitted_len = (rows.ne(self.pad).sum(1) - 1).clamp(max=exits.size(1))  # y_1..y_k and </s>
        emitted = torch.arange(exits.size(1), device=exits.device)[None, :] < emitted_len[:, None]
        emitted &= ~padding
        layers = exits[emitted]
        s.batches += 1
        s.emitted += int(emitted.sum())
        s.emitted_exit_sum += int(layers.sum())
        counts = torch.bincount(layers, minlength=self.num_layers + 1)[1:].tolist()
        s.exit_histogram = [a + b for a, b in zip(s.exit_histogram, counts)]
        s.work += int(work)
        s.full_work += int((~padding).sum()) * self.num_layers
        s.layers_run += int(layers_run)

    def apply_model_overrides(self, overrides: dict):
        """Generation settings changed on a built model (the benchmark's decodings of one loaded checkpoint):
        ``exit_threshold`` and ``exit_mode`` (not to or from ``soft``, whose fusion weights only a soft model has)."""
        if "exit_threshold" in overrides:
            check_threshold(overrides["exit_threshold"], len(self.decoder.dictionary))
            self.exit_threshold = self.args.exit_threshold = float(overrides["exit_threshold"])
        if "exit_mode" in overrides:
            mode = overrides["exit_mode"]
            if mode not in EXIT_MODES or (mode == "soft") != (self.exit_mode == "soft"):
                raise ValueError(f"exit_mode {mode!r}: a model built with --exit-mode {self.exit_mode} can switch "
                                 "between lplm, hard and last only (soft needs its fusion weights)")
            self.exit_mode = self.args.exit_mode = mode

    # ----------------------------------------------------------------------------------------- checkpoints
    def upgrade_state_dict_named(self, state_dict, name):
        """Checks a checkpoint against this model before fairseq's strict load, and completes what an ELMER
        checkpoint of another exit mode lacks: the soft-exit fusion (fresh, identity or random per
        ``--soft-exit-init``) and independent off-ramps (copies of the checkpoint's shared one). Every inserted
        tensor is logged; anything else that does not match raises with what the checkpoint looks like."""
        super().upgrade_state_dict_named(state_dict, name)
        prefix = f"{name}." if name else ""
        keys = {k[len(prefix):] for k in state_dict if k.startswith(prefix)}
        own = self.state_dict()
        if not any(k.startswith("decoder.off_ramps.") for k in keys) or \
                not any(k.startswith("decoder.backbone.") for k in keys):
            raise ValueError(f"the checkpoint does not hold an ELMER model ({_describe_checkpoint(keys)}): restore "
                             "an elmer checkpoint, or initialise from a BERT-family checkpoint with "
                             "--pretrained-encoder / --pretrained-decoder instead of --restore-file")
        inserted = []
        for key in sorted(set(own) - keys):
            if key.startswith("decoder.off_ramps.heads."):
                shared_key = "decoder.off_ramps.heads.0." + key.split(".", 4)[4]
                if shared_key in keys:
                    state_dict[prefix + key] = state_dict[prefix + shared_key].clone()
                    inserted.append(f"{key} (copy of the shared off-ramp's {shared_key})")
            elif key.startswith("decoder.soft_fusion."):
                state_dict[prefix + key] = own[key].clone()
                inserted.append(f"{key} (new: soft-exit fusion, {self.args.soft_exit_init} init)")
        if inserted:
            logger.info("ELMER checkpoint completed for this model: " + "; ".join(inserted))
        keys = {k[len(prefix):] for k in state_dict if k.startswith(prefix)}
        missing, unexpected = sorted(set(own) - keys), sorted(keys - set(own))
        if any(k.startswith("decoder.soft_fusion.") for k in unexpected):
            raise ValueError("the checkpoint was trained with --exit-mode soft (it has soft-exit fusion weights): "
                             f"load it with --exit-mode soft (this model: {self.exit_mode}); its decoder expects the "
                             "fused inputs")
        if any(k.startswith("decoder.off_ramps.heads.") for k in unexpected) and self.decoder.off_ramps.shared:
            raise ValueError("the checkpoint has independent off-ramps (one per layer); this model shares one: "
                             "load it with --off-ramps independent")
        if missing or unexpected:
            raise ValueError(f"the ELMER checkpoint does not fit this model: missing {missing[:6]}"
                             f"{' ...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
                             f"{' ...' if len(unexpected) > 6 else ''} (different layer counts? build the model "
                             "with the checkpoint's sizes)")


def _describe_checkpoint(keys) -> str:
    if any(k.startswith("encoder.latent_proj.") for k in keys):
        return "a bnb (BERT-NAR-BERT) model"
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("editor_heads.") for k in keys):
        return "a deer model"
    if any(k.startswith("decoder.layers.") for k in keys):
        return "a fairseq transformer-family model"
    sample = sorted(keys)[:3]
    return f"its parameters are named like {sample}"


def check_threshold(threshold, vocab_size: int):
    """The hard-exit threshold must lie in ``[0, ln V]`` (entropy's range): below 0 nothing could exit early
    (use 0), above ``ln V`` everything exits at layer 1 (use ``ln V``)."""
    top = math.log(vocab_size)
    if not isinstance(threshold, (int, float)) or not 0 <= float(threshold) <= top:
        raise ValueError(f"--exit-threshold {threshold!r} is outside [0, ln V] = [0, {top:.3f}] for this vocabulary "
                         f"of {vocab_size} symbols (entropy in nats: 0 = every token exits at the last layer, ln V = "
                         "every token at the first)")


def validate_args(args):
    """Clear errors for bad flag values (before anything is built)."""
    if not 0 <= args.soft_exit_gold_prob <= 1:
        raise ValueError(f"--soft-exit-gold-prob must lie in [0, 1], got {args.soft_exit_gold_prob}")
    if not (math.isfinite(args.eos_fill_weight) and args.eos_fill_weight >= 0):
        raise ValueError(f"--eos-fill-weight must be a finite number >= 0, got {args.eos_fill_weight}")
    if not 0 <= args.max_canvas_overflow_fraction <= 1:
        raise ValueError(f"--max-canvas-overflow-fraction must lie in [0, 1], got "
                         f"{args.max_canvas_overflow_fraction}")
    CanvasRule(args.canvas_ratio, args.canvas_offset, args.canvas_max_length)  # raises on bad values
    if args.decoder_layers < 1:
        raise ValueError(f"--decoder-layers must be >= 1, got {args.decoder_layers}")


def _default(args, name, value):
    """``args.name = value`` unless the user set it (an explicit 0 or False stays)."""
    if getattr(args, name, None) is None:
        setattr(args, name, value)


@register_model_architecture("elmer", "elmer_base")
def elmer_base(args):
    """The paper's size (BART-base shape): 6 encoder + 6 decoder layers, 768 dims, 12 heads, FFN 3072; shared
    off-ramps, LPLM, hard-exit threshold 0.5, a fixed canvas of 64 positions."""
    for name, value in (("encoder_layers", 6), ("encoder_embed_dim", 768), ("encoder_attention_heads", 12),
                        ("encoder_ffn_embed_dim", 3072)):
        _default(args, name, value)
    for name in ("layers", "embed_dim", "attention_heads", "ffn_embed_dim"):
        _default(args, f"decoder_{name}", getattr(args, f"encoder_{name}"))
    for name, value in (("pretrained_encoder", None), ("pretrained_decoder", None), ("init_from_checkpoint", None),
                        ("cross_attention_init", "random"), ("max_positions_table", 512), ("exit_mode", "lplm"),
                        ("off_ramps", "shared"), ("off_ramp_head", "mlm"), ("exit_threshold", 0.5),
                        ("hard_exit_loss", "exit"), ("soft_exit_gold_prob", 0.0), ("soft_exit_init", "identity"),
                        ("canvas_ratio", 0.0), ("canvas_offset", 0.0), ("canvas_max_length", 64),
                        ("canvas_fill", "eos"), ("eos_fill_weight", 1.0), ("max_canvas_overflow_fraction", 0.5)):
        _default(args, name, value)
    for flag in ("share_all_embeddings", "no_detach_exited", "no_live_gather"):
        _default(args, flag, False)
    set_dropout_defaults(args)
    _default(args, "max_source_positions", args.max_positions_table)
    _default(args, "max_target_positions", args.max_positions_table)


def _sizes(args, enc_layers, dec_layers, dim, heads, ffn):
    for name, value in (("encoder_layers", enc_layers), ("decoder_layers", dec_layers), ("encoder_embed_dim", dim),
                        ("encoder_attention_heads", heads), ("encoder_ffn_embed_dim", ffn)):
        _default(args, name, value)
    elmer_base(args)


@register_model_architecture("elmer", "elmer_small")
def elmer_small(args):
    """CPU size, the size of every system in make bench: 3 + 3 layers, 256 dims, 4 heads, FFN 1024."""
    _sizes(args, 3, 3, 256, 4, 1024)


@register_model_architecture("elmer", "elmer_tiny")
def elmer_tiny(args):
    """Test size: 2 encoder + 3 decoder layers (exits need depth), 64 dims, 2 heads, FFN 128."""
    _sizes(args, 2, 3, 64, 2, 128)
