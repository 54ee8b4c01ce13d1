"""DEER (shared/papers/002): one BERT-family stack as a CTC generator, a Levenshtein editor and a prunable model.

* Input (:mod:`..modules.single_stack.deer_input`): ``[source ; F target slots]``, ``F = round(--upsample-ratio x S)``, slots
  holding copies of the source tokens (default) or a placeholder (``--deer-slot-input``); the source cannot see
  the slots, slots see everything. No decoder and no parameter beyond the backbone, its masked-LM head and the
  editor's two small heads.
* Single-step generator: CTC over the slot outputs (``--criterion ctc``, ``--label-smoothing``), with glancing
  training (``--glancing-ratio``, default ``0.5:0.2@300k``): a first pass without gradient, the CTC Viterbi
  alignment of the reference (:mod:`..modules.ctc.ctc_alignment`), ``round(ratio x mismatches)`` slots revealed with
  their aligned symbol (:mod:`..modules.ctc.glancing`), then the trained pass.
* Levenshtein editor (:mod:`..modules.single_stack.levenshtein_editor`): the same layers over editor tokens with keys/values
  ``[cached per-layer source states ; editor tokens]``; placeholder, insertion (the LM head) and deletion
  classifiers trained as in Levenshtein Transformer on randomly deleted references (``--noise random_delete``).
* Objective: CTC + placeholder + insertion + deletion (+ ``--prune-lambda`` x mean sigmoid(scores) with
  ``--prune``): the output dict's terms go through the ``ctc`` criterion (CTC) and ``nat_loss`` (the others).
* Decoding with ``IterativeRefinementGenerator``: the encoder pass runs the whole stack once (CTC frames and the
  per-layer source states); step 0 is greedy CTC (argmax, merge repeats, drop blanks); steps 1..N are editor
  iterations (delete -> insert placeholders -> fill). ``fairseq-generate --iter-decode-max-iter N`` picks N (0 =
  CTC only); a row stops early when an iteration changes nothing.
* Dynamic block pruning (``--prune``; :mod:`..modules.pruning.block_pruning`): a model size sampled per update from
  ``--prune-sizes``, thresholds refreshed every ``--prune-refresh-interval`` updates; at generation the size is
  ``--prune-size`` (``fairseq-generate --model-overrides "{'prune_size': 0.5}"``), with thresholds recomputed from
  the trained scores so that exactly that fraction of each layer type is kept. Scores (parameters) and the last
  training thresholds (buffers ``prune_thresholds``, ``prune_thresholds_at``) are in the checkpoint.

Train with ``--task translation_lev_ctc --noise random_delete --criterion ctc``; with a pretrained checkpoint
(``--pretrained-encoder``) binarize with its dictionary and reuse a symbol as blank (``--ctc-blank-symbol '<unk>'``
for RoBERTa / XLM-R, ``'[PAD]'`` for BERT).
"""
import dataclasses
import json
import logging
import math

import torch
from fairseq import utils
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture

from ..modules.pruning.block_pruning import ATTENTION, FFN, DynamicBlockPruning, transformer_layer_linears
from ..modules.backbone.backbone_args import add_dropout_args, require_positive, set_default, set_dropout_defaults, \
    set_encoder_sizes
from ..modules.backbone.bert_backbone import BertBackbone, BertBackboneConfig, BertLMHead
from ..modules.ctc.ctc_alignment import ctc_best_alignment
from ..modules.ctc.ctc_generation import CTCGenerationMixin
from ..modules.ctc.ctc_utils import add_bos_eos, ctc_greedy_collapse, strip_bos_eos
from ..modules.single_stack.deer_input import SLOT_INPUTS, build_input, slot_tokens
from ..modules.ctc.glancing import GlancingSchedule, glancing_mask
from ..modules.single_stack.levenshtein_editor import (
    EditorHeads,
    ctc_roll_in_terms,
    editor_features,
    editor_iteration,
    editor_training_terms,
)
from ..modules.pretrained.pretrained_import import build_pretrained_backbone
from ..modules.pretrained.warm_start import add_init_from_checkpoint_arg, init_from_checkpoint, refuse_with_pretrained, \
    transformer_to_backbone

logger = logging.getLogger(__name__)

BACKBONE_FAMILIES = ("bert", "roberta")


