"""botnet: Bottleneck Transformers for visual recognition."""
__version__ = "0.1.0"
try:
    from botnet.models import create_model, list_models  # noqa: F401
    from botnet.weights import load_weights, save_weights  # noqa: F401
except ImportError:  # the model side is still being assembled
    pass
