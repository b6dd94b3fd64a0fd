"""Finding the layer to explain, by one dry run of the model.

Every module output that lies on the image grid is a candidate: a CNN's (N, C, H, W)
map, a Swin-style channels-last (N, H, W, C) map, or a ViT-style token sequence
(N, P + H·W, C) (:mod:`camvideo.engine.tokens` finds the layout; the capture reshapes
it to (N, C, H, W)). The layer rule:

* the last candidate, when the logits read all of its grid positions (CNNs, and Swin,
  ConvNeXt, MaxViT and pooled-token ViTs, where the head averages tokens): for Swin,
  the last stage's normalised output before pooling. A ``Permute`` module is only a
  view of the layer before it and is skipped;
* when the head reads prefix tokens only (a ViT's class token), no gradient reaches the
  patch tokens of the last block's output: the layer is then the last normalisation
  layer whose patch tokens do get a gradient from the logit, which is the last block's
  first norm (``encoder.layers[-1].ln_1`` in torchvision, ``blocks[-1].norm1`` in timm),
  the input of the last attention, where the class token reads the patches. This is
  checked with one backward pass in the dry run.

The same dry run tells whether the model has a CAM head: a ``nn.Linear`` producing the
logits whose input is exactly the spatial mean of that layer's map (global average
pooling, maybe through dropout/flatten), or a LayerNorm of that mean (ConvNeXt), which
CAM folds in exactly. That check is numerical, so functional activations between the
layer and the pooling (DenseNet's ``F.relu``) are caught instead of silently giving
wrong maps.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ModelError
from .rollout import attention_modules
from .tokens import TokenLayout, classify_output, map_side

_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class LayerReport:
    """What the dry run learned about the model."""

    target: str  # dotted name of the layer to hook
    cam_linear: str | None  # dotted name of the GAP->linear classifier, None if there is none
    pooled: bool  # some tensor after the target is its global average (accepts any input size)
    num_classes: int
    layout: TokenLayout = field(default_factory=TokenLayout)  # how the capture turns the output into a map
    cam_norm: str | None = None  # a LayerNorm between the pooling and ``cam_linear``, folded into CAM
    rule: str = "the last layer with a spatial output"  # why this layer, for users
    any_size: bool = False  # pooled (or interpolating its position embeddings) and runs on a 16:9 input

    def describe(self) -> str:
        """One line: the layer, why, and what the capture does to its output."""
        return f"{self.target} ({self.rule}; {self.layout.describe()})"


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a wrong name lists the closest real names."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.4)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ModelError(f"no layer named {name!r} in {type(model).__name__}{hint}")


@dataclass
class _Candidate:
    name: str
    module: nn.Module
    layout: TokenLayout
    map: torch.Tensor  # (N, C, h, w) view of the output
    gap: torch.Tensor  # its spatial mean, taken when the output was produced


@torch.no_grad()
def inspect_model(model: nn.Module, example: torch.Tensor, layer: str | None = None) -> LayerReport:
    """Run ``model`` once on the square ``example`` and report the target layer and the CAM head."""
    if layer is not None:
        resolve_module(model, layer)
    names = {m: n for n, m in model.named_modules()}
    side = int(example.shape[-1])
    hw = (side, side)
    spatial: list[_Candidate] = []
    # small vectors (inputs/outputs of modules) that could be a pooled copy of the target
    small: list[tuple[int, str, torch.Tensor, torch.Tensor | None]] = []
    grid: list[tuple[int, int] | None] = [None]  # the latest map's (h, w): the patch grid of tokens after it
    tokens: list[int | None] = [None]  # the latest token sequence's length T
    # Modules inside an attention module (its softmax, attn_drop, q/k norms) output
    # attention internals such as the (N, heads, T, T) probabilities, never a feature map.
    inside_attention = tuple(f"{n}." for n, _ in attention_modules(model) if n)
    handles = []

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        name = names[module]
        if not name or not isinstance(output, torch.Tensor) or name.startswith(inside_attention):
            return
        inp = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        skip = isinstance(module, _POOLS)
        layout = None if skip else classify_output(output, side, grid[0], model, tokens[0])
        if layout is not None:
            if layout.kind != "tokens":
                grid[0] = map_side(output, layout)
            else:
                tokens[0] = int(output.shape[1])
            fmap = layout.to_map(output, hw)
            # The spatial mean now, not later: an in-place op downstream (DenseNet's
            # F.relu(features, inplace=True)) would change ``output`` in place.
            spatial.append(_Candidate(name, module, layout, fmap, fmap.float().mean(dim=(2, 3))))
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

    rule = "the layer asked for"
    if layer is None:
        choices = [i for i, c in enumerate(spatial) if type(c.module).__name__ != "Permute"] or [len(spatial) - 1]
        index = choices[-1]
        rule = "the last layer with a spatial output"
        if spatial[index].layout.kind == "tokens":
            head = next((n for _, n, out, inp in small if out is logits and inp is not None), None)
            index, rule = _token_layer(model, example, spatial, choices, head)
    else:
        found = [i for i, c in enumerate(spatial) if c.name == layer]
        if not found:
            raise ModelError(
                f"layer {layer!r} does not output a spatial map (N, C, H, W), a channels-last map (N, H, W, C) "
                "or patch tokens (N, P+H*W, C); pick another layer"
            )
        index = found[-1]
    target = spatial[index]
    gap = target.gap

    def is_gap(t: torch.Tensor | None, gap: torch.Tensor = gap) -> bool:
        if t is None:
            return False
        t = t.float().reshape(t.shape[0], -1)
        return t.shape == gap.shape and torch.allclose(t, gap, rtol=1e-4, atol=1e-5 * float(gap.abs().max() + 1))

    # ``pooled`` is a property of the network, not of the layer asked for: the target's or
    # the last spatial map's global average is used. Also as modified in place after the
    # hook ran (DenseNet): any input size still works, though CAM would not add up.
    last = spatial[-1]
    means = [target.gap, last.gap, target.map.float().mean(dim=(2, 3)), last.map.float().mean(dim=(2, 3))]
    after = [entry for entry in small if entry[0] > index]
    pooled = any(is_gap(t, g) for _, _, out, inp in after for t in (out, inp) for g in means)
    modules = dict(model.named_modules())
    cam_linear = cam_norm = None
    for _, name, out, inp in after:
        module = modules[name]
        if not (isinstance(module, nn.Linear) and out is logits and inp is not None):
            continue
        if is_gap(inp):
            cam_linear, cam_norm = name, None
            continue
        for _, norm_name, norm_out, norm_in in after:  # pooling -> LayerNorm -> linear (ConvNeXt)
            norm = modules[norm_name]
            if (
                isinstance(norm, nn.LayerNorm)
                and is_gap(norm_in)
                and _same(norm_out, inp)
                and _is_layer_norm(norm, gap, inp)
            ):
                cam_linear, cam_norm = name, norm_name
    # Frames keep their aspect ratio only where the model takes any size: pooled heads, and
    # ViTs that interpolate their position embeddings (timm's dynamic_img_size). Windowed
    # models (MaxViT) and torchvision's ViT need their trained size: one 16:9 probe tells.
    any_size = (pooled or target.layout.kind == "tokens") and _runs_at(model, example, (side, round(side * 16 / 9)))
    return LayerReport(
        target=target.name, cam_linear=cam_linear, pooled=pooled, num_classes=int(logits.shape[1]),
        layout=target.layout, cam_norm=cam_norm, rule=rule, any_size=any_size,
    )  # fmt: skip


def _runs_at(model: nn.Module, example: torch.Tensor, size: tuple[int, int]) -> bool:
    """Does the model give logits for an input of ``size``? (It raises where it cannot.)"""
    probe = torch.zeros(1, example.shape[1], *size, device=example.device, dtype=example.dtype)
    try:
        out = model(probe)
    except Exception:  # an assert, a reshape or a window partition that does not fit
        return False
    out = out[0] if isinstance(out, (tuple, list)) else out
    return isinstance(out, torch.Tensor) and out.dim() == 2


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.float().reshape(a.shape[0], -1), b.float().reshape(b.shape[0], -1)
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max() + 1))


def _is_layer_norm(norm: nn.LayerNorm, pooled: torch.Tensor, out: torch.Tensor) -> bool:
    """``out`` == γ (p − μ(p)) / σ(p) + β over the channels of the pooled vector p: what CAM folds in."""
    if tuple(norm.normalized_shape) != (pooled.shape[1],):
        return False
    p = pooled.double()
    mu = p.mean(dim=1, keepdim=True)
    sigma = (p.var(dim=1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    y = (p - mu) / sigma
    if norm.weight is not None:
        y = y * norm.weight.double()
    if norm.bias is not None:
        y = y + norm.bias.double()
    return _same(y, out.double())


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(module).__name__.lower()


def _token_layer(
    model: nn.Module, example: torch.Tensor, spatial: list[_Candidate], choices: list[int], head: str | None
) -> tuple[int, str]:
    """The token layer whose patch tokens the logits read: the last candidate if they get a
    gradient there, else the last normalisation layer whose patch tokens get one.

    The gradient is taken from a random projection of the classifier's input (``head``'s
    input), not from a logit: a freshly built torchvision ViT has an all-zero head, which
    would pass no gradient anywhere. Parameters are frozen for the pass and gradients are
    asked for the last block's candidates first, so the backward runs through that block only.
    """
    reached = _patch_gradients(model, example, spatial, choices[-_LAST_BLOCK:], head)
    if len(choices) > _LAST_BLOCK and not any(reached.values()):
        reached = _patch_gradients(model, example, spatial, choices, head)
    last = choices[-1]
    if reached.get(last):
        return last, "the last layer on the patch grid; the head reads all its tokens"
    for i in reversed(choices):
        if _is_norm(spatial[i].module) and reached.get(i):
            return (
                i,
                "the head reads the class token: the last norm whose patch tokens reach the logits (the last block's first norm)",
            )
    for i in reversed(choices):
        if reached.get(i):
            return i, "the head reads the class token: the last layer whose patch tokens reach the logits"
    raise ModelError(f"no layer of {type(model).__name__} passes a gradient from the logits to the patch tokens")


_LAST_BLOCK = 24  # candidates asked for first: more than one transformer block has


def _patch_gradients(
    model: nn.Module, example: torch.Tensor, spatial: list[_Candidate], indices: list[int], head: str | None
) -> dict[int, bool]:
    """For each candidate index: do its patch tokens get a nonzero gradient?"""
    wanted = {spatial[i].name: i for i in indices}
    outputs: dict[int, torch.Tensor] = {}
    names = {m: n for n, m in model.named_modules()}
    features: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: tuple, output: object) -> None:
        name = names.get(module)
        if name == head and not features and inputs and isinstance(inputs[0], torch.Tensor):
            features.append(inputs[0])
        i = wanted.get(name)  # type: ignore[arg-type]
        if i is not None and i not in outputs and isinstance(output, torch.Tensor) and output.requires_grad:
            outputs[i] = output

    handles = [m.register_forward_hook(keep) for n, m in model.named_modules() if n in wanted or n == head]
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():  # also when built inside inference mode
            logits = model(example.detach().clone().requires_grad_())
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            base = features[0] if features else logits
            weights = torch.randn(base.shape, generator=torch.Generator().manual_seed(0)).to(base)
            keys = list(outputs)
            grads = torch.autograd.grad((base * weights).sum(), [outputs[k] for k in keys], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        for p in trainable:
            p.requires_grad_(True)
    hw = (int(example.shape[-2]), int(example.shape[-1]))
    return {k: g is not None and bool(spatial[k].layout.to_map(g, hw).abs().amax() > 0) for k, g in zip(keys, grads)}
