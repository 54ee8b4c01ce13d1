"""``nat_ctc_transformer``: a plain non-autoregressive Transformer with a CTC output layer.

The CTC baseline of the papers (Libovicky & Helcl 2018; Gu & Kong 2021) and the test bed for the machinery that BnB
and DEER build on. The decoder never sees target tokens: its input is the final encoder states, each source position
copied onto ``--upsample-ratio`` consecutive frames (``modules.ctc.ctc_utils.upsample_states``), plus the decoder's
position embeddings. Its layers use bidirectional self-attention over the frames and cross-attention to the encoder.
One pass emits a distribution per frame; greedy CTC decoding (argmax, merge repeats, drop blanks) reads the output.

Train with ``--task translation_lev_ctc --criterion ctc``; decode with ``fairseq-generate --iter-decode-max-iter 0``.
"""
import torch
from fairseq.models import register_model, register_model_architecture
from fairseq.models.nat import FairseqNATDecoder, FairseqNATModel
from fairseq.models.nat.nonautoregressive_transformer import base_architecture as nat_base_architecture
from fairseq.modules.transformer_sentence_encoder import init_bert_params

from ..modules.ctc.ctc_generation import CTCGenerationMixin
from ..modules.ctc.ctc_utils import strip_bos_eos, upsample_states
from ..modules.nat.source_copy import ratio_copy_index
from ..modules.pretrained.warm_start import add_init_from_checkpoint_arg, init_from_checkpoint


def require_ctc_task(task, model_name: str):
    """Models with a CTC output read the blank index and upsampling ratio from the task."""
    if not (hasattr(task, "blank_idx") and hasattr(task, "upsample_ratio")):
        raise ValueError(
            f"{model_name} needs a task that defines a CTC blank and --upsample-ratio: use --task translation_lev_ctc"
        )


@register_model("nat_ctc_transformer")
class NATCTCTransformerModel(CTCGenerationMixin, FairseqNATModel):
    @property
    def allow_ensemble(self):
        return False

    @staticmethod
    def add_args(parser):
        FairseqNATModel.add_args(parser)
        add_init_from_checkpoint_arg(
            parser, "every tensor with the same name and shape (encoder, embeddings, decoder layers; its layers must "
            "match, so build the student post-LN like fairseq's transformer unless the teacher was pre-LN)")

    @classmethod
    def build_model(cls, args, task):
        require_ctc_task(task, "nat_ctc_transformer")
        args.upsample_ratio = task.upsample_ratio
        model = super().build_model(args, task)
        model.blank = task.blank_idx
        init_from_checkpoint(model, args)
        return model

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        decoder = CTCUpsamplingDecoder(args, tgt_dict, embed_tokens)
        if getattr(args, "apply_bert_init", False):
            decoder.apply(init_bert_params)
        return decoder

    def forward(self, src_tokens, src_lengths, prev_output_tokens, tgt_tokens, **kwargs):
        """Returns the ``ctc`` criterion's term: frame logits ``(B, F, V)``, frame mask ``(B, F)``, and targets
        ``(B, L)`` without ``<s>``/``</s>``. ``prev_output_tokens`` is unused: the decoder never reads targets."""
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, **kwargs)
        logits, frame_padding_mask = self.decoder(normalize=False, encoder_out=encoder_out)
        return {
            "word_ins": {
                "ctc": True,
                "out": logits,
                "out_mask": ~frame_padding_mask,
                "tgt": strip_bos_eos(tgt_tokens, self.bos, self.eos, self.pad),
                "blank": self.blank,
                "nll_loss": True,
            }
        }

    def ctc_frame_lprobs(self, encoder_out):
        return self.decoder(normalize=True, encoder_out=encoder_out)

    def ctc_frame_padding_mask(self, encoder_out):
        src_padding = encoder_out["encoder_padding_mask"][0]  # fairseq's TransformerEncoder always returns it
        return ratio_copy_index((~src_padding).sum(1), self.decoder.upsample_ratio)[1]


class CTCUpsamplingDecoder(FairseqNATDecoder):
    """Non-autoregressive decoder over ``round(ratio x source length)`` frames initialised from encoder states."""

    def __init__(self, args, dictionary, embed_tokens, no_encoder_attn=False):
        super().__init__(args, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn)
        self.upsample_ratio = args.upsample_ratio

    def forward(self, normalize, encoder_out, prev_output_tokens=None, step=0, **unused):
        """Returns ``(out, frame_padding_mask)``: ``(B, F, V)`` logits (log-probabilities if ``normalize``) and a
        ``(B, F)`` bool mask, True at padding frames."""
        features, frame_padding_mask = self.extract_features(encoder_out)
        out = self.output_layer(features)
        return (out.log_softmax(-1) if normalize else out), frame_padding_mask

    def extract_features(self, encoder_out, **unused):
        """Decoder states ``(B, F, C)`` and the frame padding mask ``(B, F)``."""
        enc = encoder_out["encoder_out"][0].transpose(0, 1)  # B x S x C
        src_padding = (
            encoder_out["encoder_padding_mask"][0]
            if encoder_out["encoder_padding_mask"]
            else enc.new_zeros(enc.shape[:2], dtype=bool)
        )
        x, frame_padding_mask, _ = upsample_states(enc, src_padding, self.upsample_ratio)
        if self.embed_positions is not None:
            # positions are computed from a token tensor; any non-pad id marks a real frame
            frame_tokens = torch.where(frame_padding_mask, self.padding_idx, self.dictionary.unk())
            x = x + self.embed_positions(frame_tokens)
        x = self.dropout_module(x).transpose(0, 1)  # F x B x C
        for layer in self.layers:
            x, _, _ = layer(
                x,
                encoder_out["encoder_out"][0],
                encoder_out["encoder_padding_mask"][0] if encoder_out["encoder_padding_mask"] else None,
                self_attn_mask=None,
                self_attn_padding_mask=frame_padding_mask,
            )
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        x = x.transpose(0, 1)
        if self.project_out_dim is not None:
            x = self.project_out_dim(x)
        return x, frame_padding_mask


@register_model_architecture("nat_ctc_transformer", "nat_ctc_transformer")
def nat_ctc_transformer_base(args):
    """Transformer-base sizes (6+6 layers, 512 dims, 8 heads, FFN 2048)."""
    nat_base_architecture(args)


def _set_defaults(args, layers, dim, heads, ffn):
    """Encoder and decoder of ``layers`` layers, ``dim`` wide, ``heads`` heads, FFN ``ffn`` (flags still win)."""
    for side in ("encoder", "decoder"):
        setattr(args, f"{side}_layers", getattr(args, f"{side}_layers", layers))
        setattr(args, f"{side}_attention_heads", getattr(args, f"{side}_attention_heads", heads))
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", dim)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", ffn)
    nat_base_architecture(args)


@register_model_architecture("nat_ctc_transformer", "nat_ctc_transformer_small")
def nat_ctc_transformer_small(args):
    """CPU size: 3+3 layers, 256 dims, 4 heads, FFN 1024 (the AR baseline size of the benchmarks)."""
    _set_defaults(args, layers=3, dim=256, heads=4, ffn=1024)


@register_model_architecture("nat_ctc_transformer", "nat_ctc_transformer_tiny")
def nat_ctc_transformer_tiny(args):
    """Test size: 2+2 layers, 64 dims, 2 heads, FFN 128."""
    _set_defaults(args, layers=2, dim=64, heads=2, ffn=128)