def parse_prune_sizes(spec) -> list:
    """``"1.0 0.75 0.5 0.25"`` (spaces or commas) -> ``[1.0, 0.75, 0.5, 0.25]``; each in (0, 1]."""
    try:
        sizes = [float(x) for x in str(spec).replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"--prune-sizes {spec!r}: expected numbers in (0, 1], e.g. '1.0 0.75 0.5 0.25'")
    if not sizes or any(not 0 < s <= 1 for s in sizes):
        raise ValueError(f"--prune-sizes {spec!r}: every size must lie in (0, 1]")
    return sizes


def _has_layer_shapes() -> bool:
    return "layer_shapes" in {f.name for f in dataclasses.fields(BertBackboneConfig)}


def _random_config(args, dictionary) -> BertBackboneConfig:
    """Random-init config from the architecture flags (BERT or RoBERTa conventions, ``--backbone-family``)."""
    preset = BertBackboneConfig.bert if args.backbone_family == "bert" else BertBackboneConfig.roberta
    pad = dictionary.pad()
    return preset(vocab_size=len(dictionary), embed_dim=args.encoder_embed_dim,
                  ffn_embed_dim=args.encoder_ffn_embed_dim, layers=args.encoder_layers,
                  attention_heads=args.encoder_attention_heads, padding_idx=pad,
                  num_positions=args.max_positions_table + (pad + 1 if args.backbone_family == "roberta" else 0))


def build_deer_backbone(args, dictionary):
    """``(backbone, lm_head_state or None)``.

    First build: from ``--pretrained-encoder`` (the checkpoint fixes sizes, vocabulary and conventions; the config is
    recorded in ``args.backbone_config`` so that a trained model rebuilds the same network when it is reloaded), or
    random from the architecture. Reload: from ``args.backbone_config``. ``--backbone-layer-shapes`` (set by
    ``scripts/export_pruned.py``) is passed to ``BertBackboneConfig(layer_shapes=...)`` when that field exists."""
    dropouts = dict(dropout=args.dropout, attention_dropout=args.attention_dropout,
                    activation_dropout=args.activation_dropout)
    lm_head = None
    if args.pretrained_encoder:
        backbone, imported = build_pretrained_backbone(args.pretrained_encoder, dictionary=dictionary, **dropouts)
        lm_head = imported.lm_head
        cfg = backbone.cfg
        logger.info(f"DEER backbone initialised from {args.pretrained_encoder}: {cfg.layers} layers, "
                    f"{cfg.embed_dim} dims ({imported.source.get('format', '?')})")
    else:
        if getattr(args, "backbone_config", None):
            cfg = BertBackboneConfig.from_dict({**json.loads(args.backbone_config), **dropouts})
        else:
            cfg = dataclasses.replace(_random_config(args, dictionary), **dropouts)
        if getattr(args, "backbone_layer_shapes", None):
            if not _has_layer_shapes():
                raise ValueError("--backbone-layer-shapes needs a BertBackboneConfig with a layer_shapes field "
                                 "(modules/backbone/bert_backbone.py does not have one yet)")
            cfg = dataclasses.replace(cfg, layer_shapes=args.backbone_layer_shapes)
        if cfg.vocab_size != len(dictionary):
            raise ValueError(f"the model's vocabulary has {cfg.vocab_size} rows but the task dictionary has "
                             f"{len(dictionary)} symbols: generate with the data directory the model was trained on")
        backbone = BertBackbone(cfg)
    saved = backbone.cfg.to_dict()
    saved.pop("layer_shapes", None)  # --backbone-layer-shapes carries it
    args.backbone_config = json.dumps(saved)
    for name in ("embed_dim", "layers", "ffn_embed_dim", "attention_heads"):
        setattr(args, f"encoder_{name}", getattr(backbone.cfg, name))
    return backbone, lm_head


class _EncoderOutReorder:
    """``model.encoder`` for fairseq's generator, which calls ``model.encoder.reorder_encoder_out`` (DEER has no
    separate encoder module: its encoder pass is the shared stack)."""

    @staticmethod
    def reorder_encoder_out(encoder_out, new_order):
        new_order = new_order.reshape(-1)
        return {k: v.index_select(0, new_order) for k, v in encoder_out.items()}


