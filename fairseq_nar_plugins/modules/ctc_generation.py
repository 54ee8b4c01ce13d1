"""The ``IterativeRefinementGenerator`` contract for one-pass CTC models (shared by every CTC model here).

A model using :class:`CTCGenerationMixin` implements ``ctc_frame_lprobs(encoder_out) -> (lprobs (B, F, V),
frame_padding_mask (B, F))`` and has ``bos``/``eos``/``pad``/``unk``/``blank`` attributes. Step 0 of the generator is
greedy CTC decoding (argmax, merge repeats, drop blanks); any further step recomputes the same output, so the generator
stops (its "no change" rule). Models that refine CTC output (DEER's Levenshtein editor) override ``forward_decoder``
for steps >= 1.
"""
from fairseq.iterative_refinement_generator import DecoderOut

from .ctc_utils import add_bos_eos, ctc_greedy_collapse


class CTCGenerationMixin:
    def ctc_frame_lprobs(self, encoder_out):
        raise NotImplementedError

    def ctc_frame_padding_mask(self, encoder_out):
        """``(B, F)`` padding mask of the decoder frames (without running the decoder)."""
        raise NotImplementedError

    def initialize_output_tokens(self, encoder_out, src_tokens):
        """``[<s>, <unk> x (F - 2), </s>]`` per sentence, ``(B, F)``: one slot per decoder frame."""
        frame_padding_mask = self.ctc_frame_padding_mask(encoder_out)
        tokens = src_tokens.new_full(frame_padding_mask.shape, self.unk).masked_fill(frame_padding_mask, self.pad)
        lengths = (~frame_padding_mask).sum(1)
        tokens[:, 0] = self.bos
        tokens.scatter_(1, (lengths - 1)[:, None], self.eos)
        return DecoderOut(
            output_tokens=tokens,
            output_scores=tokens.new_zeros(tokens.shape, dtype=next(self.parameters()).dtype),
            attn=None,
            step=0,
            max_step=0,
            history=None,
        )

    def forward_decoder(self, decoder_out, encoder_out, decoding_format=None, **kwargs):
        """Greedy CTC decoding; rows ``[<s>, tokens, </s>]`` with each token's log-probability."""
        lprobs, frame_padding_mask = self.ctc_frame_lprobs(encoder_out)
        tokens, scores = ctc_greedy_collapse(lprobs, frame_padding_mask, self.blank, self.pad)
        output_tokens, output_scores = add_bos_eos(tokens, scores, self.bos, self.eos, self.pad)
        history = decoder_out.history
        if history is not None:
            history.append(output_tokens.clone())
        return decoder_out._replace(output_tokens=output_tokens, output_scores=output_scores, attn=None,
                                    history=history)
