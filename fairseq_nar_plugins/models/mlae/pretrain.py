"""MLAE pretraining: the model ``mlae`` (architectures ``mlae_12_4``, ``mlae_8_8``, ``mlae_9_4``, ``mlae_small``,
``mlae_tiny``) for the task ``masked_autoencoder_pretrain`` and fairseq's ``nat_loss`` criterion.

A batch holds span-masked blocks ``[<s> ... </s>]`` (15 % of the tokens in spans of mean length 3 replaced in place by
the mask symbol: ``--corruptions span``) and targets that are ``<pad>`` except at the masked positions
(``--loss-positions corrupted``). The model (MAE-style, He et al. 2021; MLAE §3.1):

1. encoder: the visible tokens only (``--mlae-encoder-input drop``), moved together and embedded at their original
   positions, through the encoder stack -> latents ``E`` ``(B, S_vis, C)``. ``mask`` instead gives the encoder the
   whole block with the mask tokens in place (BERT-style);
2. decoder input ``(B, T, C)``, the full block: the latent of each visible token at its position, the ``[MASK]``
   embedding (a row of the shared token-embedding table) at each masked position; plus the decoder's position
   (and type) embeddings, LayerNorm, dropout;
3. a light bidirectional decoder (fewer layers) rebuilds the block; with ``--mlae-cross-attention`` every decoder
   layer also attends to ``E`` (the variant MLAE pretrains for NAR fine-tuning, §4.4 / Table 6);
4. masked-LM head (tied to the token embeddings), applied at the masked positions only; ``nat_loss`` term
   ``word_ins``: cross-entropy on the masked positions (``--label-smoothing``).

The decoder input of the task (``prev_output_tokens``) is not used: the decoder's input is built from the encoder.
"""
import logging

import torch
from fairseq import utils
from fairseq.models import FairseqDecoder, FairseqEncoderDecoderModel, register_model, register_model_architecture
from torch import Tensor

from ...modules.backbone.bert_backbone import BertBackbone, BertLMHead
from .common import (
    ENCODER_INPUTS,
    MLAEEncoder,
    add_mlae_args,
    build_decoder_backbone,
    build_encoder_backbone,
    compact_visible,
    register_sizes,
)

logger = logging.getLogger(__name__)


class MLAEDecoder(FairseqDecoder):
    """The bidirectional MLAE decoder: a BERT-family stack (optionally with cross-attention to the encoder) and a
    masked-LM head tied to the shared token embeddings. Pretraining feeds it vectors (latents and ``[MASK]``
    embeddings), the NAR fine-tuning (``mlae_cmlm``) tokens."""

    def __init__(self, dictionary, backbone: BertBackbone, lm_head_state=None):
        super().__init__(dictionary)
        self.backbone = backbone
        self.lm_head = BertLMHead(backbone.cfg, backbone.embeddings.embed_tokens.weight)
        if lm_head_state:
            missing = self.lm_head.load_state_dict(lm_head_state, strict=False)
            logger.info(f"decoder output layer initialised from the checkpoint's masked-LM head (not in the "
                        f"checkpoint: {missing.missing_keys or 'none'})")

    def forward(self, tokens=None, encoder_out=None, token_embeddings=None, padding_mask=None, normalize=False,
                output_mask=None, **kwargs):
        """Args:
            tokens: ``(B, T)`` decoder input tokens (or ``token_embeddings`` ``(B, T, C)`` instead).
            encoder_out: the encoder's output dict (read by cross-attention, when the stack has it).
            padding_mask: ``(B, T)`` True at padding (default: ``tokens == pad``).
            output_mask: ``(B, T)`` bool: apply the masked-LM head at these positions only (pretraining's masked
                positions, as fairseq's ``masked_lm`` does with ``masked_tokens``: the head over the whole
                vocabulary is the costliest layer of a small model). Default: every position.

        Returns:
            ``(B, T, V)`` logits (log-probabilities with ``normalize``); with ``output_mask``, ``(N, V)`` for its
            ``N`` True positions in row-major order.
        """
        cross = self.backbone.has_cross_attention
        states = self.backbone(
            tokens, padding_mask=padding_mask, token_embeddings=token_embeddings,
            encoder_out=encoder_out["encoder_out"] if cross else None,
            encoder_padding_mask=encoder_out["encoder_padding_mask"] if cross else None,
        )["hidden_states"]
        logits = self.lm_head(states if output_mask is None else states[output_mask])
        return utils.log_softmax(logits, -1) if normalize else logits

    def max_positions(self):
        return self.backbone.max_positions()