@register_model("deer")
class DEERModel(CTCGenerationMixin, BaseFairseqModel):
    """DEER; see the module docstring. Attributes used by ``scripts/export_pruned.py``: ``backbone`` (the
    :class:`BertBackbone`) and ``pruning`` (the :class:`DynamicBlockPruning` controller, or None)."""

    def __init__(self, args, dictionary, backbone: BertBackbone, lm_head_state=None):
        super().__init__()
        self.args = args
        self.dictionary = dictionary
        self.backbone = backbone
        self.lm_head = BertLMHead(backbone.cfg, backbone.embeddings.embed_tokens.weight)
        if lm_head_state:
            missing = self.lm_head.load_state_dict(lm_head_state, strict=False)
            logger.info(f"output layer initialised from the checkpoint's masked-LM head "
                        f"(not in checkpoint: {missing.missing_keys or 'none'})")
        self.editor_heads = EditorHeads(backbone.embed_dim)
        d = dictionary
        self.bos, self.eos, self.pad, self.unk = d.bos(), d.eos(), d.pad(), d.unk()
        self.blank = args.ctc_blank_idx
        self.placeholder = placeholder_index(d)
        self.editor_ctc_roll_in = not getattr(args, "no_editor_ctc_roll_in", False)
        self.editor_start_update = args.editor_start_update
        self.upsample_ratio = args.upsample_ratio
        self.slot_input = args.deer_slot_input
        self.glancing = GlancingSchedule(args.glancing_ratio)
        self.num_updates = 0
        self.prune_lambda = args.prune_lambda
        self.prune_size = args.prune_size
        self.pruning = None
        if args.prune:
            sizes = parse_prune_sizes(args.prune_sizes)
            self.pruning = DynamicBlockPruning([transformer_layer_linears(layer) for layer in backbone.layers],
                                               sizes=sizes, refresh_interval=args.prune_refresh_interval)
            self.register_buffer("prune_thresholds", torch.full((len(sizes), 2), float("nan")))
            self.register_buffer("prune_thresholds_at", torch.tensor(-1, dtype=torch.long))
        elif args.prune_size < 1.0:
            raise ValueError(f"--prune-size {args.prune_size} needs a model trained with --prune")
        self._generation_size_ready = False
        self._training_thresholds = None  # (thresholds, refreshed at) of training while generation's are in force
        self.editor_steps = None
        object.__setattr__(self, "encoder", _EncoderOutReorder())

    # ------------------------------------------------------------------------------------------------- flags
    @staticmethod
    def add_args(parser):
        parser.add_argument("--encoder-layers", type=int, metavar="N", help="backbone layers (random init)")
        parser.add_argument("--encoder-embed-dim", type=int, metavar="N", help="backbone hidden size (random init)")
        parser.add_argument("--encoder-ffn-embed-dim", type=int, metavar="N", help="backbone FFN size (random init)")
        parser.add_argument("--encoder-attention-heads", type=int, metavar="N",
                            help="backbone attention heads (random init)")
        for name in ("layers", "embed-dim", "ffn-embed-dim", "attention-heads"):
            parser.add_argument(f"--decoder-{name}", type=int, metavar="N",
                                help=f"accepted for the benchmark's size flags only: DEER has no decoder, so it "
                                f"must equal --encoder-{name} when given")
        parser.add_argument("--share-all-embeddings", action="store_true",
                            help="accepted for compatibility: DEER always has one embedding table (source, slots, "
                            "editor and output layer), which needs a joined dictionary")
        parser.add_argument("--backbone-family", choices=BACKBONE_FAMILIES,
                            help="conventions of a randomly initialised backbone: 'bert' (positions from 0, two "
                            "token types, LayerNorm eps 1e-12) or 'roberta' (positions from pad + 1, no token types, "
                            "eps 1e-5); a --pretrained-encoder checkpoint sets its own")
        parser.add_argument("--max-positions-table", type=int, metavar="N",
                            help="positions of a randomly initialised backbone; source + slots must fit "
                            "(S x (1 + upsample ratio))")
        parser.add_argument("--pretrained-encoder", type=str, metavar="PATH",
                            help="initialise the shared stack and its LM head from a BERT-family checkpoint: a "
                            "Hugging Face folder, a fairseq RoBERTa/XLM-R model.pt, or the output of "
                            "scripts/convert_pretrained.py; its sizes replace the architecture's and the data must "
                            "use its dictionary (reuse a symbol as CTC blank: --ctc-blank-symbol '<unk>' for "
                            "RoBERTa/XLM-R, '[PAD]' for BERT)")
        add_init_from_checkpoint_arg(
            parser, "its encoder layers initialise the first layers of the stack and its decoder layers' "
            "self-attention and FFN the next ones (its cross-attention is not used), its embeddings and output layer "
            "the word embeddings and LM head; positions, editor heads and pruning scores keep their initialisation "
            "(instead of --pretrained-encoder)")
        parser.add_argument("--backbone-layer-shapes", type=str, default=None, metavar="JSON",
                            help="JSON per-layer shapes of a physically pruned backbone written by "
                            "scripts/export_pruned.py; set by that script, not by hand")
        parser.add_argument("--deer-slot-input", choices=SLOT_INPUTS,
                            help="what the target slots hold: 'copy' (each source token copied upsample-ratio "
                            "times, the paper's choice) or 'placeholder' (one placeholder embedding, <mask> if the "
                            "dictionary has it, else <unk>)")
        parser.add_argument("--glancing-ratio", type=str, metavar="SPEC",
                            help="glancing ratio schedule START:END@STEPS (e.g. 0.5:0.2@300k, linear annealing; "
                            "STEPS may end in k or m) or one number; 0 disables glancing")
        parser.add_argument("--no-editor-ctc-roll-in", action="store_true",
                            help="train the editor on randomly deleted references only, as the paper describes. By "
                            "default its deletion and placeholder classifiers are also trained on the model's own "
                            "greedy CTC output (the editor's input at inference) with the edits that turn it into "
                            "the reference (terms word_del_ctc, mask_ins_ctc): without them the editor over-deletes "
                            "CTC output (toy task, 300 updates: BLEU 66.3 / 39.5 / 24.6 at 0 / 1 / 2 editor steps; "
                            "with them 60.0 / 60.1 / 60.1)")
        parser.add_argument("--editor-start-update", type=int, metavar="N",
                            help="train the editor's terms (mask_ins, word_ins, word_del and the roll-in terms) from "
                            "update N on; before it an update trains the one-step CTC generator alone (the glancing "
                            "pass and one pass over [source ; slots], no editor passes), several times cheaper. A "
                            "curriculum for small budgets: the editor then starts from a stack that already "
                            "translates. 0 (default): every update trains both, as the paper does")
        parser.add_argument("--prune", action="store_true",
                            help="dynamic block pruning in training: a model size sampled per update from "
                            "--prune-sizes, score masks on attention (32x32 blocks) and FFN neurons")
        parser.add_argument("--prune-sizes", type=str, metavar="SIZES",
                            help="model sizes (fractions of the prunable weights kept) sampled in training, e.g. "
                            "'1.0 0.75 0.5 0.25'")
        parser.add_argument("--prune-refresh-interval", type=int, metavar="K",
                            help="recompute the global pruning thresholds every K updates (paper: 200)")
        parser.add_argument("--prune-lambda", type=float, metavar="L",
                            help="weight of the sparsity regulariser mean(sigmoid(scores)) (paper: 10)")
        parser.add_argument("--prune-size", type=float, metavar="M",
                            help="model size used outside training (validation, generation): fraction of each "
                            "layer type's blocks kept; choose it at generation with "
                            "--model-overrides \"{'prune_size': 0.5}\"")
        add_dropout_args(parser)

    @classmethod
    def build_model(cls, args, task):
        deer_base(args)
        if not (hasattr(task, "blank_idx") and hasattr(task, "upsample_ratio")):
            raise ValueError("deer needs --task translation_lev_ctc (CTC blank and --upsample-ratio)")
        noise = getattr(getattr(task, "cfg", None), "noise", "random_delete")
        if noise != "random_delete":
            raise ValueError(f"deer trains its Levenshtein editor on randomly deleted references: use --noise "
                             f"random_delete (got --noise {noise})")
        if task.source_dictionary != task.target_dictionary:
            raise ValueError("deer reads source and target with one embedding table: binarize with "
                             "--joined-dictionary (or the pretrained checkpoint's dict.txt for both sides)")
        for name in ("layers", "embed_dim", "ffn_embed_dim", "attention_heads"):
            dec = getattr(args, f"decoder_{name}", None)
            if dec is not None and dec != getattr(args, f"encoder_{name}"):
                raise ValueError(f"--decoder-{name.replace('_', '-')} {dec} differs from --encoder-"
                                 f"{name.replace('_', '-')} {getattr(args, f'encoder_{name}')}: DEER has one stack")
        if not 0 < args.prune_size <= 1:
            raise ValueError(f"--prune-size must lie in (0, 1], got {args.prune_size}")
        args.upsample_ratio = task.upsample_ratio
        args.ctc_blank_idx = task.blank_idx
        refuse_with_pretrained(args)
        backbone, lm_head = build_deer_backbone(args, task.target_dictionary)
        # the checkpoint is only read when the model is first built: a trained model reloads its own weights
        args.pretrained_encoder = None
        # source + slots share the position table
        limit = int(backbone.max_positions() // (1 + args.upsample_ratio))
        for name in ("max_source_positions", "max_target_positions"):
            given = getattr(args, name, None)
            if given is not None and given < 1:
                raise ValueError(f"--{name.replace('_', '-')} {given}: must be positive")
            setattr(args, name, limit if given is None else min(given, limit))
        model = cls(args, task.target_dictionary, backbone, lm_head)
        init_from_checkpoint(model, args, rename=transformer_to_backbone(
            [f"backbone.layers.{i}." for i in range(len(backbone.layers))], None,
            encoder_embed=["backbone.embeddings.embed_tokens.weight"], decoder_embed=[], output=["lm_head.weight"],
            cross_attention=False))
        return model

    def max_positions(self):
        return (self.args.max_source_positions, self.args.max_target_positions)

    @property
    def allow_length_beam(self):
        return False

    @property
    def allow_ensemble(self):
        return False

    def set_num_updates(self, num_updates):
        self.num_updates = num_updates
        super().set_num_updates(num_updates)

    # ---------------------------------------------------------------------------------------------- pruning
    def _use_training_size(self):
        """Sample this update's model size (identical on every rank) and keep the threshold buffers current."""
        if self.pruning is None:
            return
        if self._training_thresholds is not None:  # back from validation: training's thresholds and cadence
            self.pruning.thresholds, self.pruning._thresholds_at = self._training_thresholds
            self._training_thresholds = None
        self.pruning.set_size(self.pruning.sample_size(self.num_updates, seed=getattr(self.args, "seed", 1)),
                              self.num_updates)
        self._generation_size_ready = False
        with torch.no_grad():
            for i, size in enumerate(self.pruning.sizes):
                for j, kind in enumerate((ATTENTION, FFN)):
                    self.prune_thresholds[i, j] = self.pruning.thresholds.get((kind, size), float("nan"))
            at = self.pruning._thresholds_at
            self.prune_thresholds_at.fill_(-1 if at is None else at)

    def _use_generation_size(self):
        """Outside training: ``--prune-size``, thresholds recomputed from the current scores (exact fractions)."""
        if self.pruning is None or self._generation_size_ready:
            return
        if self._training_thresholds is None:
            # kept for the next training update: validation must not restart the --prune-refresh-interval cadence
            self._training_thresholds = (dict(self.pruning.thresholds), self.pruning._thresholds_at)
        self.pruning.set_size(self.prune_size)
        self.pruning.refresh_thresholds(None)
        self._generation_size_ready = True

    def set_prune_size(self, size: float):
        """Switch the model size used outside training (e.g. between decodings of one loaded model, or before
        ``scripts/export_pruned.py`` reads the masks): the masks of ``size`` are in force on return."""
        if self.pruning is None and size < 1.0:
            raise ValueError("this model was trained without --prune: only size 1.0 exists")
        if not 0 < size <= 1:
            raise ValueError(f"prune size must lie in (0, 1], got {size}")
        self.prune_size = self.args.prune_size = float(size)
        self._generation_size_ready = False
        self._use_generation_size()

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        out = super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)
        if self.pruning is not None:  # the training thresholds (for resuming training with the same masks)
            for i, size in enumerate(self.pruning.sizes):
                for j, kind in enumerate((ATTENTION, FFN)):
                    value = float(self.prune_thresholds[i, j])
                    if not math.isnan(value):
                        self.pruning.thresholds[(kind, size)] = value
            at = int(self.prune_thresholds_at)
            self.pruning._thresholds_at = None if at < 0 else at
            self._generation_size_ready = False
            self._training_thresholds = None
        return out

    # ------------------------------------------------------------------------------------------ encoder pass
    def encode(self, src_tokens, slots, slot_padding_mask, source_states: bool = True):
        """Run the stack over ``[source ; slots]`` with DEER's mask.

        Returns the dict the generator carries (batch first): ``src_tokens`` ``(B, S)``, ``encoder_padding_mask``
        ``(B, S)`` True at source padding, ``source_states`` ``(B, L, S, C)`` the input of every layer at the source
        positions (the editor's cache; only with ``source_states=True``: no editor step follows the glancing pass
        or a CTC-only decoding), ``slot_states`` ``(B, F, C)`` final states of the slots, and
        ``frame_padding_mask`` ``(B, F)`` True at padding slots."""
        src_padding = src_tokens.eq(self.pad)
        inp = build_input(src_tokens, src_padding, slots, slot_padding_mask, self.backbone.cfg.type_vocab_size)
        out = self.backbone(inp.tokens, padding_mask=inp.padding_mask, token_type_ids=inp.token_type_ids,
                            self_attn_mask=inp.attn_mask, return_all_hiddens=source_states)
        s = inp.num_source
        enc = {"src_tokens": src_tokens, "encoder_padding_mask": src_padding,
               "slot_states": out["hidden_states"][:, s:], "frame_padding_mask": slot_padding_mask}
        if source_states:
            enc["source_states"] = torch.stack([h[:, :s] for h in out["inner_states"][:-1]], 1)
        return enc

    def source_states(self, src_tokens):
        """``(B, L, S, C)``: the editor's cache from a pass over the source alone (the source never sees the slots,
        so this is what :meth:`encode` keeps); for an encoder pass run without it."""
        src_padding = src_tokens.eq(self.pad)
        types = None if self.backbone.cfg.type_vocab_size < 2 else torch.zeros_like(src_tokens)
        out = self.backbone(src_tokens, padding_mask=src_padding, token_type_ids=types, return_all_hiddens=True)
        return torch.stack(out["inner_states"][:-1], 1)

    def initial_slots(self, src_tokens):
        """``(slots (B, F), slot_padding_mask (B, F))`` before glancing."""
        return slot_tokens(src_tokens, src_tokens.eq(self.pad), self.upsample_ratio, self.slot_input,
                           self.placeholder, self.pad)

    def glance(self, src_tokens, slots, slot_padding_mask, ctc_targets, ratio):
        """Glancing: a pass without gradient, the Viterbi CTC alignment of ``ctc_targets`` ``(B, L)``, and
        ``round(ratio x mismatches)`` slots per sentence replaced by their aligned symbol.

        Returns ``(slots (B, F), revealed (B, F) bool, alignment (B, F), prediction (B, F))``."""
        with torch.no_grad():
            enc = self.encode(src_tokens, slots, slot_padding_mask, source_states=False)
            lprobs = utils.log_softmax(self.lm_head(enc["slot_states"]), -1)
            alignment, score = ctc_best_alignment(lprobs, slot_padding_mask, ctc_targets, ctc_targets.eq(self.pad),
                                                  self.blank)
            prediction = lprobs.argmax(-1)
            revealed = glancing_mask(alignment, prediction, slot_padding_mask, ratio)
            revealed &= torch.isfinite(score)[:, None]  # no alignment, nothing to reveal
        return torch.where(revealed, alignment, slots), revealed, alignment, prediction

    # ---------------------------------------------------------------------------------------------- training
    def forward(self, src_tokens, src_lengths, prev_output_tokens, tgt_tokens, **kwargs):
        """Loss terms: ``ctc`` (CTC over the slots), ``mask_ins`` / ``word_ins`` / ``word_del`` (editor, when
        ``prev_output_tokens`` holds the corrupted references) and ``prune_reg`` (with ``--prune``, in training)."""
        if self.training:
            self._use_training_size()
        else:
            self._use_generation_size()
        if self.pruning is not None and torch.is_grad_enabled():
            # one masked copy of each pruned weight per update, shared by the 6-7 passes (and their backward)
            with self.pruning.cached_masks():
                return self._forward(src_tokens, prev_output_tokens, tgt_tokens)
        return self._forward(src_tokens, prev_output_tokens, tgt_tokens)

    def _forward(self, src_tokens, prev_output_tokens, tgt_tokens):
        slots, slot_padding = self.initial_slots(src_tokens)
        ctc_targets = strip_bos_eos(tgt_tokens, self.bos, self.eos, self.pad)
        ratio = self.glancing(self.num_updates) if self.training else 0.0
        if ratio > 0:
            slots = self.glance(src_tokens, slots, slot_padding, ctc_targets, ratio)[0]
        enc = self.encode(src_tokens, slots, slot_padding)
        terms = {"ctc": {"ctc": True, "out": self.lm_head(enc["slot_states"]), "out_mask": ~slot_padding,
                         "tgt": ctc_targets, "blank": self.blank, "nll_loss": True}}
        if prev_output_tokens is not None and self.training and self.num_updates < self.editor_start_update:
            # CTC-only update (--editor-start-update): the editor heads still enter the graph, with weight 0, so
            # that DDP (pytorch_ddp, find_unused_parameters=False) finds a gradient for every parameter
            idle = sum(p.sum() for p in self.editor_heads.parameters()) * 0.0
            terms["editor_idle"] = {"loss": idle, "factor": 0.0}
        elif prev_output_tokens is not None:
            # The editor reads the cached source states without detaching them (a choice; the paper says only
            # "cached hidden states"): its losses also train the shared stack through the source positions of the
            # CTC pass, as they would if the editor ran the whole stack over [source ; editor tokens]. Detaching
            # would save that backward work and memory but leave the source side to the CTC term alone.
            features = lambda tokens: self.editor_features(enc, tokens)  # noqa: E731
            terms.update(editor_training_terms(
                features, self.lm_head, self.editor_heads, prev_output_tokens, tgt_tokens, self.pad, self.placeholder,
                forbidden=self.never_inserted(), label_smoothing=getattr(self.args, "label_smoothing", 0.0) or 0.0))
            if self.editor_ctc_roll_in:
                with torch.no_grad():
                    # step 0's tokens: the argmax of the logits without <s>, </s> and <pad> (unless it is the blank),
                    # read off the term's logits (no copy of them)
                    hyps, _ = ctc_greedy_collapse(terms["ctc"]["out"].detach(), slot_padding, self.blank, self.pad,
                                                  excluded=sorted({self.bos, self.eos, self.pad} - {self.blank}))
                    hyps, _ = add_bos_eos(hyps, torch.zeros(hyps.shape, device=hyps.device), self.bos, self.eos,
                                          self.pad)
                terms.update(ctc_roll_in_terms(features, self.editor_heads, hyps, tgt_tokens, self.pad, self.bos,
                                               self.eos, self.placeholder))
        if self.pruning is not None and self.training:
            # also at --prune-lambda 0 (weight 0, zero gradient): on size-1.0 updates the scores are used nowhere
            # else, and a parameter outside the graph fails DDP (pytorch_ddp, find_unused_parameters=False)
            terms["prune_reg"] = {"loss": self.pruning.regularization(), "factor": self.prune_lambda}
        return terms

    def never_inserted(self):
        """Token ids the editor never inserts (at decoding, and in the training argmax that its deletion targets
        come from): the CTC blank, ``<s>``, ``</s>``, ``<pad>`` and the placeholder."""
        return sorted({self.blank, self.bos, self.eos, self.pad, self.placeholder})

    def editor_features(self, enc, tokens, rows=None):
        """Editor states ``(b, T, C)`` of ``tokens`` ``(b, T)``; ``rows`` ``(B,)`` bool selects the sentences of
        ``enc`` they belong to (all when None)."""
        if "source_states" not in enc:  # an encoder pass that expected no editor step (see set_editor_steps)
            enc["source_states"] = self.source_states(enc["src_tokens"])
        src, src_pad, states = enc["src_tokens"], enc["encoder_padding_mask"], enc["source_states"]
        if rows is not None and not bool(rows.all()):  # (all rows: no copy of the cache)
            src, src_pad, states = src[rows], src_pad[rows], states[rows]
        return editor_features(self.backbone, src, src_pad, states, tokens, tokens.eq(self.pad))

    # -------------------------------------------------------------------------------------------- generation
    def forward_encoder(self, encoder_inputs):
        """The encoder pass of generation: the whole stack over ``[source ; slots]`` (see :meth:`encode`)."""
        src_tokens = encoder_inputs[0]
        self._use_generation_size()
        slots, slot_padding = self.initial_slots(src_tokens)
        return self.encode(src_tokens, slots, slot_padding, source_states=self.editor_steps != 0)

    def set_editor_steps(self, steps):
        """Editor iterations the generator will run (``--iter-decode-max-iter``; the task's ``build_generator``
        calls this): with 0 the encoder pass keeps no per-layer source cache. None (the default): unknown, keep it.
        A cache that is missing when an editor step comes after all is rebuilt from the source alone."""
        self.editor_steps = steps

    def ctc_frame_lprobs(self, encoder_out):
        """Slot log-probabilities ``(B, F, V)`` for step 0 and the slot padding mask ``(B, F)``. ``<s>``, ``</s>``
        and ``<pad>`` (unless it is the blank) are never emitted: the editor could not delete them later."""
        lprobs = utils.log_softmax(self.lm_head(encoder_out["slot_states"]), -1)
        never = sorted({self.bos, self.eos, self.pad} - {self.blank})
        lprobs[:, :, never] = float("-inf")
        return lprobs, encoder_out["frame_padding_mask"]

    def ctc_frame_padding_mask(self, encoder_out):
        return encoder_out["frame_padding_mask"]

    def forward_decoder(self, decoder_out, encoder_out, eos_penalty=0.0, max_ratio=None, decoding_format=None,
                        **kwargs):
        """Step 0: greedy CTC. Steps >= 1: one editor iteration (delete -> insert placeholders -> fill)."""
        if decoder_out.step == 0:
            return super().forward_decoder(decoder_out, encoder_out, decoding_format=decoding_format)
        tokens, scores = decoder_out.output_tokens, decoder_out.output_scores
        src_lens = (~encoder_out["encoder_padding_mask"]).sum(1)
        max_lens = torch.full_like(src_lens, 255) if max_ratio is None else \
            (src_lens.float() * max_ratio).clamp(min=10).long()
        max_lens = torch.minimum(max_lens, self.backbone.max_positions() - src_lens)  # the position table

        def features(rows, rows_tokens):
            return self.editor_features(encoder_out, rows_tokens, rows)

        tokens, scores = editor_iteration(
            features, self.lm_head, self.editor_heads, tokens, scores, max_lens, self.pad, self.bos, self.eos,
            self.placeholder, eos_penalty=eos_penalty,
            forbidden=self.never_inserted())
        history = decoder_out.history
        if history is not None:
            history.append(tokens.clone())
        return decoder_out._replace(output_tokens=tokens, output_scores=scores, attn=None, history=history)


