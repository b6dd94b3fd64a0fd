"""The CAM formulas, batched and on the model's device.

Notation: ``A`` is the hooked activation (N, K, h, w) with channels k, ``y_c`` the logit
of class c (before softmax), ``g = ∂y_c/∂A``. Every map is computed in float32 whatever
the model's precision. A method returns raw maps (N, T, h, w) for T targets per frame;
normalisation is the renderer's job.

:class:`CAMMethod` owns the hook lifecycle (registered once, removed on ``close``, a
context manager); subclasses add only their formula.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ..options import canonical_method
from .layers import LayerReport, resolve_module
from .rollout import AttentionRecorder, attention_modules, rollout, rollout_rows, sequence_prefix

Selector = Callable[[torch.Tensor], torch.Tensor]  # logits (N, C) -> class indices (N, T)


class CAMMethod:
    """Base class: a forward hook on the target layer and one explain call.

    ``__call__(x, select)`` runs the model once on the preprocessed batch ``x``, lets
    ``select`` pick the target classes from the logits, and returns
    ``(maps (N, T, h, w) float32, logits (N, C), classes (N, T))``.
    """

    name: ClassVar[str]
    uses_gradients: ClassVar[bool] = False

    def __init__(self, model: nn.Module, report: LayerReport, runner: Callable[..., object] | None = None) -> None:
        self.model = model
        self.report = report
        # what the forward passes call: the model itself, or a torch.compile'd wrapper of it
        self.runner = runner if runner is not None else model
        self._activation: torch.Tensor | None = None
        self._capture = False  # only during our own forward: the model stays usable (and trainable) otherwise
        self._handle = resolve_module(model, report.target).register_forward_hook(self._hook)

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

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits, with the target layer's activation captured."""
        self._capture = True
        try:
            return _logits(self.runner(x))
        finally:
            self._capture = False

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


class CAM(CAMMethod):
    """Class Activation Mapping (Zhou et al. 2016).

    M_c(x, y) = Σ_k w_k^c f_k(x, y), with w^c the row of the linear layer that follows
    global average pooling. No ReLU and no bias: the spatial mean of M_c is exactly
    y_c - b_c. No backward pass.

    A LayerNorm between the pooling and the linear layer (ConvNeXt's head, timm's
    ``fc_norm``) is folded in exactly: with p the pooled vector, μ and σ its mean and
    standard deviation over the channels (one pair per frame), γ and β the norm's gain
    and bias, M_c(x, y) = Σ_k w_k^c γ_k (f_k(x, y) − μ) / σ, whose spatial mean is
    y_c − b_c − Σ_k w_k^c β_k.
    """

    name = "cam"

    def __init__(self, model: nn.Module, report: LayerReport, runner: Callable[..., object] | None = None) -> None:
        if report.cam_linear is None:
            if report.layout.kind == "tokens" and not report.pooled:
                raise ModelError(
                    f"method 'cam' is not exact on {type(model).__name__}: its head reads the class token, not an "
                    "average of the patch tokens; use method 'gradcam' (or 'rollout')"
                )
            raise ModelError(
                f"method 'cam' needs global average pooling then one linear layer (maybe after a LayerNorm) after "
                f"{report.target!r}, and {type(model).__name__} has none there; use method 'gradcam' (its generalisation)"
            )
        super().__init__(model, report, runner)
        self.weight = resolve_module(model, report.cam_linear).weight
        self.norm = resolve_module(model, report.cam_norm) if report.cam_norm else None

    def compute(self, A: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.detach().float()
        if self.norm is None:
            return torch.einsum("ntk,nkhw->nthw", w[classes], A)
        p = A.mean(dim=(2, 3))  # the pooled vector the norm saw (N, K)
        mu = p.mean(dim=1)
        sigma = (p.var(dim=1, unbiased=False) + self.norm.eps).sqrt()
        if self.norm.weight is not None:
            w = w * self.norm.weight.detach().float()
        centred = (A - mu.view(-1, 1, 1, 1)) / sigma.view(-1, 1, 1, 1)
        return torch.einsum("ntk,nkhw->nthw", w[classes], centred)


class _GradientMethod(CAMMethod):
    """Methods that need g = ∂y_c/∂A: one forward, one backward per target, down to A only."""

    uses_gradients = True

    def __call__(self, x: torch.Tensor, select: Selector) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.inference_mode(False), torch.enable_grad(), _frozen(self.model):
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


class GradCAM(_GradientMethod):
    """Grad-CAM (Selvaraju et al. 2017).

    α_k = (1/Z) Σ_xy ∂y_c/∂A_k(x, y);  M = ReLU(Σ_k α_k A_k).
    """

    name = "gradcam"

    def formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.einsum("nk,nkhw->nhw", g.mean(dim=(2, 3)), A))


