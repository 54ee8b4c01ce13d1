"""Checkpoints that load safely, survive kills, and fail with a clear message.

:func:`install` runs when the package is imported (``--user-dir``). It changes attributes of fairseq's
``checkpoint_utils`` module in memory, never fairseq's files on disk:

1. **Safe loading** (torch >= 2.6 loads with ``weights_only=True``). fairseq checkpoints pickle a few non-tensor
   objects (the ``argparse.Namespace`` of legacy configs, numpy scalars in the best-metric bookkeeping); instead of
   turning ``weights_only`` off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which lets a file run code) exactly those
   classes are allow-listed, and a checkpoint whose pickle names any other global is refused with an
   :class:`UnsafeCheckpointError` naming the file and the object.
2. **Broken files are called broken**: before fairseq's ``load_checkpoint_to_cpu`` reads a file, an empty file, a
   truncated zip (no central directory) or a stored entry that fails its CRC-32 raises
   :class:`CorruptCheckpointError` naming the file, its size and the entry; so does an unpickling error that is not
   an unsafe global, and a weight (a ``*.weight`` / ``*.bias`` tensor of ``state["model"]``) holding NaN or infinity,
   named. torch itself checks neither the CRCs nor the values: a checkpoint with damaged weight bytes used to load
   and decode empty hypotheses.
3. **Atomic writes**: the trainer's ``torch_persistent_save`` and the copies ``save_checkpoint`` makes to
   ``checkpoint_last.pt`` / ``checkpoint_best.pt`` (fairseq: a plain ``shutil.copyfile``) write a temporary file in
   the same directory, ``fsync`` it, rename it over the target and ``fsync`` the directory (:func:`atomic_write`).
   A kill at any moment leaves the previous complete file or the new complete file, and at worst a stray
   ``.NAME.nar-tmp-*.tmp`` that the next run removes.
4. **Resuming falls back**: when ``fairseq-train`` resumes from ``--save-dir`` and ``checkpoint_last.pt`` is missing
   while other checkpoints exist, or cannot be loaded (:class:`CorruptCheckpointError`), it resumes from the newest
   checkpoint in the directory that loads (most updates), with a warning naming both files. With
   ``--no-last-checkpoints``, ``--finetune-from-model`` or an explicit ``--restore-file`` nothing is substituted.
5. **Model overrides are checked**: ``--model-overrides`` naming an option that the checkpoint's configuration
   lacks but another of this plugin's models has (``{'prune_size': 0.5}`` for a model without pruning) is an error;
   other unknown keys get a warning (fairseq ignores them).
6. **Load hooks** (:func:`add_load_hook`): functions called with ``(state, path)`` after every load, used by
   :mod:`fairseq_nar_plugins.fingerprint` to attach what decoding must agree with. While ``fairseq-train`` restores
   a checkpoint, the training task's ``check_checkpoint_state(state, path, resuming)`` (if it has one) is called
   too, before any weight is copied into the model.
"""
import argparse
import contextlib
import copy
import functools
import logging
import os
import pickle
import re
import shutil
import tempfile
import zipfile

import numpy as np
import torch

logger = logging.getLogger(__name__)

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

#: marks the temporary files of :func:`atomic_write`: ``.{name}.nar-tmp-XXXXXXXX.tmp`` beside the target
TMP_MARK = ".nar-tmp-"
_LAST = "checkpoint_last{}.pt"
_LOAD_HOOKS = []
_RESTORE_HOOKS = []  # active only while fairseq-train restores a checkpoint (see _guarded_restore)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allow-list."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that is empty, truncated, damaged, or holds non-finite weights.

    Attributes: ``path`` (the file) and ``reason`` (what is wrong with it, one phrase)."""

    def __init__(self, path, reason, advice=None):
        self.path, self.reason = os.fspath(path), reason
        advice = advice or (
            "It is not a complete checkpoint (a process killed while copying it, a full disk, an interrupted "
            "download); it is not a security problem. fairseq-train resuming in its --save-dir falls back to the "
            "newest checkpoint there that loads; otherwise use another checkpoint (checkpoint_best.pt, "
            "checkpoint_EPOCH_UPDATES.pt) or copy the file again"
        )
        super().__init__(f"cannot load checkpoint {self.path}: {reason}. {advice}")


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


def add_load_hook(fn):
    """Call ``fn(state, path)`` after every checkpoint that fairseq's ``load_checkpoint_to_cpu`` reads (idempotent)."""
    if fn not in _LOAD_HOOKS:
        _LOAD_HOOKS.append(fn)