def placeholder_index(dictionary) -> int:
    """The token editor placeholders (and ``placeholder`` slots) hold: the dictionary's mask symbol (``<mask>`` /
    ``[MASK]``) when it has one, else ``<unk>``."""
    mask = getattr(dictionary, "mask", None)
    if callable(mask) and mask() is not None:
        return mask()
    for symbol in ("<mask>", "[MASK]"):
        if symbol in dictionary.indices:
            return dictionary.index(symbol)
    return dictionary.unk()


@register_model_architecture("deer", "deer_base")
def deer_base(args):
    """Defaults shared by every DEER size (12 layers, 768 dims, 12 heads, FFN 3072, RoBERTa conventions)."""
    set_encoder_sizes(args, layers=12, dim=768, heads=12, ffn=3072)
    set_default(args, "backbone_family", "roberta")
    set_default(args, "max_positions_table", 512)
    set_default(args, "pretrained_encoder", None)
    set_default(args, "init_from_checkpoint", None)
    set_default(args, "backbone_layer_shapes", None)
    set_default(args, "backbone_config", None)
    set_default(args, "deer_slot_input", "copy")
    set_default(args, "glancing_ratio", "0.5:0.2@300k")
    set_default(args, "editor_start_update", 0)
    set_default(args, "prune", False)
    set_default(args, "prune_sizes", "1.0 0.75 0.5 0.25")
    set_default(args, "prune_refresh_interval", 200)
    set_default(args, "prune_lambda", 10.0)
    set_default(args, "prune_size", 1.0)
    set_dropout_defaults(args)
    require_positive(args, "max_positions_table")
    if args.prune_refresh_interval < 1:
        raise ValueError(f"--prune-refresh-interval {args.prune_refresh_interval}: must be >= 1 (updates between "
                         "threshold refreshes)")
    if args.prune_lambda < 0:
        raise ValueError(f"--prune-lambda {args.prune_lambda}: must be >= 0")
    if args.editor_start_update < 0:
        raise ValueError(f"--editor-start-update {args.editor_start_update}: must be >= 0 (the update from which "
                         "the editor is trained)")


