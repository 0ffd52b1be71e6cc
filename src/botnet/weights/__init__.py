"""Weights: everything between a model and a file of tensors, above :mod:`botnet.models`.

- ``files``: safetensors / weights-only torch checkpoints, loading into a model with position
  tables resized, the report of what a load did;
- ``fit``: what architecture a state dict holds, the one ``differences`` helper, loading a mapped
  state with what was loaded, skipped and left at init reported;
- ``convert``: other libraries' names (timm, torchvision) in ours, and ``botnet convert``;
- ``hub``: fetching through torchvision's / timm's own caches, offline-safe;
- ``pretrained``: weights sources by name (``imagenet``, ``torchvision:...``, ``timm:...``, a file);
- ``builder``: ``create_model(name, pretrained=...)``;
- ``rebuild``: the metadata convention, and a model rebuilt from a weights file (``load_model``)
  through its task.
"""
from botnet.weights.files import load_state_dict, load_weights, read_metadata, save_weights  # noqa: F401

__all__ = ["load_state_dict", "load_weights", "read_metadata", "save_weights"]
