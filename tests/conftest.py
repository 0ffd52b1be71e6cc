import os

import pytest
import torch

# Two cores here and on CI: keep torch from oversubscribing when pytest runs alongside other work.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# Runs compared with each other (a resumed run against an uninterrupted one) must use one thread
# count: the default CPU setting picks it from the machine's load when each run starts. The
# setting's own tests choose it explicitly.
os.environ.setdefault("BOTNET_CPU", "torch")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
