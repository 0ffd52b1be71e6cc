"""Detection and instance segmentation as an engine :class:`~botnet.engine.task.Task`: COCO data
with the paper's scale jitter, a Mask R-CNN on a BoTNet / ResNet backbone, COCO AP."""
from __future__ import annotations

import sys
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from botnet.data.coco import CocoDetection, collate_detection
from botnet.data.det_transforms import detection_train_transforms
from botnet.detection.config import DetectionConfig
from botnet.detection.evaluator import CocoEvaluator, to_float_image
from botnet.detection.maskrcnn import build_maskrcnn
from botnet.engine import distributed as du
from botnet.engine.config import to_dict
from botnet.engine.task import Evaluation, Task
from botnet.errors import UserError


def _plain(value):
    """tv_tensors -> plain tensors (torchvision's detectors index and stack them)."""
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def targets_to_device(targets: Sequence[dict], device: torch.device) -> list[dict]:
    keep = ("boxes", "labels", "masks")
    return [{k: _plain(t[k]).to(device, non_blocking=True) for k in keep if k in t} for t in targets]


class DetectionTask(Task):
    name = "det"
    main_metric = "box_ap"

    def __init__(self, cfg: DetectionConfig, class_names: Sequence[str] | None = None,
                 cat_ids: Sequence[int] | None = None):
        self.cfg = cfg
        self.class_names = list(class_names) if class_names is not None else None
        self.cat_ids = list(cat_ids) if cat_ids is not None else None
        self.val_set: CocoDetection | None = None

    # -- data ------------------------------------------------------------------------------

    def build_datasets(self):
        d = self.cfg.data
        if not (d.train_images and d.train_ann):
            raise UserError("no training data given: pass --data IMAGE_DIR and --ann INSTANCES.json "
                            "(data.train_images / data.train_ann)")
        transforms = detection_train_transforms(d.canvas, d.scale_range, d.hflip)
        train = CocoDetection(d.train_images, d.train_ann, transforms, with_masks=self.cfg.model.masks,
                              keep_empty=d.train_empty, strict=d.strict)
        self.class_names, self.cat_ids = train.class_names, train.cat_ids
        if len(train) == 0:
            raise UserError(f"{d.train_ann}: no image with annotations to train on")
        val = self.build_val_dataset() if (d.val_images or d.val_ann) else None
        return train, val

    def build_val_dataset(self, images: str | None = None, ann: str | None = None) -> CocoDetection:
        """The evaluation set; its categories must be those the model is trained on."""
        images = images or self.cfg.data.val_images
        ann = ann or self.cfg.data.val_ann
        if not (images and ann):
            raise UserError("evaluation needs both an image folder and an instances file "
                            "(--val-data and --val-ann)")
        val = CocoDetection(images, ann, transforms=None, with_masks=False, keep_empty=True,
                            strict=self.cfg.data.strict)
        if self.cat_ids is not None and (val.cat_ids != self.cat_ids or val.class_names != self.class_names):
            def listing(ids, names):
                return ", ".join(f"{i}={n}" for i, n in zip(ids, names))
            raise UserError(
                f"{ann} declares {len(val.cat_ids)} categories ({listing(val.cat_ids, val.class_names)}) but the "
                f"model has {len(self.cat_ids)} classes ({listing(self.cat_ids, self.class_names or [])}); "
                "evaluate on data with the categories it was trained on")
        self.cat_ids, self.class_names = val.cat_ids, val.class_names
        self.val_set = val
        return val

    def collate_fn(self, train: bool):
        return collate_detection

    # -- model, loss, metrics --------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        if not self.class_names:
            raise UserError("the class names are unknown: build the datasets (or load weights) first")
        return len(self.class_names)

    def build_model(self) -> nn.Module:
        model = build_maskrcnn(self.cfg.model.name, self.num_classes, canvas=self.cfg.data.canvas,
                               **self.cfg.model.builder_kwargs())
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

    def training_step(self, model, batch, device) -> dict[str, torch.Tensor]:
        images, targets = self._unpack(batch, device)
        if not images:
            # every image of the batch was unreadable: a zero loss keeps all ranks in step
            return {"loss": sum(p.sum() for p in model.parameters()) * 0.0}
        losses = model(images, targets_to_device(targets, device))
        losses = {k: v.float() for k, v in losses.items()}
        return {"loss": sum(losses.values()), **losses}

    def evaluate(self, model, batches: Iterable[Any], device) -> Evaluation:
        """COCO box (and mask) AP on the 0-100 scale over every rank's images, and the detections
        in the COCO results format."""
        if self.val_set is None:
            raise UserError("no validation set: build_datasets() or build_val_dataset() first")
        iou_types = ("bbox", "segm") if getattr(model, "roi_heads", None) is not None and \
            model.roi_heads.has_mask() else ("bbox",)
        evaluator = CocoEvaluator(self.val_set.coco, self.val_set.label_to_cat, iou_types)
        for batch in batches:
            images, targets = self._unpack(batch, device)
            if not images:
                continue
            outputs = model(images)
            evaluator.update(outputs, [t["image_id"] for t in targets])
        evaluator.gather()
        metrics = evaluator.summarize()
        metrics["num_images"] = len(evaluator.image_ids)
        return Evaluation(metrics, evaluator.results)

    def metadata(self) -> dict[str, Any]:
        return {"task": "det", "class_names": list(self.class_names or []), "cat_ids": list(self.cat_ids or []),
                "canvas": self.cfg.data.canvas, "detector": to_dict(self.cfg.model)}


