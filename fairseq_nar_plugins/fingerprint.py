"""What decoding must agree with, recorded in every ``translation_lev_ctc`` checkpoint (its *fingerprint*).

A CTC model's weights mean something only together with

* the upsampling ratio it was trained with (decoder frames per source token): decoded at another ratio it still
  produces output, silently worse (toy task: BLEU 62.2 at the training ratio 3, 48.1 at 2);
* its CTC blank symbol;
* the exact source and target dictionaries: data binarized with another dictionary of the same size loads and
  decodes, every id now meaning another word (toy task: BLEU 82.5 -> 0.0).

:func:`of_task` computes ``{"version", "upsample_ratio", "ctc_blank_symbol", "blank_idx", "source_dictionary",
"target_dictionary"}`` (each dictionary as its size and the SHA-256 of its symbols in order); the task stores it in
the ``task_state`` fairseq saves with every checkpoint (``TranslationLevCTCTask.state_dict``). When a checkpoint is
read, :func:`attach` (a :mod:`.checkpoint_safety` load hook) notes the file's path in it, and for checkpoints saved
before fingerprints existed rebuilds the ratio and blank from the saved ``cfg.task`` (the dictionaries of such
checkpoints cannot be checked). :func:`check` then compares it with the task of the command:

* ``fairseq-generate`` / ``fairseq-interactive`` (fairseq calls ``task.load_state_dict(state["task_state"])``
  before it builds the model): without ``--upsample-ratio`` the recorded ratio is adopted (logged); a different
  explicit ratio, another blank symbol, or a dictionary of another size or content is refused naming both values;
* ``fairseq-train`` resuming (``checkpoint_safety`` calls ``task.check_checkpoint_state``): the same, except that
  the model is already built, so a ratio that differs is refused even when it is the default (pass the recorded
  one); fine-tuning (``--finetune-from-model`` or a reset optimizer/dataloader) checks only the dictionaries.
"""
import hashlib
import logging
import os

logger = logging.getLogger(__name__)

KEY = "nar_plugins_fingerprint"
VERSION = 1
TASK_NAME = "translation_lev_ctc"


class CheckpointMismatchError(ValueError):
    """The command's data or flags disagree with what the checkpoint was trained with."""


def dictionary_digest(dictionary) -> dict:
    """``{"size": number of symbols, "sha256": hex digest of the symbols joined by newlines}``; counts and
    file formatting do not enter (they do not change what an index means)."""
    text = "\n".join(dictionary.symbols)
    return {"size": len(dictionary.symbols), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def of_task(task) -> dict:
    """The fingerprint of a ``translation_lev_ctc`` task (after its blank was added to the dictionaries)."""
    return {
        "version": VERSION,
        "upsample_ratio": float(task.upsample_ratio),
        "ctc_blank_symbol": task.cfg.ctc_blank_symbol,
        "blank_idx": int(task.blank_idx),
        "source_dictionary": dictionary_digest(task.src_dict),
        "target_dictionary": dictionary_digest(task.tgt_dict),
    }


def _cfg_task(state):
    cfg = state.get("cfg")
    task = cfg.get("task") if cfg is not None and hasattr(cfg, "get") else None
    if task is None and state.get("args") is not None:
        task = state["args"]
    return task


def attach(state, path):
    """checkpoint_safety load hook: note ``path`` in the fingerprint, rebuilding one from ``cfg.task`` for
    ``translation_lev_ctc`` checkpoints saved before fingerprints existed."""
    if not isinstance(state, dict):
        return
    task_state = state.get("task_state")
    fp = task_state.get(KEY) if isinstance(task_state, dict) else None
    if fp is None:
        cfg_task = _cfg_task(state)
        name = getattr(cfg_task, "_name", None) or getattr(cfg_task, "task", None)
        if name != TASK_NAME or getattr(cfg_task, "upsample_ratio", None) is None:
            return
        fp = {"version": 0, "upsample_ratio": float(cfg_task.upsample_ratio),
              "ctc_blank_symbol": getattr(cfg_task, "ctc_blank_symbol", None)}
        if not isinstance(task_state, dict):
            task_state = state["task_state"] = {}
        task_state[KEY] = fp
    fp["checkpoint"] = os.fspath(path)


def _dictionary_path(task, side):
    lang = task.cfg.source_lang if side == "source" else task.cfg.target_lang
    data = str(task.cfg.data).split(os.pathsep)[0]
    return os.path.join(data, f"dict.{lang}.txt") if lang else data


def check(task, fp, *, resuming_training=False, check_ratio=True):
    """Compare the fingerprint ``fp`` (from a checkpoint) with ``task``; adopt the recorded ratio where allowed.

    Raises :class:`CheckpointMismatchError` naming both values and what to do."""
    if not fp:
        return
    where = fp.get("checkpoint", "the checkpoint")
    blank = fp.get("ctc_blank_symbol")
    if blank is not None and blank != task.cfg.ctc_blank_symbol:
        raise CheckpointMismatchError(
            f"{where} was trained with --ctc-blank-symbol {blank!r}, but this command uses "
            f"{task.cfg.ctc_blank_symbol!r}: the blank is part of the model's vocabulary; pass "
            f"--ctc-blank-symbol {blank!r}")
    for side, dictionary in (("source", task.src_dict), ("target", task.tgt_dict)):
        recorded = fp.get(f"{side}_dictionary")
        if recorded is None:
            continue
        ours = dictionary_digest(dictionary)
        if ours != recorded:
            raise CheckpointMismatchError(
                f"the {side} dictionary of this command ({_dictionary_path(task, side)} plus the CTC blank: "
                f"{ours['size']} symbols, sha256 {ours['sha256'][:12]}) is not the one {where} was trained with "
                f"({recorded['size']} symbols, sha256 {recorded['sha256'][:12]}): the data was binarized with "
                "another dictionary, so every token id would mean another word. Binarize it with the training "
                "data's dictionaries (fairseq-preprocess --srcdict DICT --tgtdict DICT, the dict.*.txt of the data "
                "the model was trained on)")
    ratio = fp.get("upsample_ratio")
    if not check_ratio or ratio is None or abs(float(ratio) - float(task.upsample_ratio)) < 1e-9:
        return
    given = getattr(task, "upsample_ratio_from_flag", True)
    if resuming_training:
        said = f"--upsample-ratio {task.upsample_ratio:g}" + ("" if given else " (the default)")
        raise CheckpointMismatchError(
            f"{where} was trained with --upsample-ratio {ratio:g}, but this command uses {said}: the model was "
            f"built for the command's ratio. Pass --upsample-ratio {ratio:g} to resume it, or use another "
            "--save-dir to train a new model")
    if given:
        raise CheckpointMismatchError(
            f"{where} was trained with --upsample-ratio {ratio:g}, but this command passes --upsample-ratio "
            f"{task.upsample_ratio:g}: a CTC model decodes as trained only at its own ratio (another one silently "
            f"lowers quality). Leave --upsample-ratio out to use the checkpoint's, or pass --upsample-ratio {ratio:g}")
    logger.info(f"using --upsample-ratio {ratio:g}, recorded in {where} (the flag was not given)")
    task.set_upsample_ratio(float(ratio))
    task.upsample_ratio_from_flag = True  # a second checkpoint of an ensemble must agree with the adopted ratio


def split_task_state(task_state):
    """``(task_state without the fingerprint, fingerprint or None)``."""
    if not isinstance(task_state, dict) or KEY not in task_state:
        return task_state, None
    rest = dict(task_state)
    return rest, rest.pop(KEY)
