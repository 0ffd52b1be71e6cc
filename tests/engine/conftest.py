import sys
from pathlib import Path

# the toy task is imported by tests here and by the scripts they launch in subprocesses
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The toy models are far too small to gain from threads; one thread avoids the cost of
    oversubscription when the test suite shares the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
