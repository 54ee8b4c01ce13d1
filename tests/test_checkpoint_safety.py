"""Checkpoints: fairseq's load with weights_only=True thanks to the allow-list (anything else is refused clearly);
broken files are called broken (empty, truncated, damaged bytes, non-finite weights); fairseq's checkpoint writes
and copies are atomic; --model-overrides the model lacks are refused. The kill drill is in test_reliability.py."""
import argparse
import os
import shutil
import stat
import struct
import sys
import zipfile
from unittest import mock

import pytest
import torch
from fairseq import checkpoint_utils

from fairseq_nar_plugins import checkpoint_safety
from fairseq_nar_plugins.checkpoint_safety import CorruptCheckpointError, UnsafeCheckpointError

class Payload:
    """An object whose unpickling would run code (here: set a flag)."""

    def __reduce__(self):
        return (exec, ("import tests_payload_marker",))


def test_fairseq_checkpoint_loads_with_weights_only(toy_ctc_checkpoint):
    save_dir, _ = toy_ctc_checkpoint
    path = os.path.join(save_dir, "checkpoint_last.pt")
    state = torch.load(path, weights_only=True)  # the allow-list alone makes a real checkpoint load
    assert state["args"] is None or isinstance(state["args"], argparse.Namespace)
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    assert any(k.startswith("decoder.") for k in state["model"])


def test_checkpoint_with_other_pickled_object_is_refused(toy_ctc_checkpoint, tmp_path):
    save_dir, _ = toy_ctc_checkpoint
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=True)
    state["extra_state"]["payload"] = Payload()
    path = str(tmp_path / "evil.pt")
    torch.save(state, path)
    with pytest.raises(UnsafeCheckpointError) as e:
        checkpoint_utils.load_checkpoint_to_cpu(path)
    msg = str(e.value)
    assert path in msg and "exec" in msg and "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" in msg
    assert "tests_payload_marker" not in sys.modules


def test_weights_only_is_not_turned_off_globally():
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") in (None, "0", "")


# ------------------------------------------------------------------------------------ broken files, named as such
def _copy_checkpoint(toy_ctc_checkpoint, tmp_path, name="ckpt.pt"):
    save_dir, _ = toy_ctc_checkpoint
    dst = tmp_path / name
    shutil.copyfile(os.path.join(save_dir, "checkpoint_last.pt"), dst)
    return dst


def _zip_entry_offset(path, suffix):
    """Byte offset in the file of the data of the zip entry whose name ends with ``suffix``."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_empty_and_truncated_checkpoints_are_corrupt_not_eof_errors(toy_ctc_checkpoint, tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=r"empty\.pt: the file is empty \(0 bytes\)"):
        checkpoint_utils.load_checkpoint_to_cpu(str(empty))
    path = _copy_checkpoint(toy_ctc_checkpoint, tmp_path)
    data = path.read_bytes()
    for size in (100, 262144, len(data) - 100):
        path.write_bytes(data[:size])
        with pytest.raises(CorruptCheckpointError, match=rf"ckpt\.pt: the file is truncated or damaged \({size:,} "
                                                         "bytes"):
            checkpoint_utils.load_checkpoint_to_cpu(str(path))


def test_corrupted_pickle_is_reported_as_corruption_not_as_an_unsafe_object(toy_ctc_checkpoint, tmp_path):
    """Probe 3d3: damaged bytes in data.pkl used to be called a hostile pickle, with advice to turn safety off."""
    path = _copy_checkpoint(toy_ctc_checkpoint, tmp_path)
    offset, size = _zip_entry_offset(path, "data.pkl")
    data = bytearray(path.read_bytes())
    data[offset + size // 3: offset + size // 3 + 200] = b"\x7f" * 200
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError) as e:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    msg = str(e.value)
    assert str(path) in msg and "data.pkl" in msg and "CRC" in msg
    assert not isinstance(e.value, UnsafeCheckpointError) and "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in msg
    # the unpickler's own verdict (the CRC check off) is also read as corruption
    with pytest.raises(CorruptCheckpointError, match="pickled part.*is damaged") as e:
        with mock.patch.object(checkpoint_safety, "verify_checkpoint_file", lambda p: None):
            checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in str(e.value)


@pytest.mark.parametrize("opcodes, error", [
    (b"\x80\x02h\x05.", "KeyError"),  # PROTO 2, BINGET 5 (no such memo entry), STOP
    (b"\x80\x02X\x01\x00\x00\x00\xff.", "UnicodeDecodeError"),  # PROTO 2, BINUNICODE of 1 byte not UTF-8, STOP
    (b"\x80\x020.", "Unsupported operand 48"),  # PROTO 2, POP (refused by torch's weights-only unpickler), STOP
])
def test_damaged_pickle_opcodes_read_as_corruption_whatever_they_raise(toy_ctc_checkpoint, tmp_path, opcodes, error):
    """Damaged pickle bytes fail inside the unpickler with whatever their opcode raises, not only UnpicklingError (a
    KeyError slipped through when the full suite's checkpoint happened to be damaged at a memo lookup)."""
    path = _copy_checkpoint(toy_ctc_checkpoint, tmp_path)
    offset, _ = _zip_entry_offset(path, "data.pkl")
    data = bytearray(path.read_bytes())
    data[offset: offset + len(opcodes)] = opcodes
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=rf"pickled part \(data.pkl\) is damaged \({error}"):
        with mock.patch.object(checkpoint_safety, "verify_checkpoint_file", lambda p: None):
            checkpoint_utils.load_checkpoint_to_cpu(str(path))
    with pytest.raises(CorruptCheckpointError, match=rf"pickled part \(data.pkl\) is damaged \({error}"):
        with mock.patch.object(checkpoint_safety, "verify_checkpoint_file", lambda p: None):
            checkpoint_safety.load_file(str(path))


