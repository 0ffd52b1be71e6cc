"""Top-1 / top-5 counted exactly on hand-made logits."""
import pytest
import torch

from botnet.classification.task import topk_correct


def test_topk_counts_a_row_only_when_its_label_is_among_the_k_highest():
    # 6 classes; the label's rank in each row is set by hand: 1st, 2nd, 5th, 6th
    logits = torch.tensor([[9.0, 1, 2, 3, 4, 5],     # label 0: rank 1
                           [1.0, 9, 8, 3, 4, 5],     # label 1: rank 1
                           [1.0, 8, 9, 3, 4, 5],     # label 1: rank 2
                           [6.0, 9, 8, 7, 2, 1],     # label 0: rank 4
                           [1.0, 9, 8, 7, 6, 5],     # label 5: rank 5
                           [0.0, 9, 8, 7, 6, 5]])    # label 0: rank 6
    labels = torch.tensor([0, 1, 1, 0, 5, 0])
    top1, top2, top5 = topk_correct(logits, labels, (1, 2, 5))
    assert (top1.item(), top2.item(), top5.item()) == (2, 3, 5)


def test_confusion_counts_and_top_k_follow_the_class_count():
    from botnet.classification.report import confusion_counts, per_class, topk_ks

    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    confusion = confusion_counts(labels, predicted, 4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    acc = per_class(confusion, ["a", "b", "c", "d"])
    assert acc["a"] == {"accuracy": 50.0, "images": 2} and acc["c"]["accuracy"] == pytest.approx(200 / 3, abs=1e-3)
    assert acc["d"] == {"accuracy": None, "images": 0}  # no image of this class in the split
    assert topk_ks(4) == (1,) and topk_ks(5) == (1,) and topk_ks(6) == (1, 5)
