"""Detection and instance segmentation as an engine :class:`~botnet.engine.task.Task`: COCO data
with the paper's scale jitter, a Mask R-CNN on a BoTNet / ResNet backbone, COCO AP."""
from __future__ import annotations

import math
import sys
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from botnet.data.coco import CocoDetection, collate_detection
from botnet.data.det_transforms import detection_train_transforms, parse_scale_range
from botnet.detection.config import DetectionConfig
from botnet.detection.evaluator import CocoEvaluator, to_float_image
from botnet.detection.maskrcnn import build_maskrcnn
from botnet.detection.masks import IMAGE_SIZE, unpasted_masks
from botnet.engine import distributed as du
from botnet.engine.config import to_dict
from botnet.engine.task import Evaluation, Task
from botnet.errors import UserError
from botnet.tasks import DETECTION


def _plain(value):
    """tv_tensors -> plain tensors (torchvision's detectors index and stack them)."""
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def targets_to_device(targets: Sequence[dict], device: torch.device) -> list[dict]:
    keep = ("boxes", "labels", "masks")
    return [{k: _plain(t[k]).to(device, non_blocking=True) for k in keep if k in t} for t in targets]


def _check_categories(val: CocoDetection, ann, class_names: Sequence[str], cat_ids: Sequence[int]) -> None:
    if list(val.cat_ids) != list(cat_ids) or list(val.class_names) != list(class_names):
        def listing(ids, names):
            return ", ".join(f"{i}={n}" for i, n in zip(ids, names))
        raise UserError(
            f"{ann} declares {len(val.cat_ids)} categories ({listing(val.cat_ids, val.class_names)}) but the "
            f"model has {len(cat_ids)} classes ({listing(cat_ids, class_names)}); "
            "evaluate on data with the categories it was trained on")


def load_val_dataset(cfg: DetectionConfig, images, ann, class_names: Sequence[str] | None = None,
                     cat_ids: Sequence[int] | None = None) -> CocoDetection:
    """An evaluation set; with ``class_names`` / ``cat_ids`` its categories must be those."""
    if not (images and ann):
        raise UserError("evaluation needs both an image folder and an instances file (--val-data and --val-ann)")
    # the detector resizes the longer side to the canvas: a larger photo is read at that size (PIL's
    # draft decodes a JPEG at a fraction of the work), never whole in float; detections are mapped
    # back to the photo's own size (_at_photo_size)
    val = CocoDetection(images, ann, transforms=None, with_masks=False, keep_empty=True, strict=cfg.data.strict,
                        max_side=cfg.data.img_size)
    if class_names is not None:
        _check_categories(val, ann, class_names, cat_ids or list(range(1, len(class_names) + 1)))
    return val


def load_training_data(cfg: DetectionConfig) -> tuple[CocoDetection, CocoDetection | None]:
    """(train, val) of a run, validated; the classes are the training set's categories."""
    d = cfg.data
    if not (d.train_images and d.train_ann):
        raise UserError("no training data given: pass --data IMAGE_DIR and --ann INSTANCES.json "
                        "(data.train_images / data.train_ann)")
    transforms = detection_train_transforms(d.img_size, d.scale_range, d.hflip)
    # the jitter never scales an image's longer side past canvas x its largest factor: larger
    # photos are read at that size (a fraction of the decoding and of the masks' memory)
    max_side = math.ceil(d.img_size * parse_scale_range(d.scale_range)[1])
    train = CocoDetection(d.train_images, d.train_ann, transforms, with_masks=cfg.model.masks,
                          keep_empty=d.train_empty, strict=d.strict, max_side=max_side)
    if len(train) == 0:
        raise UserError(f"{d.train_ann}: no image with annotations to train on")
    val = None
    if d.val_images or d.val_ann:
        val = load_val_dataset(cfg, d.val_images, d.val_ann, train.class_names, train.cat_ids)
    return train, val


def _at_photo_size(outputs: list[dict], images: list[torch.Tensor], targets: list[dict]) -> list[dict]:
    """Detections on images read smaller than their photos (``max_side``) in the photos' pixels:
    boxes scaled, and the small masks to be pasted at the photo's size."""
    for out, image, target in zip(outputs, images, targets):
        (h, w), (ih, iw) = target["orig_size"], image.shape[-2:]
        if (ih, iw) == (h, w):
            continue
        scale = torch.tensor([w / iw, h / ih, w / iw, h / ih], device=out["boxes"].device)
        out["boxes"] = out["boxes"] * scale
        if IMAGE_SIZE in out:
            out[IMAGE_SIZE] = (h, w)
        elif "masks" in out:
            raise ValueError("masks pasted at the reduced size; evaluate with unpasted_masks")
    return outputs