# ------------------------------------------------------------------------------------------------ atomic writes
def _is_local(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and "://" not in os.fspath(path)


def _fsync_directory(directory: str):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Create or replace ``path`` with what ``write(binary_file)`` writes, all or nothing.

    The data goes to ``.{name}.nar-tmp-*.tmp`` in the same directory (same file system, so the rename is atomic),
    is flushed and ``fsync``-ed, renamed over ``path``, and the directory is ``fsync``-ed so that the rename itself
    survives a power cut. If ``write`` raises, the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}{TMP_MARK}", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def atomic_copy(src, dst):
    """Copy ``src`` to ``dst`` with :func:`atomic_write` (``dst`` is the old file or a full copy, never a part)."""
    with open(src, "rb") as fin:
        atomic_write(dst, lambda fout: shutil.copyfileobj(fin, fout, 1 << 20))


def remove_stale_temporaries(directory: str):
    """Delete the temporary files a killed :func:`atomic_write` left in ``directory``; returns their names."""
    removed = []
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(".") and TMP_MARK in name and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))
                    removed.append(name)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _atomic_persistent_save(original):
    @functools.wraps(original)
    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or not _is_local(filename):
            return original(obj, filename, async_write=async_write)
        atomic_write(filename, lambda f: torch.save(obj, f))

    torch_persistent_save.__nar_plugins_atomic__ = True
    return torch_persistent_save


class _AtomicCopyPathManager:
    """fairseq's ``PathManager`` as seen from ``checkpoint_utils``, with :meth:`copy` made atomic for local files."""

    __nar_plugins_atomic__ = True

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def copy(self, src_path, dst_path, overwrite=False, **kwargs):
        if not (_is_local(src_path) and _is_local(dst_path)):
            return self._inner.copy(src_path, dst_path, overwrite=overwrite, **kwargs)
        if not overwrite and os.path.exists(dst_path):
            return False
        atomic_copy(src_path, dst_path)
        return True