class HiResCAM(_GradientMethod):
    """HiResCAM: element-wise gradient times activation, summed over channels.

    M = ReLU(Σ_k g_k ⊙ A_k)  (the variant of seed 002; Draelos & Carin 2020).
    """

    name = "hirescam"

    def formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.relu((g * A).sum(1))


class GradCAMPlusPlus(_GradientMethod):
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


class LayerCAM(_GradientMethod):
    """LayerCAM (Jiang et al. 2021): M = ReLU(Σ_k ReLU(g_k) ⊙ A_k)."""

    name = "layercam"

    def formula(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.relu((F.relu(g) * A).sum(1))


class ScoreCAM(CAMMethod):
    """Score-CAM (Wang et al. 2020), batched masked forwards.

    H_k = minmax(upsample(A_k)) to the input size, s_k = softmax(f(x ⊙ H_k))_c,
    M = ReLU(Σ_k s_k A_k). K masked forwards per frame, ``chunk`` at a time.
    """

    name = "scorecam"

    def __init__(
        self, model: nn.Module, report: LayerReport, runner: Callable[..., object] | None = None, chunk: int = 64
    ) -> None:
        super().__init__(model, report, runner)
        self.chunk = max(1, int(chunk))

    def compute(self, A: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n, k = A.shape[:2]
        masks = F.interpolate(A, size=x.shape[-2:], mode="bilinear", align_corners=False)
        lo = masks.amin(dim=(2, 3), keepdim=True)
        span = masks.amax(dim=(2, 3), keepdim=True) - lo
        masks = torch.where(
            span > 0, (masks - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(masks)
        )
        weights = torch.empty(n, classes.shape[1], k, device=A.device)
        for i in range(n):  # the hook is idle here: masked forwards capture nothing
            for start in range(0, k, self.chunk):
                m = masks[i, start : start + self.chunk, None].to(x.dtype)  # (c, 1, H, W)
                probs = torch.softmax(_logits(self.runner(x[i : i + 1] * m)).float(), dim=1)
                weights[i, :, start : start + m.shape[0]] = probs[:, classes[i]].T
        return F.relu(torch.einsum("ntk,nkhw->nthw", weights, A))


class EigenCAM(CAMMethod):
    """Eigen-CAM (Muhammad & Yeasin 2020): the first principal component of A.

    With A_n reshaped to (h·w, K) and centred per channel, M = (A_n - mean) v_1 where v_1
    is the first right singular vector (torch SVD); the sign is fixed so that M
    correlates positively with the channel mean of A. Class-agnostic: every target of a
    frame gets the same map. Not rectified (the raw projection).
    """

    name = "eigencam"

    def compute(self, A: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n, k, h, w = A.shape
        flat = A.reshape(n, k, h * w).transpose(1, 2)  # (N, hw, K)
        centred = flat - flat.mean(dim=1, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        proj = (centred @ vh[:, 0, :, None]).squeeze(-1)  # (N, hw)
        reference = A.mean(dim=1).reshape(n, h * w)
        reference = reference - reference.mean(dim=1, keepdim=True)
        sign = torch.sign((proj * reference).sum(dim=1, keepdim=True))
        proj = proj * torch.where(sign == 0, torch.ones_like(sign), sign)
        return proj.reshape(n, 1, h, w).expand(n, classes.shape[1], h, w).contiguous()


class AttentionRollout(CAMMethod):
    """Attention rollout (Abnar & Zuidema 2020, https://arxiv.org/abs/2005.00928), for ViTs.

    Ã_l = (Â_l + I) / rowsum(Â_l + I) with Â_l block l's attention averaged over heads;
    R = Ã_L ⋯ Ã_1; the map is the class token's row R[0, P:] over the patch tokens, on
    their grid; where the head reads no class token (none, or a pool over the patches),
    the patch rows' mean, mean_{i>=P} R[i, P:]. P comes from the model (timm's
    ``num_prefix_tokens``), else from the target layer's layout. Gradient-free and class-agnostic (every target gets the same map); see
    :mod:`camvideo.engine.rollout` for how the attention is captured.
    """

    name = "rollout"

    def __init__(self, model: nn.Module, report: LayerReport, runner: Callable[..., object] | None = None) -> None:
        if report.layout.kind != "tokens" or not attention_modules(model):
            raise ModelError(
                f"method 'rollout' needs a ViT-style model (patch tokens and global self-attention); "
                f"{type(model).__name__} has none at {report.target!r}; use method 'gradcam'"
            )
        super().__init__(model, report, runner)
        found = sequence_prefix(model)
        prefix = report.layout.prefix
        self.prefix, self.class_token = found if found is not None else (prefix, prefix > 0)
        self.recorder = AttentionRecorder(model)

    def close(self) -> None:
        self.recorder.close()
        super().close()

    def __call__(self, x: torch.Tensor, select: Selector) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), self.recorder.recording() as attentions:
            logits = self._forward(x)
            self._take_output()  # not needed: the attentions are
        classes = select(logits)  # outside inference mode, as in the base class
        with torch.inference_mode():
            R = rollout(attentions)
            if R.shape[-1] <= self.prefix:
                raise ModelError(f"rollout: {R.shape[-1]} attended tokens but {self.prefix} prefix tokens; use gradcam")
            rows = rollout_rows(R, self.prefix, self.class_token)
            try:
                h, w = self.report.layout.grid(rows.shape[1], (int(x.shape[-2]), int(x.shape[-1])))
            except ModelError:
                raise ModelError(
                    f"rollout: the attention runs over {R.shape[-1]} tokens, which are not {self.prefix} prefix "
                    "tokens and a patch grid; use gradcam"
                ) from None
            maps = rows.reshape(-1, 1, h, w).expand(-1, classes.shape[1], h, w).contiguous()
        return maps, logits, classes


METHODS: dict[str, type[CAMMethod]] = {
    cls.name: cls for cls in (CAM, GradCAM, HiResCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, EigenCAM, AttentionRollout)
}


def method_name(name: str) -> str:
    """The canonical name of a method (``"Grad-CAM"`` → ``"gradcam"``); ModelError if unknown."""
    key = canonical_method(name) if isinstance(name, str) else None
    if key is None:
        raise ModelError(f"unknown method {name!r}; one of: {', '.join(METHODS)}")
    return key


def make_method(
    name: str, model: nn.Module, report: LayerReport, runner: Callable[..., object] | None = None, **options: object
) -> CAMMethod:
    """Instantiate a method by name (``cam``, ``gradcam``, ``hirescam``, ``gradcam++``, ...;
    spellings as :func:`camvideo.options.canonical_method` reads them)."""
    cls = METHODS.get(method_name(name))
    if cls is ScoreCAM:
        return ScoreCAM(model, report, runner, chunk=int(options.get("chunk", 64)))
    return cls(model, report, runner)


def _logits(output: object) -> torch.Tensor:
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output  # type: ignore[return-value]


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
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
