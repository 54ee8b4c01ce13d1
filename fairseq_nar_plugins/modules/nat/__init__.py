"""What a non-autoregressive decoder reads and how masked decoding refines it.

* :mod:`.length_predictor`: the target length as a class (bnb ``--length-mode lc``, mlae_cmlm);
* :mod:`.source_copy`: source-side vectors copied onto decoder positions (bnb, nat_ctc_transformer, deer's slots);
* :mod:`.mask_predict`: mask-predict decoding with a configurable mask id (mlae_cmlm);
* :mod:`.scheduled_masking`: a scheduled share of decoder inputs replaced by ``[MASK]`` (MLAE's autoregressive
  fine-tuning, mlae_seq2seq and mlae_unilm).
"""
