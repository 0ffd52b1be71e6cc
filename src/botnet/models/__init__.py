"""The model family: ResNet baselines, BoTNet-50..200, BoTNet-S1 and the T3..T7 models."""
from botnet.models.botnet import BoTNet
from botnet.models.config import ModelConfig
from botnet.models.registry import create_model, get_model_config, list_models, pretrained_sources, register_model

__all__ = ["BoTNet", "ModelConfig", "create_model", "get_model_config", "list_models", "pretrained_sources",
           "register_model"]
