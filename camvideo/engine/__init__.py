"""The CAM engine: the model registry, layer discovery, the formulas (one hook-owning base
class), the inference backends (torch, OpenVINO, ONNX Runtime) and the :class:`Explainer` front."""

from .explainer import Explainer, Explanation, Target, resolve_device
from .methods import (
    CAM,
    METHODS,
    CAMMethod,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    method_name,
)  # fmt: skip
from .models import DEFAULT_MODEL, ModelSpec, available_models, load_model
from .transfer import FrameUploader

__all__ = [
    "CAM", "DEFAULT_MODEL", "METHODS", "CAMMethod", "EigenCAM", "Explainer", "Explanation", "FrameUploader", "GradCAM",
    "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "ModelSpec", "ScoreCAM", "Target", "available_models", "load_model",
    "method_name", "resolve_device",
]  # fmt: skip
