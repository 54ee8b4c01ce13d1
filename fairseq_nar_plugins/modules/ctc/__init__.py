"""Connectionist Temporal Classification (CTC) for non-autoregressive decoders.

* :mod:`.ctc_utils`: frames, blank symbol, the loss (with label smoothing), greedy collapse;
* :mod:`.ctc_alignment`: the best (Viterbi) alignment of a target to the frames;
* :mod:`.glancing`: glancing training over that alignment (GLAT with CTC);
* :mod:`.ctc_generation`: the ``IterativeRefinementGenerator`` contract for one-pass CTC models.

Used by nat_ctc_transformer, bnb (``--length-mode ctc``) and deer, the ``ctc`` criterion and the
``translation_lev_ctc`` task.
"""