# -------------------------------------------------------------------------------------------- checking a file
def verify_checkpoint_file(path):
    """Raise :class:`CorruptCheckpointError` if the file at ``path`` cannot be a complete checkpoint: empty, a zip
    archive without its central directory (truncated), or a stored entry whose CRC-32 does not match (damaged
    bytes). Legacy (non-zip) pickles are left to the unpickler. Costs one read of the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return  # fairseq reports a missing file itself
    size = os.path.getsize(path)
    if size == 0:
        raise CorruptCheckpointError(path, "the file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        return  # torch's legacy (pre-1.6) format: a plain pickle
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:  # no end-of-central-directory record, ...
        raise CorruptCheckpointError(path, f"the file is truncated or damaged ({size:,} bytes; zip archive: {e})")
    except Exception as e:  # zlib errors, inconsistent headers
        raise CorruptCheckpointError(path, f"the file is damaged ({size:,} bytes; {type(e).__name__}: {e})")
    if bad is not None:
        raise CorruptCheckpointError(path, f"its stored entry {bad!r} fails its CRC-32 check: bytes of the file "
                                           f"({size:,} bytes) were changed after it was written")


def check_finite_weights(state, path):
    """Raise :class:`CorruptCheckpointError` naming the first ``*.weight`` / ``*.bias`` tensor of ``state["model"]``
    that holds NaN or infinity (buffers with other names may use NaN as a marker, e.g. DEER's uncomputed pruning
    thresholds, and are not checked)."""
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict):
        return
    for name, value in model.items():
        if not (torch.is_tensor(value) and value.is_floating_point() and name.endswith(("weight", "bias"))):
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            n = int((~finite).sum())
            raise CorruptCheckpointError(
                path, f"weight {name} {tuple(value.shape)} holds {n:,} non-finite values (NaN or infinity)",
                advice="Its weights are damaged, or training diverged before it was saved; use an earlier "
                       "checkpoint (and, if training diverged, a lower --lr or --clip-norm)")


def _looks_corrupt(e: BaseException) -> bool:
    if isinstance(e, (EOFError, zipfile.BadZipFile)):
        return True
    text = str(e)
    return isinstance(e, (RuntimeError, ValueError, OSError)) and any(
        s in text for s in ("PytorchStreamReader", "zip archive", "central directory", "file is corrupted",
                            "unexpected EOF", "invalid load key"))


def _raised_while_unpickling(e: BaseException) -> bool:
    """True when ``e`` came out of an unpickler's ``load`` (torch's weights-only one or pickle's): damaged pickle
    bytes fail there with whatever the opcode they turned into raises (a memo ``KeyError``, an ``IndexError`` on an
    empty stack, a ``UnicodeDecodeError``, ...), not only with ``UnpicklingError``."""
    tb = e.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and any(c.__name__ == "Unpickler" for c in type(owner).__mro__):
            return True
        tb = tb.tb_next
    return False


def _classify_unpickling(path, e):
    found = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(e))
    if found:
        return UnsafeCheckpointError(
            f"refusing to load checkpoint {path}: it holds a pickled object ({found.group(1)}) that "
            "fairseq-nar-plugins does not allow-list, and unpickling it could run code from the file. "
            "If you wrote this file yourself and trust it, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for this "
            "command (or re-save it with plain tensors/dicts); if you forgot --user-dir, add it."
        )
    said = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))  # torch's verdict, before its advice lines
    last = said.group(1).strip() if said else \
        str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    if not isinstance(e, pickle.UnpicklingError):
        last = f"{type(e).__name__}: {last}"
    return CorruptCheckpointError(path, f"its pickled part (data.pkl) is damaged ({last})")


def _load_error(path, e: BaseException):
    """What to raise instead of ``e``, an exception out of ``torch.load(path)``: :class:`UnsafeCheckpointError` for a
    pickled object outside the allow-list, :class:`CorruptCheckpointError` for a damaged file; None (raise ``e``
    itself) for anything else."""
    if isinstance(e, (UnsafeCheckpointError, CorruptCheckpointError)):
        return None
    if isinstance(e, pickle.UnpicklingError) or _raised_while_unpickling(e):
        return _classify_unpickling(path, e)
    if _looks_corrupt(e):
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return CorruptCheckpointError(path, f"the file is truncated or damaged ({type(e).__name__}: {first})")
    return None


def load_file(path, **kwargs):
    """``torch.load(path, weights_only=True, **kwargs)`` for files read outside fairseq's loader (converted
    backbones): empty, truncated or damaged files raise :class:`CorruptCheckpointError`, objects outside the
    allow-list :class:`UnsafeCheckpointError`, both naming the file."""
    verify_checkpoint_file(path)
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except Exception as e:
        error = _load_error(path, e)
        if error is None:
            raise
        raise error from e


# ------------------------------------------------------------------------------------------------ model overrides
def _config_keys(node, keys):
    from omegaconf import DictConfig

    if isinstance(node, argparse.Namespace):
        keys.update(vars(node))
        return keys
    if isinstance(node, (DictConfig, dict)):
        for k in node.keys():
            keys.add(k)
            try:
                value = node[k]
            except Exception:  # mandatory-missing values of a DictConfig
                continue
            if isinstance(value, (DictConfig, dict, argparse.Namespace)):
                _config_keys(value, keys)
    return keys


def _model_options():
    """{option dest: [model names that have it]} over this plugin's registered models (add_args or dataclass)."""
    from fairseq.models import MODEL_DATACLASS_REGISTRY, MODEL_REGISTRY

    owners = {}
    for name, cls in MODEL_REGISTRY.items():
        if not cls.__module__.startswith("fairseq_nar_plugins"):
            continue
        dests = set()
        dc = MODEL_DATACLASS_REGISTRY.get(name)
        if dc is not None:
            dests.update(getattr(dc, "__dataclass_fields__", {}))
        elif hasattr(cls, "add_args"):
            parser = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")
            try:
                cls.add_args(parser)
            except Exception:
                continue
            dests.update(a.dest for a in parser._actions)
        for d in dests:
            owners.setdefault(d, []).append(name)
    return owners


