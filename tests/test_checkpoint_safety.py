"""fairseq checkpoints load with weights_only=True thanks to the allow-list; anything else is refused clearly."""
import argparse
import os
import sys

import pytest
import torch
from fairseq import checkpoint_utils

from fairseq_nar_plugins.checkpoint_safety import UnsafeCheckpointError

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
