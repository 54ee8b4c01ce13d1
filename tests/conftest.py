import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import fairseq_nar_plugins  # noqa: E402,F401  (registers tasks/models/criterions, checkpoint allow-list)


@pytest.fixture(scope="session")
def shared_data_dir():
    """../shared/data beside the checkout (CI and developers have it); tests needing it skip with a reason if not."""
    path = os.environ.get("NAR_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
    if not os.path.isdir(path):
        pytest.skip(f"shared data not found at {path} (set NAR_SHARED_DATA)")
    return path
