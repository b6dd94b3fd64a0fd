"""The gradient methods: Grad-CAM, HiResCAM, Grad-CAM++ and LayerCAM.

Each needs g = ∂y_c/∂A. Two ways to get it:

* **forward-only (pooled head)**: where the target layer reaches the logits only through
  a global average pool and the head (the dry run's GAP check: ``report.cam_linear``,
  maybe after the LayerNorm ``report.cam_norm``), y = head(p) with p = (1/(h·w)) Σ_xy A(x, y),
  so g(x, y) = (1/(h·w)) ∂y_c/∂p at every position. ∂y_c/∂p is taken through the head
  alone, never through the network: the linear layer's row W_c, or autograd through
  p → LayerNorm → linear. So the method costs a forward pass plus a (K × C) product, runs
  in inference mode and on the compiled backends. With g the same at every position each
  formula has a closed form in the per-channel gradient (``pooled_formula``);
* **backward through the network** (class-token ViTs, a layer before the last, heads
  that are not GAP → linear): one forward, one backward per target down to A only, on torch.

Both paths give the same maps (tested against each other and against a float64 autograd
reference).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .backends import Backend
from .layers import LayerReport, resolve_module
from .method_base import CAMMethod, Selector


class PooledHead:
    """p (N, K) → logits (N, C): the head after the global average pool, in float32."""

    def __init__(self, model: nn.Module, report: LayerReport) -> None:
        assert report.cam_linear is not None
        self.linear: nn.Linear = resolve_module(model, report.cam_linear)
        self.norm: nn.LayerNorm | None = resolve_module(model, report.cam_norm) if report.cam_norm else None

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            norm = self.norm
            weight = norm.weight.detach().float() if norm.weight is not None else None
            bias = norm.bias.detach().float() if norm.bias is not None else None
            p = F.layer_norm(p, norm.normalized_shape, weight, bias, norm.eps)
        bias = self.linear.bias.detach().float() if self.linear.bias is not None else None
        return F.linear(p, self.linear.weight.detach().float(), bias)

    def gradients(self, p: torch.Tensor, classes: torch.Tensor) -> list[torch.Tensor]:
        """∂y_c/∂p (N, K) for each target column of ``classes`` (N, T)."""
        if self.norm is None:  # y = W p + b: the gradient is the class's row of W
            weight = self.linear.weight.detach().float()
            return [weight[classes[:, t]] for t in range(classes.shape[1])]
        with torch.inference_mode(False), torch.enable_grad():
            leaf = p.detach().clone().requires_grad_()  # a normal tensor, also from inference mode
            logits = self(leaf)
            chosen = classes.clone()
            grads = []
            for t in range(chosen.shape[1]):
                score = logits.gather(1, chosen[:, t : t + 1]).sum()  # frames are independent
                (g,) = torch.autograd.grad(score, leaf, retain_graph=t < chosen.shape[1] - 1)
                grads.append(g.detach())
        return grads


class GradientMethod(CAMMethod):
    """Methods that need g = ∂y_c/∂A; subclasses give ``formula(A, g)``.

    ``shortcut=False`` forces the backward pass through the network even on a pooled head
    (the benchmark compares the two; the tests check they agree)."""

    uses_gradients = True

    def __init__(
        self,
        model: nn.Module,
        report: LayerReport,
        runner: Callable[..., object] | None = None,
        backend: Backend | None = None,
        shortcut: bool = True,
    ) -> None:
        self.head = PooledHead(model, report) if shortcut and report.cam_linear is not None else None
        super().__init__(model, report, runner, backend)

    @property
    def forward_only(self) -> bool:
        return self.head is not None

    @property
    def path(self) -> str:
        return "forward-only (pooled head)" if self.head is not None else "backward through the network"

    def __call__(self, x: torch.Tensor, select: Selector) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.head is None:
            return self._backward(x, select)
        with torch.inference_mode():
            logits = self._forward(x)
            A = self._take_activation(x).float()
        classes = select(logits)
        with torch.inference_mode():
            p = A.mean(dim=(2, 3))
        grads = self.head.gradients(p, classes)
        with torch.inference_mode():
            scale = 1.0 / (A.shape[2] * A.shape[3])
            maps = [self.pooled_formula(A, g * scale) for g in grads]
        return torch.stack(maps, 1), logits, classes

    def _backward(self, x: torch.Tensor, select: Selector) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.inference_mode(False), torch.enable_grad(), frozen(self.model):
            if x.is_inference():
                x = x.clone()
            logits = self._forward(x)
            leaf = self._take_output()  # the hooked output itself; tokens are laid on the grid below
            classes = select(logits.detach())
            A = self._to_map(leaf.detach(), x).float()
            maps = []
            for t in range(classes.shape[1]):
                score = logits.gather(1, classes[:, t : t + 1]).sum()  # samples are independent in eval mode
                (g,) = torch.autograd.grad(score, leaf, retain_graph=t < classes.shape[1] - 1)
                maps.append(self.formula(A, self._to_map(g, x).float()))
        return torch.stack(maps, 1), logits.detach(), classes

    def formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pooled_formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The formula for a gradient ``g`` (N, K) that is the same at every position."""
        return self.formula(A, g[:, :, None, None].expand_as(A))