@register_model("mlae")
class MLAEModel(FairseqEncoderDecoderModel):
    """MLAE pretraining model; see the module docstring."""

    def __init__(self, args, encoder: MLAEEncoder, decoder: MLAEDecoder, mask_idx: int):
        super().__init__(encoder, decoder)
        self.args = args
        self.mask_idx = mask_idx
        self.pad = decoder.dictionary.pad()
        self.encoder_input = args.mlae_encoder_input

    @staticmethod
    def add_args(parser):
        add_mlae_args(parser)
        parser.add_argument("--mlae-cross-attention", action="store_true",
                            help="give every decoder layer cross-attention to the encoder's latents during "
                            "pretraining (the variant MLAE uses for NAR fine-tuning, §4.4 / Table 6); default: "
                            "none, the decoder reads the latents as its input only")
        parser.add_argument("--mlae-encoder-input", choices=ENCODER_INPUTS,
                            help="'drop' (default, MAE-style): the encoder reads the visible tokens only, at their "
                            "original positions; 'mask': the whole block with the mask tokens in place (BERT-style)")

    @classmethod
    def build_model(cls, args, task):
        mlae_12_4(args)  # fills only what the architecture left unset (builds outside fairseq-train)
        check_pretraining_task(task)
        dictionary = task.source_dictionary
        args.mlae_mask_symbol = dictionary[task.mask_idx]
        enc_backbone, lm_head = build_encoder_backbone(args, dictionary)
        dec_backbone, dec_lm_head = build_decoder_backbone(args, dictionary, enc_backbone.cfg,
                                                           args.mlae_cross_attention)
        dec_backbone.embeddings.embed_tokens = enc_backbone.embeddings.embed_tokens
        encoder = MLAEEncoder(dictionary, enc_backbone, frame_source=False)
        decoder = MLAEDecoder(dictionary, dec_backbone, dec_lm_head or lm_head)
        args.pretrained_encoder = args.pretrained_decoder = None  # read once; a trained model reloads its weights
        return cls(args, encoder, decoder, task.mask_idx)

    def max_positions(self):
        return (self.encoder.max_positions(), self.decoder.max_positions())

    def encode_visible(self, src_tokens: Tensor):
        """The encoder pass over a masked block ``(B, T)``. Returns ``(encoder_out, visible (B, T), index (B, T))``:
        the encoder's output dict over the tokens it read, where the visible tokens are, and for each block
        position the encoder slot holding it."""
        real = src_tokens.ne(self.pad)
        visible = real & src_tokens.ne(self.mask_idx)
        keep = visible if self.encoder_input == "drop" else real
        tokens, positions, _, index = compact_visible(src_tokens, keep, self.pad)
        return self.encoder(tokens, positions=positions), visible, index

    def decoder_input(self, encoder_out, visible: Tensor, index: Tensor) -> Tensor:
        """``(B, T, C)``: the encoder state of each visible token at its block position, the ``[MASK]`` embedding
        elsewhere (before the decoder's position embeddings and LayerNorm)."""
        states = encoder_out["encoder_out"]
        at_block = states.gather(1, index[:, :, None].expand(-1, -1, states.size(-1)))
        mask_vector = self.decoder.backbone.embeddings.embed_tokens.weight[self.mask_idx]
        return torch.where(visible[:, :, None], at_block, mask_vector.to(states.dtype).expand_as(at_block))

    def forward(self, src_tokens, src_lengths, prev_output_tokens=None, tgt_tokens=None, **kwargs):
        """``nat_loss`` term ``word_ins``: the logits ``(N, V)`` of the ``N`` positions where ``tgt_tokens``
        ``(B, T)`` is not ``<pad>`` (the masked ones; row-major order), their targets ``(N,)`` and an all-True
        mask ``(N,)`` (``nat_loss`` counts it; a batch without masks gives loss 0)."""
        encoder_out, visible, index = self.encode_visible(src_tokens)
        masked = tgt_tokens.ne(self.pad)
        logits = self.decoder(token_embeddings=self.decoder_input(encoder_out, visible, index),
                              encoder_out=encoder_out, padding_mask=src_tokens.eq(self.pad), output_mask=masked)
        return {"word_ins": {"out": logits, "tgt": tgt_tokens[masked], "mask": masked.new_ones(logits.size(0)),
                             "ls": getattr(self.args, "label_smoothing", 0.0), "nll_loss": True}}


def check_pretraining_task(task):
    """MLAE's input must say where the masks are: refuse tasks and corruptions that do not."""
    cfg = getattr(task, "cfg", None)
    names = getattr(task, "corruption_names", None)
    if names is None or not hasattr(task, "mask_idx"):
        raise ValueError("the mlae model pretrains with --task masked_autoencoder_pretrain (fine-tune with "
                         "mlae_cmlm / mlae_seq2seq / mlae_unilm / mlae_classifier)")
    if list(names) != ["span"]:
        raise ValueError(f"mlae pretrains on span-masked blocks: use --corruptions span (got --corruptions "
                         f"{','.join(names)}; 'mask' hides which tokens BERT's 10 % random/unchanged replacements "
                         "hit, 'infill' and 'shuffle' move tokens)")
    if cfg.loss_positions != "corrupted":
        raise ValueError(f"mlae's loss covers the masked positions only: use --loss-positions corrupted (got "
                         f"--loss-positions {cfg.loss_positions})")


def mlae_pretrain_defaults(args):
    if getattr(args, "mlae_cross_attention", None) is None:
        args.mlae_cross_attention = False
    if getattr(args, "mlae_encoder_input", None) is None:
        args.mlae_encoder_input = "drop"


ARCHS = register_sizes("mlae", register_model_architecture, mlae_pretrain_defaults)
mlae_12_4 = ARCHS["12_4"]
