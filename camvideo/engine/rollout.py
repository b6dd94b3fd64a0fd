"""Attention rollout (Abnar & Zuidema 2020, https://arxiv.org/abs/2005.00928), for ViTs.

Gradient-free and class-agnostic. With ``Â_l`` the attention probabilities of block l
averaged over its heads (N, T, T), the residual connection is accounted for by adding
the identity and renormalising the rows:

    Ã_l = (Â_l + I) / rowsum(Â_l + I),      R = Ã_L · Ã_(L-1) · … · Ã_1,

and the map is the class token's row of R over the patch tokens, ``R[0, P:]`` laid on the
patch grid. P (the prefix tokens: class, distillation, register tokens) and whether the
head reads a class token are the model's (:func:`sequence_prefix`), not the target
layer's: an attention-pooled head's target sees the patches only. Where the head reads
no class token (none, or an average/attention pool over the patches), the map is the
mean of the patch tokens' rows, ``mean_i R[i, P:]`` over i >= P. :class:`AttentionRecorder` captures every block's attention with hooks,
during the calls it is asked to record only:

* torchvision's ``nn.MultiheadAttention`` is called by ``EncoderBlock`` with
  ``need_weights=False``; a forward pre-hook turns ``need_weights`` on (head-averaged)
  and a forward hook takes the weights it then returns;
* timm's ``Attention`` computes explicit probabilities only with ``fused_attn`` off: it
  is turned off while recording, and ``attn_drop`` (identity in eval mode), which
  receives the softmax output (N, heads, T, T), is hooked.

Windowed attention (Swin, MaxViT) does not attend over the whole grid: rollout is
refused there (the method lives in :mod:`camvideo.engine.methods`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import ModelError


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Global self-attention modules in definition order: torchvision's MultiheadAttention,
    timm-style attention (a ``fused_attn`` switch and an ``attn_drop`` module)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            found.append((name, module))
        elif hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module):
            found.append((name, module))
    return found


class AttentionRecorder:
    """Hooks on every attention module of ``model``; records head-averaged probabilities
    (N, T, T), in forward order, inside :meth:`recording` only. ``close()`` removes them."""

    def __init__(self, model: nn.Module) -> None:
        modules = [m for _, m in attention_modules(model)]
        if not modules:
            raise ModelError(f"{type(model).__name__} has no global self-attention to roll out")
        self._on = False
        self._seen: list[torch.Tensor] = []
        self._timm = [m for m in modules if not isinstance(m, nn.MultiheadAttention)]
        self._handles = []
        for module in modules:
            if isinstance(module, nn.MultiheadAttention):
                self._handles.append(module.register_forward_pre_hook(self._want_weights, with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._take_weights))
            else:
                self._handles.append(module.attn_drop.register_forward_hook(self._take_probabilities))

    def _want_weights(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if not self._on:
            return None
        return args, {**kwargs, "need_weights": True, "average_attn_weights": True}

    def _take_weights(self, module: nn.Module, inputs: tuple, output: object) -> None:
        if self._on and isinstance(output, tuple) and isinstance(output[1], torch.Tensor):
            self._seen.append(output[1].detach().float())

    def _take_probabilities(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if self._on:
            self._seen.append(output.detach().float().mean(dim=1))

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[torch.Tensor]]:
        """Record during the block; yields the list the attentions are appended to."""
        saved = [m.fused_attn for m in self._timm]
        for m in self._timm:
            m.fused_attn = False
        self._seen, self._on = [], True
        try:
            yield self._seen
        finally:
            self._on = False
            for m, value in zip(self._timm, saved):
                m.fused_attn = value

    @property
    def hooked(self) -> bool:
        return bool(self._handles)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._seen = []


def rollout(attentions: list[torch.Tensor]) -> torch.Tensor:
    """R = Ã_L ⋯ Ã_1 (N, T, T) for head-averaged attentions (N, T, T) in forward order."""
    if not attentions:
        raise ModelError("no attention was captured; rollout needs a ViT-style model")
    tokens = attentions[0].shape[-1]
    if any(a.dim() != 3 or a.shape[-2:] != (tokens, tokens) for a in attentions):
        raise ModelError("rollout: the blocks attend over different token sets (windowed attention?); use gradcam")
    eye = torch.eye(tokens, device=attentions[0].device, dtype=attentions[0].dtype)
    result = None
    for a in attentions:
        a = a + eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def sequence_prefix(model: nn.Module) -> tuple[int, bool] | None:
    """(P prefix tokens of the attention sequence, does the head read the class token at 0),
    from the model: torchvision's ViT (a class token, read by the head), timm's
    ``num_prefix_tokens`` with ``cls_token`` and ``global_pool == "token"``; None if unknown."""
    if isinstance(getattr(model, "class_token", None), nn.Parameter) and hasattr(model, "encoder"):
        return 1, True  # torchvision VisionTransformer
    prefix = getattr(model, "num_prefix_tokens", None)
    if isinstance(prefix, int):
        has_class = getattr(model, "cls_token", None) is not None and prefix > 0
        return prefix, has_class and getattr(model, "global_pool", "token") == "token"
    return None


def rollout_rows(R: torch.Tensor, prefix: int, class_token: bool) -> torch.Tensor:
    """(N, T - P) over the patch tokens: the class token's row, else the patch rows' mean."""
    return R[:, 0, prefix:] if class_token else R[:, prefix:, prefix:].mean(dim=1)