def test_damaged_weight_bytes_fail_the_crc_check(toy_ctc_checkpoint, tmp_path):
    """Probe 3d4: 800 bytes of 0x7f in a weight storage loaded silently and decoded empty hypotheses (score nan)."""
    path = _copy_checkpoint(toy_ctc_checkpoint, tmp_path)
    offset, size = _zip_entry_offset(path, "data/0")
    data = bytearray(path.read_bytes())
    n = min(800, size)
    data[offset: offset + n] = b"\x7f" * n
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=r"stored entry '.*data/0' fails its CRC-32 check"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))


def test_non_finite_weights_are_refused_naming_the_tensor(toy_ctc_checkpoint, tmp_path):
    save_dir, _ = toy_ctc_checkpoint
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=True)
    state["model"]["decoder.layers.1.fc2.weight"][3, 5] = float("nan")
    state["model"]["decoder.layers.1.fc2.weight"][0, 0] = float("inf")
    path = str(tmp_path / "nan.pt")
    torch.save(state, path)
    with pytest.raises(CorruptCheckpointError, match=r"weight decoder\.layers\.1\.fc2\.weight \(64, 128\) holds 2 "
                                                     "non-finite values"):
        checkpoint_utils.load_checkpoint_to_cpu(path)
    # a NaN in a buffer that is not a weight (DEER's "not computed yet" pruning thresholds) is fine
    state["model"]["decoder.layers.1.fc2.weight"].zero_()
    state["model"]["prune_thresholds"] = torch.full((2, 2), float("nan"))
    torch.save(state, path)
    checkpoint_utils.load_checkpoint_to_cpu(path)


# ----------------------------------------------------------------------------------------------- atomic writes
def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "checkpoint_last.pt"
    target.write_bytes(b"old complete file")

    def half_then_fail(f):
        f.write(b"new, but only ha")
        raise KeyboardInterrupt  # what a kill looks like from inside: the write stops half way

    with pytest.raises(KeyboardInterrupt):
        checkpoint_safety.atomic_write(str(target), half_then_fail)
    assert target.read_bytes() == b"old complete file" and os.listdir(tmp_path) == ["checkpoint_last.pt"]
    checkpoint_safety.atomic_write(str(target), lambda f: f.write(b"new complete file"))
    assert target.read_bytes() == b"new complete file" and os.listdir(tmp_path) == ["checkpoint_last.pt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~umask  # as open() would have created it


def test_fairseq_checkpoint_writes_and_copies_go_through_the_atomic_path(tmp_path, monkeypatch):
    """fairseq's save_checkpoint writes with torch_persistent_save and copies to checkpoint_last/best with
    PathManager.copy (a plain shutil.copyfile upstream): both must now write a temporary file and rename it."""
    src, dst = tmp_path / "checkpoint_1_10.pt", tmp_path / "checkpoint_last.pt"
    torch.save({"x": torch.ones(3)}, src)
    dst.write_bytes(b"previous checkpoint_last")
    calls = []
    real = checkpoint_safety.atomic_write

    def interrupted(path, write):
        calls.append(os.path.basename(path))
        return real(path, lambda f: (f.write(b"partial"), (_ for _ in ()).throw(KeyboardInterrupt)))

    monkeypatch.setattr(checkpoint_safety, "atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_utils.PathManager.copy(str(src), str(dst), overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_utils.torch_persistent_save({"y": torch.zeros(2)}, str(dst))
    assert calls == ["checkpoint_last.pt", "checkpoint_last.pt"]
    assert dst.read_bytes() == b"previous checkpoint_last"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_1_10.pt", "checkpoint_last.pt"]
    monkeypatch.setattr(checkpoint_safety, "atomic_write", real)
    assert checkpoint_utils.PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == src.read_bytes()


def test_stale_temporaries_are_removed_and_others_kept(tmp_path):
    (tmp_path / ".checkpoint_last.pt.nar-tmp-abc123.tmp").write_bytes(b"half")
    (tmp_path / "checkpoint_last.pt").write_bytes(b"x")
    (tmp_path / "notes.tmp").write_bytes(b"y")
    assert checkpoint_safety.remove_stale_temporaries(str(tmp_path)) == [".checkpoint_last.pt.nar-tmp-abc123.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_last.pt", "notes.tmp"]


# ------------------------------------------------------------------------------------------- model overrides
def test_model_override_the_model_lacks_is_refused(toy_ctc_checkpoint):
    """Probe 6e2: {'prune_size': 0.5} given to nat_ctc_transformer (no pruning) was ignored without a word."""
    save_dir, _ = toy_ctc_checkpoint
    path = os.path.join(save_dir, "checkpoint_last.pt")
    with pytest.raises(ValueError, match=r"'prune_size'.*arch nat_ctc_transformer_tiny.*option of other models "
                                         r"\(.*deer"):
        checkpoint_utils.load_checkpoint_to_cpu(path, {"prune_size": 0.5})
    state = checkpoint_utils.load_checkpoint_to_cpu(path, {"data": "/elsewhere", "upsample_ratio": 3.0})
    assert state["cfg"].task.data == "/elsewhere" and state["cfg"].task.upsample_ratio == 3.0
