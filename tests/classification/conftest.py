import shutil

import pytest
import torch

from botnet.data.cls_synthetic import make_image_folder


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads; one thread avoids oversubscription when the test
    suite shares the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory):
    """4 classes x (16 train, 6 val) colour-blob images of 40 x 40 pixels (read-only: copy it to
    change it)."""
    return make_image_folder(tmp_path_factory.mktemp("colours"), num_classes=4, train_per_class=16,
                             val_per_class=6, size=40, seed=0)


@pytest.fixture
def colour_copy(colour_folder, tmp_path):
    return shutil.copytree(colour_folder, tmp_path / "data")