class GradCAM(GradientMethod):
    """Grad-CAM (Selvaraju et al. 2017).

    α_k = (1/Z) Σ_xy ∂y_c/∂A_k(x, y);  M = ReLU(Σ_k α_k A_k).
    """

    name = "gradcam"

    def formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.einsum("nk,nkhw->nhw", g.mean(dim=(2, 3)), A))

    def pooled_formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.einsum("nk,nkhw->nhw", g, A))  # α = g


class HiResCAM(GradientMethod):
    """HiResCAM: element-wise gradient times activation, summed over channels.

    M = ReLU(Σ_k g_k ⊙ A_k)  (the variant of seed 002; Draelos & Carin 2020).
    """

    name = "hirescam"

    def formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.relu((g * A).sum(1))

    def pooled_formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.einsum("nk,nkhw->nhw", g, A))  # = Grad-CAM's map here


class GradCAMPlusPlus(GradientMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018), closed form with first-order gradients.

    a_k(x, y) = g² / (2 g² + Σ_ab A_k(a, b) g³)  (0 where the denominator is 0);
    w_k = Σ_xy a_k(x, y) ReLU(g_k(x, y));  M = ReLU(Σ_k w_k A_k).
    """

    name = "gradcam++"

    def formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g2 = g * g
        denom = 2 * g2 + A.sum(dim=(2, 3), keepdim=True) * g2 * g
        alpha = torch.where(
            denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g2)
        )
        w = (alpha * F.relu(g)).sum(dim=(2, 3))
        return F.relu(torch.einsum("nk,nkhw->nhw", w, A))

    def pooled_formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # a_k is the same at every position: w_k = h·w · a_k · ReLU(g_k)
        g2 = g * g
        denom = 2 * g2 + A.sum(dim=(2, 3)) * g2 * g
        alpha = torch.where(
            denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g2)
        )
        w = alpha * F.relu(g) * (A.shape[2] * A.shape[3])
        return F.relu(torch.einsum("nk,nkhw->nhw", w, A))


class LayerCAM(GradientMethod):
    """LayerCAM (Jiang et al. 2021): M = ReLU(Σ_k ReLU(g_k) ⊙ A_k)."""

    name = "layercam"

    def formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.relu((F.relu(g) * A).sum(1))

    def pooled_formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.einsum("nk,nkhw->nhw", F.relu(g), A))


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on the parameters for one call, then restore it.

    The backward then stops at the hooked activation: no graph is built through the
    layers below it, and no parameter ever gets a ``.grad``.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
