"""The base class of the CAM methods: the hook lifecycle and the forward pass.

Notation (also in :mod:`camvideo.engine.methods`): ``A`` is the hooked activation
(N, K, h, w), ``y_c`` the logit of class c. A method returns raw float32 maps
(N, T, h, w) for T targets per frame.

The forward runs on torch (the hook on the target layer) or, for the methods that need
no backward pass through the network, on a compiled backend
(:mod:`camvideo.engine.backends`) that returns the target's output itself. If that
backend cannot be had (export or compilation failed: one line said so), the method goes
on with torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from ..errors import ModelError
from .backends import Backend, BackendUnavailable
from .layers import LayerReport, resolve_module

Selector = Callable[[torch.Tensor], torch.Tensor]  # logits (N, C) -> class indices (N, T)


class CAMMethod:
    """Base class: a forward hook on the target layer and one explain call.

    ``__call__(x, select)`` runs the model once on the preprocessed batch ``x``, lets
    ``select`` pick the target classes from the logits, and returns
    ``(maps (N, T, h, w) float32, logits (N, C), classes (N, T))``. ``backend``: a compiled
    backend to run the forward passes on, for methods whose ``forward_only`` is true.
    """

    name: ClassVar[str]
    uses_gradients: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        report: LayerReport,
        runner: Callable[..., object] | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.model = model
        self.report = report
        # what the forward passes call: the model itself, or a torch.compile'd wrapper of it
        self.runner = runner if runner is not None else model
        self.backend = backend if self.forward_only else None
        self._activation: torch.Tensor | None = None
        self._capture = False  # only during our own forward: the model stays usable (and trainable) otherwise
        self._handle = resolve_module(model, report.target).register_forward_hook(self._hook)

    @property
    def forward_only(self) -> bool:
        """Does this method need no backward pass through the network (so it can run compiled)?"""
        return True

    @property
    def backend_name(self) -> str:
        return self.backend.name if self.backend is not None else "torch"

    def describe(self) -> str:
        """Which path this method takes: ``gradcam: forward-only (pooled head), openvino``."""
        return f"{self.name}: {self.path}, {self.backend_name}"

    @property
    def path(self) -> str:
        return "forward only"

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not self._capture:
            return None
        if self.uses_gradients and torch.is_grad_enabled():
            # A leaf of our own: gradients stop here (never reach the parameters), and the
            # clone sent downstream keeps in-place ops (DenseNet's relu_) off our leaf.
            leaf = output.detach().requires_grad_()
            self._activation = leaf
            return leaf.clone()
        # A copy, not a reference: an in-place op downstream (ReLU(inplace=True), DenseNet's
        # F.relu_, a residual +=) would otherwise change the activation before we use it.
        self._activation = output.detach().clone()
        return None

    @property
    def hooked(self) -> bool:
        return self._handle is not None

    def close(self) -> None:
        """Remove the hook; idempotent."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._activation = None

    def __enter__(self) -> CAMMethod:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take_output(self) -> torch.Tensor:
        """The hooked layer's output as captured (tokens, channels-last or a map)."""
        activation, self._activation = self._activation, None
        if activation is None:
            raise ModelError(f"layer {self.report.target!r} did not run in the forward pass")
        return activation

    def _to_map(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) from the captured output: a ViT's tokens or a Swin's channels-last
        map laid on the patch grid of the input ``x`` (``report.layout``)."""
        return self.report.layout.to_map(output, (int(x.shape[-2]), int(x.shape[-1])))

    def _take_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The captured activation A as an (N, K, h, w) map."""
        return self._to_map(self._take_output(), x)

    def _compiled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(target output, logits) from the compiled backend, on ``x``'s device; None
        (from now on) when it cannot run: it has said so in one line."""
        if self.backend is None:
            return None
        try:
            output, logits = self.backend.run(x)
        except BackendUnavailable:
            self.backend = None
            return None
        return output.to(x.device), logits.to(x.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits, with the target layer's activation captured."""
        compiled = self._compiled(x)
        if compiled is not None:
            self._activation, logits = compiled
            return logits
        self._capture = True
        try:
            return logits_of(self.runner(x))
        finally:
            self._capture = False

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits alone (Score-CAM's masked forwards: the hook is idle)."""
        compiled = self._compiled(x)
        return compiled[1] if compiled is not None else logits_of(self.runner(x))

    def __call__(self, x: torch.Tensor, select: Selector) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            logits = self._forward(x)
            activation = self._take_activation(x).float()
        # The selector runs outside inference mode: it may keep state across calls (the
        # smoother's class EMA), which must not become an inference tensor.
        classes = select(logits)
        with torch.inference_mode():
            maps = self.compute(activation, logits, classes, x)
        return maps, logits, classes

    def compute(self, A: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def logits_of(output: object) -> torch.Tensor:
    """The logits of a model's output (the first of a tuple: aux outputs)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output  # type: ignore[return-value]
