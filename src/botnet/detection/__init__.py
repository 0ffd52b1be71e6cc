"""Detection and instance segmentation: Mask R-CNN + FPN on BoTNet / ResNet backbones."""
from botnet.detection.config import DetDataConfig, DetectionConfig, DetModelConfig  # noqa: F401
from botnet.detection.evaluator import CocoEvaluator, coco_metrics  # noqa: F401
from botnet.detection.kind import DetectionKind  # noqa: F401  (registers the task)
from botnet.detection.maskrcnn import BackboneWithFPN, build_fasterrcnn, build_maskrcnn  # noqa: F401
from botnet.detection.task import DetectionTask  # noqa: F401