def _deer_sizes(args, layers, dim, heads, ffn, family):
    set_encoder_sizes(args, layers, dim, heads, ffn)
    set_default(args, "backbone_family", family)
    deer_base(args)


@register_model_architecture("deer", "deer_xlmr")
def deer_xlmr(args):
    """XLM-R base (the paper's MT backbone): 12 layers, 768 dims, 12 heads, FFN 3072; vocabulary from the
    --pretrained-encoder checkpoint."""
    _deer_sizes(args, 12, 768, 12, 3072, "roberta")


@register_model_architecture("deer", "deer_roberta")
def deer_roberta(args):
    """RoBERTa base (the paper's backbone for monolingual generation): same sizes as deer_xlmr."""
    _deer_sizes(args, 12, 768, 12, 3072, "roberta")


@register_model_architecture("deer", "deer_small")
def deer_small(args):
    """MiniLM-L6-H384 sizes (6 layers, 384 dims, 12 heads, FFN 1536; BERT conventions): the offline MiniLM
    checkpoint fits it; a CPU size."""
    _deer_sizes(args, 6, 384, 12, 1536, "bert")


@register_model_architecture("deer", "deer_tiny")
def deer_tiny(args):
    """Test size: 2 layers, 64 dims, 2 heads, FFN 128 (BERT conventions)."""
    _deer_sizes(args, 2, 64, 2, 128, "bert")
