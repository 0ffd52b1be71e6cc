"""Image classification on ImageFolder data with the shared training engine."""
from botnet.classification.api import (  # noqa: F401
    evaluate_classifier,
    train_classifier,
)
from botnet.classification.config import ClassificationConfig  # noqa: F401
from botnet.classification.kind import ClassificationKind  # noqa: F401  (registers the task)
from botnet.classification.predict import Classification, classify  # noqa: F401
from botnet.classification.task import ClassificationTask  # noqa: F401
