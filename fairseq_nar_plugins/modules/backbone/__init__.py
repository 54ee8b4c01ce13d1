"""The BERT-family backbone every pretrained-style model here is built on.

* :mod:`.bert_backbone`: ``BertBackbone`` (BERT / RoBERTa / XLM-R network from fairseq's transformer layers, as
  encoder or as decoder with cross-attention) and ``BertLMHead``.
* :mod:`.compact_attention`: transformer layers whose attention heads have their own widths (what a pruned backbone
  is compacted into).
* :mod:`.backbone_args`: the command-line flags and architecture defaults the backbone models share.

Used by bnb, bnb_classifier, deer, elmer and mlae (``fairseq_nar_plugins/models/``).
"""
