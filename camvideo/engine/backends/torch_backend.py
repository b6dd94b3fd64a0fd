"""The torch path's model: BatchNorm folded into the convolution before it, channels-last.

A BatchNorm in eval mode is an affine map per channel, y = γ (z − μ) / √(σ² + ε) + β, of
the convolution's output z = W * x + b, so it folds into the convolution exactly:
W' = W · s and b' = (b − μ) · s + β with s = γ / √(σ² + ε) (computed in float64). The
folded copy runs one kernel less per layer and never writes the pre-normalisation map.

Pairs are found by one forward pass with hooks: a ``nn.Conv2d`` whose output tensor is the
input of the ``nn.BatchNorm2d`` right after it. A pair is left alone when the target
layer's output is the convolution's output (folding would change what the hook sees), and
the whole fold is dropped unless the folded copy gives the same logits and target output
on the example (a functional use of the convolution's output elsewhere, say).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..layers import resolve_module

PROBE_SIDE = 64


def foldable_pairs(model: nn.Module, example: torch.Tensor, target: str) -> list[tuple[str, str]]:
    """(convolution, BatchNorm) names that fold without changing the target's output."""
    names = {m: n for n, m in model.named_modules()}
    conv_out: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # alive until the end, so no id() is reused
    calls: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    target_outputs: list[int] = []
    target_module = resolve_module(model, target)

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        if module is target_module and isinstance(output, torch.Tensor):
            target_outputs.append(id(output))
        if isinstance(module, nn.Conv2d) and isinstance(output, torch.Tensor):
            keep.append(output)
            conv_out[id(output)] = name
        elif isinstance(module, nn.BatchNorm2d) and inputs and isinstance(inputs[0], torch.Tensor):
            conv = conv_out.get(id(inputs[0]))
            if conv is not None:
                pairs.append((conv, name))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    hooked = {conv_out[i] for i in target_outputs if i in conv_out}
    return [
        (conv, bn)
        for conv, bn in pairs
        if conv not in hooked and calls.get(conv) == 1 and calls.get(bn) == 1 and _foldable(model, conv, bn)
    ]


def _foldable(model: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = resolve_module(model, conv_name), resolve_module(model, bn_name)
    return (
        not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
        and conv.out_channels == bn.num_features
        and conv.weight.dtype.is_floating_point
    )


def fold_batchnorm(model: nn.Module, example: torch.Tensor, target: str) -> nn.Module:
    """A copy of ``model`` with its foldable BatchNorms folded (``model`` itself is never
    changed), or ``model`` when there is nothing to fold or the fold does not check out."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model  # transformers: nothing to fold, no dry run
    # The dry run and the check on a small crop (a 10th of the start-up cost at 224x224);
    # a network that takes only its trained size gets the example itself.
    small = example[..., :PROBE_SIDE, :PROBE_SIDE]
    try:
        pairs = foldable_pairs(model, small, target)
        example = small
    except Exception:
        pairs = foldable_pairs(model, example, target)
    if not pairs:
        return model
    folded = copy.deepcopy(model)
    modules = dict(folded.named_modules())
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = modules[conv_name], modules[bn_name]
            scale = bn.running_var.double().add(bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight.double()
            shift = -bn.running_mean.double() * scale
            if bn.bias is not None:
                shift = shift + bn.bias.double()
            if conv.bias is not None:
                shift = shift + conv.bias.double() * scale
            dtype = conv.weight.dtype
            conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype))
            conv.bias = nn.Parameter(shift.to(dtype), requires_grad=conv.weight.requires_grad)
            parent, _, child = bn_name.rpartition(".")
            setattr(modules[parent] if parent else folded, child, nn.Identity())
    return folded if _same_outputs(model, folded, example, target) else model


def _same_outputs(model: nn.Module, folded: nn.Module, example: torch.Tensor, target: str) -> bool:
    """Do both give the same logits and the same target output (float32 rounding aside)?"""
    results = []
    for net in (model, folded):
        captured: list[torch.Tensor] = []
        handle = resolve_module(net, target).register_forward_hook(lambda m, i, o: captured.append(o.clone()))
        try:
            with torch.no_grad():
                logits = net(example)
        finally:
            handle.remove()
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        results.append((captured[0].float(), logits.float()))
    return all(
        a.shape == b.shape and torch.allclose(a, b, rtol=1e-3, atol=1e-4 * float(a.abs().max() + 1))
        for a, b in zip(results[0], results[1])
    )


def inference_model(model: nn.Module, example: torch.Tensor, target: str, fold: bool) -> nn.Module:
    """The module the torch path runs: folded (a copy, when ``fold``), then channels-last."""
    net = fold_batchnorm(model, example, target) if fold else model
    return net.to(memory_format=torch.channels_last)
