"""botnet: Bottleneck Transformers for visual recognition."""
from botnet.api import Predictor, load  # noqa: F401  (imports both tasks, which register themselves)
from botnet.models import list_models  # noqa: F401
from botnet.weights import load_weights, save_weights  # noqa: F401
from botnet.weights.builder import create_model  # noqa: F401

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load", "Predictor", "load_weights", "save_weights"]