class DetectionTask(Task):
    """A detection task for a known set of classes: from a training set (:meth:`for_training`) or
    from the metadata of trained weights (evaluation)."""

    name = DETECTION
    main_metric = "box_ap"

    def __init__(self, cfg: DetectionConfig, class_names: Sequence[str], cat_ids: Sequence[int] | None = None,
                 datasets: tuple[CocoDetection, CocoDetection | None] | None = None):
        self.cfg = cfg
        self.class_names = list(class_names)
        self.cat_ids = list(cat_ids) if cat_ids else list(range(1, len(self.class_names) + 1))
        self.datasets = datasets
        self.val_set: CocoDetection | None = datasets[1] if datasets is not None else None

    @property
    def sync_batchnorm(self) -> bool:
        return self.cfg.model.norm == "syncbn"

    @classmethod
    def for_training(cls, cfg: DetectionConfig) -> "DetectionTask":
        """The task of a training run: its data loaded and validated, its classes resolved."""
        train, val = load_training_data(cfg)
        return cls(cfg, train.class_names, train.cat_ids, (train, val))

    # -- data ------------------------------------------------------------------------------

    def build_datasets(self):
        if self.datasets is None:
            raise UserError("this detection task has no training data (DetectionTask.for_training loads it)")
        return self.datasets

    def build_val_dataset(self, images: str, ann: str) -> CocoDetection:
        """The evaluation set of :meth:`evaluate`; its categories must be the model's."""
        self.val_set = load_val_dataset(self.cfg, images, ann, self.class_names, self.cat_ids)
        return self.val_set

    def collate_fn(self, train: bool):
        return collate_detection

    # -- model, loss, metrics --------------------------------------------------------------

    def build_model(self) -> nn.Module:
        model = build_maskrcnn(self.cfg.model, len(self.class_names), canvas=self.cfg.data.img_size)
        report = model.backbone.body.load_report
        if report is not None and du.rank() == 0:
            print(f"backbone weights {self.cfg.model.backbone_weights}: {report.summary()}", file=sys.stderr)
        return model

    def _unpack(self, batch, device):
        """Images as float tensors on ``device`` and the targets; unreadable images reported."""
        images, targets, bad = batch
        for item in bad:
            self.skip_unreadable(item.path, item.reason, self.cfg.data.strict)
        # (channels_last is left to the model: torchvision batches the images inside it)
        return [to_float_image(im, device) for im in images], targets

    def blank_batch(self, device):
        size = self.cfg.data.img_size
        target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                  "masks": torch.zeros(0, size, size, dtype=torch.uint8)}
        return [torch.zeros(3, size, size, dtype=torch.uint8, device=device)], [target], []

    def training_step(self, model, batch, device) -> dict[str, torch.Tensor]:
        images, targets = self._unpack(batch, device)
        if not images:
            return self.zero_loss(model, device)
        losses = model(images, targets_to_device(targets, device))
        losses = {k: v.float() for k, v in losses.items()}
        return {"loss": sum(losses.values()), **losses}

    def evaluate(self, model, batches: Iterable[Any], device) -> Evaluation:
        """COCO box (and mask) AP on the 0-100 scale over every rank's images, the detections in
        the COCO results format, and in ``details`` the average recalls and per-category APs."""
        if self.val_set is None:
            raise UserError("no validation set: give the run one, or call build_val_dataset() first")
        iou_types = ("bbox", "segm") if getattr(model, "roi_heads", None) is not None and \
            model.roi_heads.has_mask() else ("bbox",)
        evaluator = CocoEvaluator(self.val_set.coco, self.val_set.label_to_cat, iou_types)
        for batch in batches:
            images, targets = self._unpack(batch, device)
            if not images:
                continue
            with unpasted_masks(model):  # pasted one at a time into run-length codes
                outputs = model(images)
            evaluator.update(_at_photo_size(outputs, images, targets), [t["image_id"] for t in targets])
        evaluator.gather()
        metrics, details = evaluator.summary()
        metrics["num_images"] = len(evaluator.image_ids)
        return Evaluation(metrics, evaluator.results, details)

    def metadata(self) -> dict[str, Any]:
        return {"task": self.name, "class_names": list(self.class_names), "cat_ids": list(self.cat_ids),
                "canvas": self.cfg.data.img_size, "detector": self._description()}

    def _description(self) -> dict[str, Any]:
        # the model section without attn_impl: a run-time choice, not saved (nor is it in a
        # classifier's ModelConfig)
        return {k: v for k, v in to_dict(self.cfg.model).items() if k != "attn_impl"}
