"""Finding the layer to explain, by one dry run of the model.

The target layer is the last module whose output is still a spatial map (H*W > 1).
The same dry run tells whether the model has a CAM head: a ``nn.Linear`` producing the
logits whose input is exactly the spatial mean of that layer's output (global average
pooling, maybe through dropout/flatten). That check is numerical, so functional
activations between the layer and the pooling (DenseNet's ``F.relu``) are caught
instead of silently giving wrong maps.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelError

_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class LayerReport:
    """What the dry run learned about the model."""

    target: str  # dotted name of the layer to hook
    cam_linear: str | None  # dotted name of the GAP->linear classifier, None if there is none
    pooled: bool  # some tensor after the target is its global average (accepts any input size)
    num_classes: int


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a wrong name lists the closest real names."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.4)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ModelError(f"no layer named {name!r} in {type(model).__name__}{hint}")


@torch.no_grad()
def inspect_model(model: nn.Module, example: torch.Tensor, layer: str | None = None) -> LayerReport:
    """Run ``model`` once on ``example`` and report the target layer and the CAM head."""
    if layer is not None:
        resolve_module(model, layer)
    names = {m: n for n, m in model.named_modules()}
    # (name, output shape) of every spatial output in completion order, and small
    # vectors (inputs/outputs of modules) that could be a pooled copy of the target.
    spatial: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    small: list[tuple[int, str, torch.Tensor, torch.Tensor | None]] = []
    handles = []

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        name = names[module]
        if not name:
            return
        inp = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if isinstance(output, torch.Tensor):
            if output.dim() == 4 and output.shape[2] * output.shape[3] > 1 and not isinstance(module, _POOLS):
                # The spatial mean now, not later: an in-place op downstream (DenseNet's
                # F.relu(features, inplace=True)) would change ``output`` in place.
                spatial.append((name, output, output.float().mean(dim=(2, 3))))
            elif output.dim() in (2, 4) and output[0].numel() <= 1 << 16:
                small.append((len(spatial), name, output, inp))

    for module in model.modules():
        handles.append(module.register_forward_hook(hook))
    try:
        logits = model(example)
    finally:
        for h in handles:
            h.remove()
    if isinstance(logits, (tuple, list)):  # e.g. aux outputs in train mode
        logits = logits[0]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ModelError(f"{type(model).__name__} does not return (N, classes) logits; camvideo explains classifiers")
    if not spatial:
        raise ModelError(f"{type(model).__name__} has no layer with a spatial output to explain")

    if layer is None:
        index = len(spatial) - 1
        layer = spatial[index][0]
    else:
        found = [i for i, (n, _, _) in enumerate(spatial) if n == layer]
        if not found:
            raise ModelError(f"layer {layer!r} does not output a spatial map (N, C, H, W); pick an earlier layer")
        index = found[-1]
    gap = spatial[index][2]

    def is_gap(t: torch.Tensor | None, gap: torch.Tensor = gap) -> bool:
        if t is None:
            return False
        t = t.float().reshape(t.shape[0], -1)
        return t.shape == gap.shape and torch.allclose(t, gap, rtol=1e-4, atol=1e-5 * float(gap.abs().max() + 1))

    # ``pooled`` is a property of the network, not of the layer asked for: the target's or
    # the last spatial map's global average is used. Also as modified in place after the
    # hook ran (DenseNet): any input size still works, though CAM would not add up.
    means = [g for i in {index, len(spatial) - 1} for g in (spatial[i][2], spatial[i][1].float().mean(dim=(2, 3)))]
    after = [entry for entry in small if entry[0] > index]
    pooled = any(is_gap(t, g) for _, _, out, inp in after for t in (out, inp) for g in means)
    cam_linear = None
    for _, name, out, inp in after:
        module = dict(model.named_modules())[name]
        if isinstance(module, nn.Linear) and out is logits and is_gap(inp):
            cam_linear = name
    return LayerReport(target=layer, cam_linear=cam_linear, pooled=pooled, num_classes=int(logits.shape[1]))
