"""Initialising models from other checkpoints.

* :mod:`.pretrained_import`: BERT / RoBERTa / XLM-R checkpoints (Hugging Face folders, fairseq files, converted
  files) into a :class:`~.backbone.bert_backbone.BertBackbone` (``--pretrained-encoder``);
* :mod:`.pretrained_vocab`: the vocabulary bridge (a fairseq ``Dictionary`` whose index ``i`` is embedding row ``i``);
* :mod:`.pretrained_tokenizer`: the checkpoint's own tokenizer (``--bpe pretrained_tokenizer``);
* :mod:`.warm_start`: a student from a fairseq teacher checkpoint of the same shapes (``--init-from-checkpoint``).

Used by bnb, bnb_classifier, deer and mlae (pretrained encoders), bnb, deer, elmer and nat_ctc_transformer (warm
start), ``data/pretrained_bpe.py`` and ``scripts/convert_pretrained.py``.
"""
