"""COCO evaluation: flat 0-100 keys, perfect and wrong detections, category ids mapped back."""
import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from botnet.data.coco import decode_rle
from botnet.detection.evaluator import STAT_NAMES, CocoEvaluator, coco_metrics, coco_summary, detections_to_coco

H, W = 40, 50


def _gt():
    masks = {1: np.zeros((H, W), np.uint8), 2: np.zeros((H, W), np.uint8)}
    masks[1][5:20, 5:25] = 1
    masks[2][22:38, 30:48] = 1
    anns = []
    for aid, (cat, m) in enumerate([(10, masks[1]), (20, masks[2])], start=1):
        ys, xs = np.nonzero(m)
        rle = mask_utils.encode(np.asfortranarray(m))
        anns.append({"id": aid, "image_id": 1, "category_id": cat, "iscrowd": 0, "area": int(m.sum()),
                     "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)],
                     "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}})
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "width": W, "height": H, "file_name": "x.png"}], "annotations": anns,
                    "categories": [{"id": 10, "name": "a"}, {"id": 20, "name": "b"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, masks


def _output(masks, labels):
    boxes, probs = [], []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        probs.append(torch.from_numpy(m).float()[None])
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "scores": torch.tensor([0.9, 0.8]), "masks": torch.stack(probs)}


def test_perfect_detections_score_100_on_the_flat_keys():
    coco, masks = _gt()
    ev = CocoEvaluator(coco, {1: 10, 2: 20})
    ev.update([_output([masks[1], masks[2]], [1, 2])], [1])
    ev.gather()
    metrics = ev.summarize()
    assert set(metrics) == {f"{p}_{s}" for p in ("box", "mask") for s in STAT_NAMES}
    assert metrics["box_ap"] == pytest.approx(100.0)
    assert metrics["mask_ap"] == pytest.approx(100.0)
    assert metrics["box_ap50"] == pytest.approx(100.0)


def test_swapped_categories_score_zero():
    coco, masks = _gt()
    ev = CocoEvaluator(coco, {1: 10, 2: 20})
    ev.update([_output([masks[1], masks[2]], [2, 1])], [1])
    assert ev.summarize()["box_ap"] == 0.0


def test_results_use_json_category_ids_and_xywh():
    coco, masks = _gt()
    results = detections_to_coco(_output([masks[1], masks[2]], [1, 2]), 1, {1: 10, 2: 20})
    assert [r["category_id"] for r in results] == [10, 20]
    assert results[0]["bbox"] == [5.0, 5.0, 20.0, 15.0]
    decoded = decode_rle({"size": results[0]["segmentation"]["size"],
                          "counts": results[0]["segmentation"]["counts"].encode()})
    assert (decoded == masks[1]).all()


def test_per_category_ap_scores_each_category_on_its_own():
    coco, masks = _gt()
    ev = CocoEvaluator(coco, {1: 10, 2: 20})
    # category a found exactly; the object of b detected as a (a false positive of a, scored below
    # the true one, so a keeps AP 100); b itself never detected
    ev.update([_output([masks[1], masks[2]], [1, 1])], [1])
    ev.gather()
    metrics, details = ev.summary()
    cats = details["per_category"]
    assert cats["a"] == {"id": 10, "box_ap": 100.0, "box_ap50": 100.0, "mask_ap": 100.0, "mask_ap50": 100.0}
    assert cats["b"]["id"] == 20 and cats["b"]["box_ap"] == 0.0 and cats["b"]["mask_ap"] == 0.0
    assert metrics["box_ap"] == pytest.approx((cats["a"]["box_ap"] + cats["b"]["box_ap"]) / 2)
    assert details["recall"]["box_ar100"] == pytest.approx(50.0) and details["recall"]["mask_ar100"] == pytest.approx(50.0)


def test_no_detections_gives_zeros_not_an_error():
    coco, _ = _gt()
    metrics = coco_metrics(coco, [], ("bbox", "segm"))
    assert metrics["box_ap"] == 0.0 and metrics["mask_apl"] == 0.0


def test_box_only_results_skip_mask_metrics():
    coco, masks = _gt()
    out = _output([masks[1], masks[2]], [1, 2])
    del out["masks"]
    metrics = coco_metrics(coco, detections_to_coco(out, 1, {1: 10, 2: 20}), ("bbox", "segm"))
    assert metrics["box_ap"] == pytest.approx(100.0) and "mask_ap" not in metrics


def _rank_main(rank, world, init_file, queue):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        coco, masks = _gt()
        ev = CocoEvaluator(coco, {1: 10, 2: 20})
        # each rank saw one of the two objects; only the gathered set is perfect
        m = masks[1] if rank == 0 else masks[2]
        out = _output([m, m], [rank + 1, rank + 1])
        out = {k: v[:1] for k, v in out.items()}
        ev.update([out], [1])
        ev.gather()
        queue.put((rank, len(ev.results), ev.summarize()["box_ap"]))
    finally:
        dist.destroy_process_group()


def test_ranks_gather_predictions_before_scoring(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_rank_main, args=(2, str(tmp_path / "init"), queue), nprocs=2, start_method="spawn")
    results = sorted(queue.get(timeout=60) for _ in range(2))
    assert [r[1] for r in results] == [2, 2]
    assert all(r[2] == pytest.approx(100.0) for r in results)


def test_drawing_enlarges_small_pictures_and_paints_masks():
    from botnet.detection.visualize import draw_detections

    _, masks = _gt()
    image = torch.zeros(3, H, W, dtype=torch.uint8)
    drawn = draw_detections(image, _output([masks[1], masks[2]], [1, 2]), ["a", "b"], min_side=200)
    assert drawn.shape == (3, H * 4, W * 4) and drawn.dtype == torch.uint8
    # inside the first mask (away from the box outline) the mask colour shows
    assert drawn[:, 12 * 4, 15 * 4].sum() > 0
    assert drawn[:, 2, 2].sum() == 0
    none = draw_detections(image, {k: v[:0] for k, v in _output([masks[1]] * 2, [1, 1]).items()}, ["a", "b"])
    assert none.sum() == 0


def test_size_ranges_without_objects_report_minus_one():
    coco, masks = _gt()  # both objects are "small" (< 32^2 pixels)
    ev = CocoEvaluator(coco, {1: 10, 2: 20})
    ev.update([_output([masks[1], masks[2]], [1, 2])], [1])
    metrics = ev.summarize()
    assert metrics["box_aps"] == pytest.approx(100.0)
    assert metrics["box_apl"] == -1.0 and metrics["mask_apl"] == -1.0


def test_each_key_holds_its_own_figure_on_a_set_where_all_six_differ():
    # One class, three objects on a 1000 x 1000 image: small (20 x 20), medium (50 x 50), large
    # (200 x 200). Detections: the large one exactly (score 0.9); the medium one shifted by 12 px
    # (IoU 38 / 62 = 0.613, score 0.8), a hit at IoU thresholds 0.50, 0.55 and 0.60 only; the
    # small one missed. COCO's AP samples precision at 101 recall points 0, 0.01, .., 1:
    # with 2 of 3 found at precision 1, points 0 .. 0.66 score (67 of 101); with 1 of 3, 0 .. 0.33 (34).
    coco = COCO()
    boxes = {1: [700, 700, 20, 20], 2: [100, 100, 50, 50], 3: [400, 300, 200, 200]}
    coco.dataset = {"images": [{"id": 1, "width": 1000, "height": 1000, "file_name": "x.png"}],
                    "categories": [{"id": 1, "name": "a"}],
                    "annotations": [{"id": i, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": b,
                                     "area": b[2] * b[3]} for i, b in boxes.items()]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    results = [{"image_id": 1, "category_id": 1, "bbox": [400, 300, 200, 200], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [112, 100, 50, 50], "score": 0.8}]
    m, details = coco_summary(coco, results, iou_types=("bbox",))
    # recall, averaged over the 10 IoU thresholds: the large object found at all 10, the medium
    # one at 3; with one detection per image only the large one (the higher score) counts
    assert details["recall"] == pytest.approx({"box_ar1": 100 / 3, "box_ar10": 100 * 13 / 30, "box_ar100": 100 * 13 / 30,
                                               "box_ars": 0.0, "box_arm": 30.0, "box_arl": 100.0}, abs=1e-3)
    assert details["per_category"]["a"]["box_ap"] == pytest.approx(m["box_ap"])  # one category: the overall AP
    two, one = 67 / 101, 34 / 101
    expected = {"box_ap": 100 * (3 * two + 7 * one) / 10, "box_ap50": 100 * two, "box_ap75": 100 * one,
                "box_aps": 0.0,                # the small object is never found
                "box_apm": 100 * 3 / 10,       # the medium one at 3 of the 10 thresholds, alone in its range
                "box_apl": 100.0}
    assert m == pytest.approx(expected, abs=1e-3)
