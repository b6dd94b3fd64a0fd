"""An independent float64 EfficientNet-Lite0 forward, straight from the weights file.

Written from the definitions (TensorFlow's EfficientNet-Lite: "same" padding, BatchNorm
with eps 1e-3, ReLU6, no squeeze-excitation, B0's stage table) on the file's own
lukemelas/EfficientNet-PyTorch key names, with ``torch.nn.functional`` only: it shares no
code with ``camvideo.engine.models.lite0`` (not its module, its key mapping, its padding).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# EfficientNet-B0's stages (the paper's Table 1): (stride of the first block, repeats)
B0_STAGES = ((1, 1), (2, 2), (2, 2), (2, 3), (1, 3), (2, 4), (1, 1))


def tf_input(rgb: np.ndarray) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> TensorFlow's Lite input (x - 127) / 128, float64 (1, 3, H, W)."""
    return torch.from_numpy((rgb.astype(np.float64) - 127.0) / 128.0).permute(2, 0, 1).unsqueeze(0)


def _same_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int = 1) -> torch.Tensor:
    k = weight.shape[-1]
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), weight, None, stride, 0, 1, groups)


def _bn(x: torch.Tensor, state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    def v(name: str) -> torch.Tensor:
        return state[f"{prefix}.{name}"].view(1, -1, 1, 1)

    return (x - v("running_mean")) / torch.sqrt(v("running_var") + 1e-3) * v("weight") + v("bias")


def reference_logits(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Lite0's logits for a float64 input ``x`` (N, 3, H, W), from a lukemelas state dict."""
    s = {k: v.double() for k, v in state.items()}
    y = F.relu6(_bn(_same_conv(x, s["_conv_stem.weight"], 2), s, "_bn0"))
    strides = [stride if i == 0 else 1 for stride, repeats in B0_STAGES for i in range(repeats)]
    for i, stride in enumerate(strides):
        p = f"_blocks.{i}"
        h = y
        if f"{p}._expand_conv.weight" in s:
            h = F.relu6(_bn(_same_conv(h, s[f"{p}._expand_conv.weight"], 1), s, f"{p}._bn0"))
        h = F.relu6(_bn(_same_conv(h, s[f"{p}._depthwise_conv.weight"], stride, groups=h.shape[1]), s, f"{p}._bn1"))
        h = _bn(_same_conv(h, s[f"{p}._project_conv.weight"], 1), s, f"{p}._bn2")
        y = y + h if stride == 1 and h.shape == y.shape else h
    y = F.relu6(_bn(_same_conv(y, s["_conv_head.weight"], 1), s, "_bn1"))
    return y.mean(dim=(2, 3)) @ s["_fc.weight"].T + s["_fc.bias"]
