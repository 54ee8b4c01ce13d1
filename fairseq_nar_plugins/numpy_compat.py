"""fairseq 0.12 on numpy 2: restore the one removed name fairseq's data pipeline still uses.

numpy 2.0 removed ``np.compat``; fairseq reads ``np.compat.long`` in ``TokenBlockDataset`` (``--sample-break-mode
eos``, e.g. ``masked_autoencoder_pretrain`` with one line a block) and in ``LanguagePairDataset`` (``num_tokens_vec``
with buckets), and crashes there with ``AttributeError: `np.compat` was removed in the NumPy 2.0 release``.
:func:`install` gives numpy a ``compat`` namespace holding ``long`` (``np.int64``, what ``np.compat.long`` was on
numpy 1 with Python 3) when it has none; it changes nothing on numpy 1.
"""
import types

import numpy as np


def install():
    """Add ``np.compat.long`` when numpy lacks ``np.compat`` (numpy >= 2); idempotent."""
    try:
        np.compat  # noqa: B018  (numpy 1: present; numpy 2: raises AttributeError from numpy's __getattr__)
    except AttributeError:
        np.compat = types.SimpleNamespace(long=np.int64)