def check_model_overrides(state, overrides, path):
    """Refuse override keys that the checkpoint's configuration lacks but another of this plugin's models defines
    (they would be ignored, e.g. ``prune_size`` for a model without pruning); warn about other unknown keys (fairseq
    ignores them)."""
    known = set()
    if state.get("args") is not None:
        _config_keys(state["args"], known)
    if state.get("cfg") is not None:
        _config_keys(state["cfg"], known)
    unknown = [k for k in overrides if k not in known]
    if not unknown:
        return
    cfg = state.get("cfg") or {}
    model_cfg = cfg.get("model") if hasattr(cfg, "get") else None
    arch = getattr(model_cfg, "arch", None) or getattr(model_cfg, "_name", None) if model_cfg is not None else None
    arch = arch or getattr(state.get("args"), "arch", None) or "?"
    owners = _model_options()
    for k in unknown:
        if k in owners:
            models = ", ".join(sorted(set(owners[k]))[:6])
            raise ValueError(
                f"--model-overrides sets {k!r}, but checkpoint {path} (arch {arch}) has no such option: it is an "
                f"option of other models ({models}), and this model would ignore it. Remove it from "
                "--model-overrides, or use a checkpoint trained with it (e.g. prune_size needs DEER trained with "
                "--prune)"
            )
        logger.warning(f"--model-overrides key {k!r} is not an option of checkpoint {path} (arch {arch}): ignored")


def _apply_overrides(state, overrides):
    """What fairseq's ``load_checkpoint_to_cpu`` does with ``arg_overrides`` (here after the check)."""
    from fairseq.dataclass.utils import overwrite_args_by_name

    if state.get("args") is not None:
        for k, v in overrides.items():
            setattr(state["args"], k, v)
    if state.get("cfg") is not None:
        overwrite_args_by_name(state["cfg"], overrides)


# --------------------------------------------------------------------------------------------------- the loader
def _guarded(load_fn):
    @functools.wraps(load_fn)
    def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
        if _is_local(path):
            verify_checkpoint_file(path)
        try:
            state = load_fn(path, None, load_on_all_ranks=load_on_all_ranks)
        except Exception as e:
            error = _load_error(path, e)
            if error is None:
                raise
            raise error from e
        check_finite_weights(state, path)
        if arg_overrides:
            check_model_overrides(state, arg_overrides, path)
            _apply_overrides(state, arg_overrides)
        for hook in list(_LOAD_HOOKS) + list(_RESTORE_HOOKS):
            hook(state, path)
        return state

    load_checkpoint_to_cpu.__nar_plugins_guarded__ = True
    return load_checkpoint_to_cpu


