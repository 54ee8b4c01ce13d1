import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import fairseq_nar_plugins  # noqa: E402,F401  (registers tasks/models/criterions, checkpoint allow-list)
import torch  # noqa: E402

# Tests run tiny models: one thread each (NAR_TEST_THREADS to change it) is as fast as two, and stays fast when the
# machine is shared (several OpenMP threads per process on an oversubscribed CPU spin-wait and slow down ~10x).
torch.set_num_threads(int(os.environ.get("NAR_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def shared_data_dir():
    """../shared/data beside the checkout (CI and developers have it); tests needing it skip with a reason if not."""
    path = os.environ.get("NAR_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
    if not os.path.isdir(path):
        pytest.skip(f"shared data not found at {path} (set NAR_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def toy_data_bin(tmp_path_factory):
    """The toy translation task (tests/toy_data.py), binarized with a joined dictionary."""
    from helpers_cli import preprocess_toy
    from toy_data import write_toy_corpus

    root = tmp_path_factory.mktemp("toy")
    raw = write_toy_corpus(str(root / "raw"))
    return preprocess_toy(raw, str(root / "bin"))


@pytest.fixture(scope="session")
def toy_ctc_checkpoint(toy_data_bin, tmp_path_factory):
    """A nat_ctc_transformer_tiny trained with fairseq-train for 400 updates on the toy task (about 30 s).

    Returns (save_dir, train_stdout)."""
    from helpers_cli import ctc_train_args, run_cli

    save_dir = str(tmp_path_factory.mktemp("toy_ctc_ckpt"))
    proc = run_cli("fairseq_cli.train", ctc_train_args(toy_data_bin, save_dir, 400))
    return save_dir, proc.stdout + proc.stderr
