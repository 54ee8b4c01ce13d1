"""Data preparation helpers that run before fairseq-preprocess (no fairseq import needed)."""
