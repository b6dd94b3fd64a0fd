"""The CAM formulas, batched and on the model's device.

Notation: ``A`` is the hooked activation (N, K, h, w) with channels k, ``y_c`` the logit
of class c (before softmax), ``g = ∂y_c/∂A``. Every map is computed in float32 whatever
the model's precision. A method returns raw maps (N, T, h, w) for T targets per frame;
normalisation is the renderer's job.

:class:`CAMMethod` (:mod:`camvideo.engine.method_base`) owns the hook lifecycle
(registered once, removed on ``close``, a context manager) and the forward pass (torch or
a compiled backend); subclasses add only their formula. The gradient methods are in
:mod:`camvideo.engine.gradients`: forward-only on pooled heads, a backward pass elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ..options import canonical_method
from .backends import Backend
from .gradients import GradCAM, GradCAMPlusPlus, GradientMethod, HiResCAM, LayerCAM
from .layers import LayerReport, resolve_module
from .method_base import CAMMethod, Selector
from .rollout import AttentionRecorder, attention_modules, rollout, rollout_rows, sequence_prefix

__all__ = [
    "CAM", "METHODS", "AttentionRollout", "CAMMethod", "EigenCAM", "GradCAM", "GradCAMPlusPlus", "GradientMethod",
    "HiResCAM", "LayerCAM", "ScoreCAM", "Selector", "make_method", "method_name",
]  # fmt: skip


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

    def __init__(
        self,
        model: nn.Module,
        report: LayerReport,
        runner: Callable[..., object] | None = None,
        backend: Backend | None = None,
    ) -> None:
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
        super().__init__(model, report, runner, backend)
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


class ScoreCAM(CAMMethod):
    """Score-CAM (Wang et al. 2020), batched masked forwards.

    H_k = minmax(upsample(A_k)) to the input size, s_k = softmax(f(x ⊙ H_k))_c,
    M = ReLU(Σ_k s_k A_k). K masked forwards per frame, ``chunk`` at a time; the masks
    are built chunk by chunk too (``chunk`` input-sized masks at once, never N·K: for
    Lite0 at 224x398 all of them would be 456 MB a frame).
    """

    name = "scorecam"

    def __init__(
        self,
        model: nn.Module,
        report: LayerReport,
        runner: Callable[..., object] | None = None,
        backend: Backend | None = None,
        chunk: int = 64,
    ) -> None:
        super().__init__(model, report, runner, backend)
        self.chunk = max(1, int(chunk))

    def compute(self, A: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n, k = A.shape[:2]
        weights = torch.empty(n, classes.shape[1], k, device=A.device)
        for i in range(n):  # the hook is idle here: masked forwards capture nothing
            for start in range(0, k, self.chunk):
                m = upsampled_masks(A[i, start : start + self.chunk], x.shape[-2:]).to(x.dtype)  # (c, 1, H, W)
                probs = torch.softmax(self._logits(x[i : i + 1] * m).float(), dim=1)
                weights[i, :, start : start + m.shape[0]] = probs[:, classes[i]].T
        return F.relu(torch.einsum("ntk,nkhw->nthw", weights, A))


def upsampled_masks(channels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Score-CAM's masks (c, 1, H, W) of ``channels`` (c, h, w): each upsampled to ``size``
    and min-max normalised to [0, 1] (all zero where a channel is constant)."""
    masks = F.interpolate(channels[:, None], size=tuple(size), mode="bilinear", align_corners=False)
    lo = masks.amin(dim=(2, 3), keepdim=True)
    span = masks.amax(dim=(2, 3), keepdim=True) - lo
    return torch.where(
        span > 0, (masks - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(masks)
    )


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

    def __init__(
        self,
        model: nn.Module,
        report: LayerReport,
        runner: Callable[..., object] | None = None,
        backend: Backend | None = None,
    ) -> None:
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

    @property
    def forward_only(self) -> bool:
        return False  # it records the attention inside the network: torch only

    @property
    def path(self) -> str:
        return "attention hooks"

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
    name: str,
    model: nn.Module,
    report: LayerReport,
    runner: Callable[..., object] | None = None,
    backend: Backend | None = None,
    **options: object,
) -> CAMMethod:
    """Instantiate a method by name (``cam``, ``gradcam``, ``hirescam``, ``gradcam++``, ...;
    spellings as :func:`camvideo.options.canonical_method` reads them). ``backend``: a
    compiled backend, used where the method needs no backward pass through the network.
    Options: ``chunk`` (Score-CAM), ``shortcut`` (gradient methods: False forces the
    backward pass)."""
    cls = METHODS.get(method_name(name))
    if cls is ScoreCAM:
        return ScoreCAM(model, report, runner, backend, chunk=int(options.get("chunk", 64)))
    if issubclass(cls, GradientMethod):
        return cls(model, report, runner, backend, shortcut=bool(options.get("shortcut", True)))
    return cls(model, report, runner, backend)
