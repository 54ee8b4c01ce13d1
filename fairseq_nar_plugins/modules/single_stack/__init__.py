"""Generation with one BERT-family stack that reads the source and the target together (no separate decoder).

* :mod:`.deer_input`: DEER's ``[source ; slots]`` input, its token types and its source-blind self-attention mask;
* :mod:`.levenshtein_editor`: DEER's Levenshtein editor, the stack's own layers run over editor tokens with cached
  source states (``layer_with_memory``, also used by mlae_unilm);
* :mod:`.seq2seq_masks`: causal and UniLM "Seq2Seq" self-attention masks (mlae_unilm).

Used by deer and mlae (``models/mlae/ar.py``).
"""
