"""The CAM engine: model hooks, the formulas and the :class:`Explainer` front."""

from .explainer import Explainer, Explanation, resolve_device
from .methods import CAM, METHODS, CAMMethod, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM

__all__ = [
    "Explainer",
    "Explanation",
    "resolve_device",
    "CAMMethod",
    "CAM",
    "GradCAM",
    "HiResCAM",
    "GradCAMPlusPlus",
    "LayerCAM",
    "ScoreCAM",
    "EigenCAM",
    "METHODS",
]
