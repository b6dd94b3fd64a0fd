"""The network exported to ONNX with the target layer's output as a second output.

Traced (``torch.onnx.export(..., dynamo=False)``) at one input size (h, w), the size a
video needs; the batch axis stays dynamic. The hook that takes the target's output
returns a clone of it, so an in-place op downstream (``ReLU(inplace=True)``, a residual
``+=``) cannot turn the exported second output into a later value.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..layers import resolve_module

#: Bumped when the exported graph changes (outputs, opset): part of every cache key.
EXPORT_FORMAT = "1"
OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAMES = ("target", "logits")


class TargetAndLogits(nn.Module):
    """``model`` returning ``(output of layer target, logits)``."""

    def __init__(self, model: nn.Module, target: str) -> None:
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = resolve_module(self.model, self.target).register_forward_hook(
            lambda module, inputs, output: captured.append(output.clone())
        )
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if not captured:
            raise RuntimeError(f"layer {self.target!r} did not run in the forward pass")
        return captured[0], logits


def export_onnx(model: nn.Module, target: str, size: tuple[int, int], path: Path) -> None:
    """Write ``model`` (float32, CPU, eval) as ONNX to ``path``, input (N, 3, h, w)."""
    wrapper = TargetAndLogits(model, target)
    modes = {m: m.training for m in model.modules()}
    example = torch.zeros(1, 3, *size)
    try:
        wrapper.eval()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic: the size is fixed
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            )
    finally:
        # the exporter restores the wrapper's mode, which would put the model in training mode
        for module, training in modes.items():
            module.training = training