# ------------------------------------------------------------------------------------------ resuming training
def peek_checkpoint(path):
    """The pickled part of a checkpoint, read without its tensor data (``mmap``; zip format) or fully (legacy):
    cheap for telling which checkpoint is newest. Raises on unreadable files."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_updates(state) -> int:
    try:
        return int(state["optimizer_history"][-1]["num_updates"])
    except (KeyError, IndexError, TypeError, ValueError):
        return -1


def resume_candidates(save_dir, exclude, suffix=""):
    """The other checkpoints of ``save_dir`` that can be read, newest first: ``[(updates, path)]`` ordered by the
    update count they record, then numbered files (``checkpoint_E_U.pt``, ``checkpointE.pt``) before copies, then
    by modification time."""
    found = []
    pattern = re.compile(r"^checkpoint.*" + re.escape(suffix) + r"\.pt$")
    for name in os.listdir(save_dir):
        path = os.path.join(save_dir, name)
        if not pattern.match(name) or os.path.abspath(path) == os.path.abspath(exclude) or not os.path.isfile(path):
            continue
        try:
            state = peek_checkpoint(path)
        except Exception:
            continue
        numbered = re.match(r"^checkpoint(\d+|_\d+_\d+)", name) is not None  # on a tie, prefer the file named by its update
        found.append((checkpoint_updates(state), numbered, os.path.getmtime(path), path))
    found.sort(key=lambda t: t[:3], reverse=True)
    return [(t[0], t[3]) for t in found]


@contextlib.contextmanager
def _restore_hook(fn):
    _RESTORE_HOOKS.append(fn)
    try:
        yield
    finally:
        _RESTORE_HOOKS.remove(fn)


def _guarded_restore(load_checkpoint):
    """Wrap fairseq's ``checkpoint_utils.load_checkpoint(cfg, trainer, ...)`` (fairseq-train's resume)."""

    @functools.wraps(load_checkpoint)
    def guarded_load_checkpoint(cfg, trainer, **passthrough_args):
        suffix = getattr(trainer, "checkpoint_suffix", "") or ""
        last = os.path.join(cfg.save_dir, _LAST.format(suffix))
        default_restore = cfg.restore_file == "checkpoint_last.pt"
        rank0 = getattr(trainer, "data_parallel_rank", 0) == 0
        if default_restore and rank0:
            removed = remove_stale_temporaries(cfg.save_dir)
            if removed:
                logger.info(f"removed {len(removed)} unfinished temporary checkpoint file(s) of a killed run in "
                            f"{cfg.save_dir}: {', '.join(sorted(removed)[:4])}")
        finetuning = cfg.finetune_from_model is not None and not os.path.exists(last)

        def check_task(state, path):
            check = getattr(trainer.task, "check_checkpoint_state", None)
            if check is not None:
                check(state, path, resuming=not (finetuning or cfg.reset_optimizer or cfg.reset_dataloader))

        def restore(restore_cfg):
            with _restore_hook(check_task):
                return load_checkpoint(restore_cfg, trainer, **passthrough_args)

        fallback_ok = (default_restore and not cfg.no_last_checkpoints and cfg.finetune_from_model is None
                       and getattr(cfg, "continue_once", None) is None and os.path.isdir(cfg.save_dir))
        if not fallback_ok:
            return restore(cfg)
        if os.path.exists(last):
            try:
                return restore(cfg)
            except CorruptCheckpointError as e:
                if os.path.abspath(e.path) != os.path.abspath(last):
                    raise
                problem = f"{last} cannot be loaded ({e.reason})"
                first_error = e
        else:
            problem, first_error = f"{last} does not exist", None
        candidates = resume_candidates(cfg.save_dir, exclude=last, suffix=suffix)
        if not candidates:
            if first_error is not None:
                raise CorruptCheckpointError(
                    last, first_error.reason,
                    advice=f"No other checkpoint in {cfg.save_dir} loads either: move {last} away to start "
                           "training from scratch (or pass --restore-file with a copy of a good checkpoint)")
            return restore(cfg)  # a fresh run: nothing to resume
        for updates, path in candidates:
            logger.warning(
                f"{problem}; resuming from {path} ({updates} updates), the newest checkpoint in {cfg.save_dir} that "
                f"loads. {last} is replaced at the next save"
                + ("" if first_error else "; to start from scratch instead, use an empty --save-dir"))
            fallback_cfg = copy.deepcopy(cfg)
            fallback_cfg.restore_file = os.path.abspath(path)
            try:
                return restore(fallback_cfg)
            except CorruptCheckpointError as e:
                problem = f"{path} cannot be loaded either ({e.reason})"
        raise CorruptCheckpointError(last, first_error.reason if first_error else "it does not exist",
                                     advice=f"No checkpoint in {cfg.save_dir} loads: move them away to start "
                                            "training from scratch")

    guarded_load_checkpoint.__nar_plugins_guarded__ = True
    return guarded_load_checkpoint


def install():
    """Allow-list fairseq's checkpoint classes; guard fairseq's checkpoint loader and resume; make its checkpoint
    writes atomic (idempotent)."""
    torch.serialization.add_safe_globals(safe_globals())
    from fairseq import checkpoint_utils

    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "__nar_plugins_guarded__", False):
        checkpoint_utils.load_checkpoint_to_cpu = _guarded(checkpoint_utils.load_checkpoint_to_cpu)
    if not getattr(checkpoint_utils.load_checkpoint, "__nar_plugins_guarded__", False):
        checkpoint_utils.load_checkpoint = _guarded_restore(checkpoint_utils.load_checkpoint)
    if not getattr(checkpoint_utils.torch_persistent_save, "__nar_plugins_atomic__", False):
        checkpoint_utils.torch_persistent_save = _atomic_persistent_save(checkpoint_utils.torch_persistent_save)
    if not getattr(checkpoint_utils.PathManager, "__nar_plugins_atomic__", False):
        checkpoint_utils.PathManager = _AtomicCopyPathManager(checkpoint_utils.PathManager)
