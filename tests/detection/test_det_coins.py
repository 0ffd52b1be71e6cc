"""Real photographs: a BoTNet Mask R-CNN learns the coins of scikit-image's ``coins.png``.

The set (``botnet.data.coins``): square tiles of the photograph, labels made by a watershed of
its Sobel gradient (no person drew them), training tiles from the upper half and held-out tiles
from the lower half (12 coins each, none in both). The run is ``botnet train det --config
det_finetune_small`` from scratch (no weights can be fetched in a test:
``model.backbone_weights=null``, so BatchNorm must learn: ``--norm bn``), on ``botnet_tiny`` at
the tiles' own size; it clears AP floors that constant or random predictors do not come near.
The numbers: docs/detection.md, "Small datasets".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from botnet.cli import main
from tests.detection.det_support import baseline_scores, evaluate, one_thread  # noqa: F401 (a fixture)

pytest.importorskip("skimage")

TILE = 128
#: ``botnet train det`` arguments after --data / --ann / --val-data / --val-ann / --out: the recipe
#: from scratch on the tiny model, with narrower heads (about 50 s of training on one thread)
RECIPE = ["--config", "det_finetune_small", "--model", "botnet_tiny", "--norm", "bn",
          "--set", "model.backbone_weights=null", "--img-size", str(TILE), "--anchors", "auto",
          "--epochs", "12", "--batch-size", "8", "--workers", "0",
          "--set", "model.fpn_channels=32", "--set", "model.box_representation=128",
          "--set", "model.mask_head_channels=[32,32]", "--set", "log.progress=never", "--set", "log.tensorboard=false"]
#: Measured (best evaluation, training seeds 0, 1, 2; docs/detection.md, "Small datasets"):
#: box AP 55.8 / 65.4 / 69.0, box AP50 98.0 / 98.1 / 99.3, mask AP50 98.0 / 98.1 / 99.3; the constant, grid and random predictors of
#: ``det_support.baseline_results``: box AP50 0 / 7.6 / 0.7, mask AP50 0 / 10.4 / 0.8, box AP 0 / 1.9 / 0.1
#: (the grid of mean-sized boxes hits coins that fill a tile).
FLOORS = {"box_ap": 30.0, "box_ap50": 70.0, "mask_ap50": 70.0}


@pytest.fixture(scope="module")
def coins(tmp_path_factory):
    from botnet.data.coins import make_coins_dataset

    return make_coins_dataset(tmp_path_factory.mktemp("coins"), train=64, val=16, tile=TILE, seed=0)


def test_the_labels_find_every_coin_and_the_splits_share_none(coins):
    from botnet.data.coins import coins_photo, cut_row, label_coins

    labels = label_coins(coins_photo())
    areas = np.bincount(labels.ravel())[1:]
    assert len(areas) == 24 and areas.min() > 1000, sorted(areas)  # 24 coins, none split or lost
    cut = cut_row(labels, 0.5)
    upper, lower = set(np.unique(labels[:cut])) - {0}, set(np.unique(labels[cut:])) - {0}
    assert len(upper) == len(lower) == 12 and not upper & lower
    for split in ("train", "val"):
        doc = json.loads(Path(coins[f"{split}_ann"]).read_text())
        assert doc["info"]["objects"] == 12
        objects = [a for a in doc["annotations"] if not a["iscrowd"]]
        assert {a["image_id"] for a in objects} == {im["id"] for im in doc["images"]}  # a coin in every tile


@pytest.mark.slow
def test_trained_on_coin_tiles_it_finds_the_held_out_coins(coins, tmp_path, one_thread):  # noqa: F811
    run = tmp_path / "run"
    assert main(["train", "det", "--data", str(coins["train_images"]), "--ann", str(coins["train_ann"]),
                 "--val-data", str(coins["val_images"]), "--val-ann", str(coins["val_ann"]),
                 "--out", str(run), *RECIPE]) == 0
    metrics, _ = evaluate(run / "best.safetensors", coins["val_images"], coins["val_ann"], tmp_path / "eval")
    assert {k: metrics[k] for k in FLOORS if metrics[k] < FLOORS[k]} == {}, metrics


def test_predictors_that_learn_nothing_stay_below_a_quarter_of_each_floor(coins):
    baselines = baseline_scores(coins["train_ann"], coins["val_images"], coins["val_ann"], FLOORS)
    for name, scores in baselines.items():
        assert all(scores[k] <= FLOORS[k] / 4 for k in FLOORS), (name, scores)


@pytest.mark.parametrize("kwargs, message", [({"tile": 200}, "tiles of 200 px do not fit"),
                                             ({"train": 0}, "at least one tile"), ({"split": 1.5}, "split must be")])
def test_bad_settings_are_refused_by_name(tmp_path, kwargs, message):
    from botnet.data.coins import make_coins_dataset

    with pytest.raises(ValueError, match=message):
        make_coins_dataset(tmp_path, **kwargs)
