"""Pieces that several models share (CTC utilities, backbones, length predictors, ...)."""
