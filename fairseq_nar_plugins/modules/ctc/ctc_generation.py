"""The ``IterativeRefinementGenerator`` contract for one-pass CTC models (shared by every CTC model here).

A model using :class:`CTCGenerationMixin` implements ``ctc_frame_lprobs(encoder_out) -> (lprobs (B, F, V),
frame_padding_mask (B, F))`` and has ``bos``/``eos``/``pad``/``unk``/``blank`` attributes. Step 0 of the generator is
greedy CTC decoding (argmax, merge repeats, drop blanks); any further step recomputes the same output, so the generator
stops (its "no change" rule). Models that refine CTC output (DEER's Levenshtein editor) override ``forward_decoder``
for steps >= 1.
"""
import torch
from fairseq.iterative_refinement_generator import DecoderOut

from .ctc_utils import add_bos_eos, ctc_greedy_collapse


def placeholder_rows(lengths, like, bos, eos, pad, unk, dtype) -> DecoderOut:
    """The generator's initial ``DecoderOut``: rows ``[<s>, <unk> x (L - 2), </s>]`` of the given lengths ``(B,)``,
    right-padded, zero scores."""
    pos = torch.arange(int(lengths.max()), device=like.device)[None, :]
    tokens = like.new_full((lengths.size(0), pos.size(1)), pad).masked_fill(pos < lengths[:, None], unk)
    tokens[:, 0] = bos
    tokens.scatter_(1, (lengths - 1)[:, None], eos)
    return DecoderOut(output_tokens=tokens, output_scores=torch.zeros(tokens.shape, dtype=dtype, device=like.device),
                      attn=None, step=0, max_step=0, history=None)


class CTCGenerationMixin:
    def ctc_frame_lprobs(self, encoder_out):
        raise NotImplementedError

    def ctc_frame_padding_mask(self, encoder_out):
        """``(B, F)`` padding mask of the decoder frames (without running the decoder)."""
        raise NotImplementedError

    def initialize_output_tokens(self, encoder_out, src_tokens):
        """``[<s>, <unk> x (F - 2), </s>]`` per sentence, ``(B, F)``: one slot per decoder frame."""
        lengths = (~self.ctc_frame_padding_mask(encoder_out)).sum(1)
        return placeholder_rows(lengths, src_tokens, self.bos, self.eos, self.pad, self.unk,
                                next(self.parameters()).dtype)

    def forward_decoder(self, decoder_out, encoder_out, decoding_format=None, **kwargs):
        """Greedy CTC decoding; rows ``[<s>, tokens, </s>]`` with each token's log-probability. ``<s>``, ``</s>``
        and ``<pad>`` (unless it is the blank) are never emitted (a BERT vocabulary's ``[CLS]`` / ``[SEP]`` would
        otherwise appear mid-sentence); the next best symbol of the frame takes their place."""
        lprobs, frame_padding_mask = self.ctc_frame_lprobs(encoder_out)
        never = sorted({self.bos, self.eos, self.pad} - {self.blank})
        lprobs[:, :, never] = float("-inf")
        tokens, scores = ctc_greedy_collapse(lprobs, frame_padding_mask, self.blank, self.pad)
        output_tokens, output_scores = add_bos_eos(tokens, scores, self.bos, self.eos, self.pad)
        history = decoder_out.history
        if history is not None:
            history.append(output_tokens.clone())
        return decoder_out._replace(output_tokens=output_tokens, output_scores=output_scores, attn=None,
                                    history=history)
