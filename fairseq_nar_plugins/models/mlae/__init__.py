"""MLAE: encoder-decoder pretraining with non-autoregressive modeling (masked language autoencoder).

This package implements:
Anonymous. "MLAE: Encoder-decoder Pretraining with Non-autoregressive Modeling." ACL Rolling Review submission
(no public code).

An asymmetric encoder-decoder (``mlae_12_4``: a 12-layer BERT-base encoder, a light 4-layer decoder) pretrained like
a masked autoencoder (He et al. 2021): 15 % of each 512-token block is masked in spans (mean length 3); the encoder
reads the visible tokens only, at their original positions; the decoder rebuilds the masked tokens bidirectionally
from the encoder's latents and ``[MASK]`` embeddings. The pretrained model is then fine-tuned for

* understanding: the encoder's ``[EOS]`` state, one linear layer (``mlae_classifier``);
* autoregressive generation: Seq2seq style, cross-attention initialised from self-attention (``mlae_seq2seq``), or
  UniLM style (``mlae_unilm``), both with scheduled masking of the decoder input (60 % -> 0);
* non-autoregressive generation: CMLM mask-predict with the pretraining's ``[MASK]`` (``mlae_cmlm``).

=================  =================================  ==============================  ==============================
model              task                               criterion                       decoding
=================  =================================  ==============================  ==============================
``mlae``           ``masked_autoencoder_pretrain``    ``nat_loss``                    (pretraining only)
                   (``--corruptions span``)
``mlae_cmlm``      ``translation_lev --noise          ``nat_loss``                    ``IterativeRefinementGenerator``
                   random_mask``                                                      (mask-predict)
``mlae_seq2seq``   ``translation``                    ``label_smoothed_cross_entropy``  ``SequenceGenerator`` (beam)
``mlae_unilm``     ``translation``                    ``label_smoothed_cross_entropy``  ``SequenceGenerator`` (beam)
``mlae_classifier`` ``sentence_prediction``           ``sentence_prediction``         --
=================  =================================  ==============================  ==============================

Each model registers the sizes ``_12_4``, ``_8_8``, ``_9_4``, ``_small``, ``_tiny`` (:mod:`.common`). Fine-tuning
models load a pretraining checkpoint with ``--init-from-mlae`` (:mod:`.checkpoint`). Modules: :mod:`.pretrain`,
:mod:`.nar`, :mod:`.ar`, :mod:`.classifier`; shared mechanics in ``modules/`` (``scheduled_masking``,
``mask_predict``, ``seq2seq_masks``).
"""
from . import pretrain, nar, ar, classifier  # noqa: F401
