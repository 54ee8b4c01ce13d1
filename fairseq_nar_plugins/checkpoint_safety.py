"""Loading fairseq checkpoints safely with torch >= 2.6 (``torch.load(weights_only=True)`` by default).

fairseq checkpoints pickle a few non-tensor objects (the ``argparse.Namespace`` of legacy configs, numpy scalars in
the best-metric bookkeeping, ...). Instead of turning ``weights_only`` off for every load
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which lets a checkpoint run arbitrary code), :func:`install` allow-lists
exactly those classes with ``torch.serialization.add_safe_globals`` and wraps fairseq's
``checkpoint_utils.load_checkpoint_to_cpu`` so that a checkpoint holding any other pickled object is refused with an
:class:`UnsafeCheckpointError` that names the file and the object.
"""
import argparse
import functools
import pickle
import re

import numpy as np
import torch

#: classes that fairseq training writes into checkpoints besides tensors and plain containers: the legacy
#: ``args`` namespace, and numpy scalars that can appear in best-metric bookkeeping (``best_bleu`` etc.)
SAFE_GLOBALS = [argparse.Namespace, np.dtype]
try:  # numpy >= 2 pickles scalars as numpy._core.multiarray.scalar, older numpy as numpy.core.multiarray.scalar
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import scalar as _np_scalar
SAFE_GLOBALS.append(_np_scalar)
# numpy arrays: fairseq's translation task with --eval-bleu keeps BLEU n-gram counts as arrays in the metrics state
# it saves (extra_state["metrics"]). _reconstruct only builds an empty array of an allow-listed subtype and dtype; its
# contents (object arrays included) go through the same restricted unpickler.
try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
SAFE_GLOBALS += [_np_reconstruct, np.ndarray]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allow-list."""


def _numpy_dtype_classes():
    classes = []
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        cls = getattr(np.dtypes, name, None) if hasattr(np, "dtypes") else None
        if cls is not None:
            classes.append(cls)
    return classes


def safe_globals():
    """The allow-list, as passed to ``torch.serialization.add_safe_globals``."""
    return list(SAFE_GLOBALS) + _numpy_dtype_classes()


def _guarded(load_fn):
    @functools.wraps(load_fn)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        try:
            return load_fn(path, *args, **kwargs)
        except pickle.UnpicklingError as e:
            if isinstance(e, UnsafeCheckpointError):
                raise
            found = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(e))
            what = found.group(1) if found else str(e).strip().splitlines()[-1]
            raise UnsafeCheckpointError(
                f"refusing to load checkpoint {path}: it holds a pickled object ({what}) that fairseq-nar-plugins "
                "does not allow-list, and unpickling it could run code from the file. "
                "If you wrote this file yourself and trust it, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for this "
                "command (or re-save it with plain tensors/dicts); if you forgot --user-dir, add it."
            ) from e

    load_checkpoint_to_cpu.__nar_plugins_guarded__ = True
    return load_checkpoint_to_cpu


def install():
    """Allow-list fairseq's checkpoint classes and guard fairseq's checkpoint loader (idempotent)."""
    torch.serialization.add_safe_globals(safe_globals())
    from fairseq import checkpoint_utils

    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "__nar_plugins_guarded__", False):
        checkpoint_utils.load_checkpoint_to_cpu = _guarded(checkpoint_utils.load_checkpoint_to_cpu)
