"""Token layouts: how a hooked layer's output maps onto the image grid.

CAM formulas work on a map ``A`` of shape (N, K, h, w). Three layouts reach it:

* ``map``: a CNN's (N, C, H, W) output, used as is;
* ``channels_last``: Swin-style (N, H, W, C) maps (torchvision's and timm's Swin, the
  output of timm's patch embedding with ``dynamic_img_size``), permuted to (N, C, H, W);
* ``tokens``: ViT-style sequences (N, P + H·W, C), where the P prefix tokens (a class
  token, DeiT's distillation token, register tokens) come first. The prefix is dropped
  and the H·W patch tokens are laid back on their grid: (N, C, H, W).

The layout is found once, in the model's dry run (:func:`classify_output`), from the
shape of the output and the grid of the patch embedding seen before it; at explain time
:meth:`TokenLayout.to_map` recomputes the grid from the actual input size (aspect-kept
inputs of models that interpolate their position embeddings have other grids than the
dry run's square), using the patch stride found in the dry run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelError

#: Most prefix tokens a ViT-style sequence may carry (class + distillation + registers).
MAX_PREFIX = 16

_KINDS = ("map", "channels_last", "tokens")


@dataclass(frozen=True)
class TokenLayout:
    """How to turn a layer's output into an (N, C, H, W) map.

    ``prefix``: leading non-patch tokens (``tokens`` only). ``stride``: input pixels per
    grid cell along each side (the patch size for ViTs), to find the grid of any input.
    """

    kind: str = "map"
    prefix: int = 0
    stride: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown token layout {self.kind!r}; one of {', '.join(_KINDS)}")

    def grid(self, tokens: int, input_hw: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) grid of ``tokens`` patch tokens for an input of ``input_hw`` pixels.

        A patch embedding with stride s gives floor(H/s) rows (a plain strided conv) or
        ceil(H/s) (timm's ``dynamic_img_pad``); the one that accounts for every token wins.
        """
        H, W = input_hw
        options = [(math.floor(H / self.stride), math.floor(W / self.stride)),
                   (math.ceil(H / self.stride), math.ceil(W / self.stride)),
                   (round(H / self.stride), round(W / self.stride))]  # fmt: skip
        for h, w in options:
            if h * w == tokens and h > 0 and w > 0:
                return h, w
        side = math.isqrt(tokens)
        if side * side == tokens:  # a fixed-size model resizing internally: a square grid
            return side, side
        raise ModelError(
            f"cannot lay {tokens} patch tokens on a grid for a {H}x{W} input with {self.stride:g}-pixel patches"
        )

    def to_map(self, output: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
        """The layer's output as (N, C, H, W): a view where possible, never a copy of the values' order."""
        if self.kind == "map":
            return output
        if self.kind == "channels_last":
            return output.permute(0, 3, 1, 2)
        patches = output[:, self.prefix :]
        h, w = self.grid(patches.shape[1], input_hw)
        return patches.transpose(1, 2).reshape(output.shape[0], output.shape[2], h, w)

    def describe(self) -> str:
        """One line for reports: what the capture does to the hooked output."""
        if self.kind == "map":
            return "map (N, C, H, W), used as is"
        if self.kind == "channels_last":
            return "channels-last map (N, H, W, C) -> (N, C, H, W)"
        what = (
            f"{self.prefix} prefix token{'s' if self.prefix != 1 else ''} dropped" if self.prefix else "no prefix token"
        )
        return f"tokens (N, {self.prefix}+H*W, C) -> (N, C, H, W), {what}, {self.stride:g}-pixel patches"


def is_square_map(shape: torch.Size) -> bool:
    """(N, C, h, h) with h > 1: a channels-first map of a square dry-run input."""
    return len(shape) == 4 and shape[2] == shape[3] and shape[2] > 1


def classify_output(
    output: torch.Tensor,
    input_side: int,
    grid: tuple[int, int] | None,
    model: nn.Module | None = None,
    tokens: int | None = None,
) -> TokenLayout | None:
    """The layout of one module output in the dry run on a square ``input_side`` input, or None.

    ``grid`` is the (h, w) of the latest map seen before this output (the patch
    embedding's, for a ViT). A 4-D output is channels-first when its last two sides are
    equal, channels-last when the middle two are (ambiguous (N, h, h, h) counts as
    channels-first); attention tensors (N, heads, T, d) are neither, and neither are
    attention probabilities (N, heads, T, T) over the ``tokens`` of the latest token
    sequence (T == ``tokens``), nor their (N, T, T, heads) permutation: they are square,
    but not a map. A 3-D (N, T, C)
    output is a token sequence when T = P + h·w for the latest grid with 0 <= P <=
    :data:`MAX_PREFIX` (or exactly the model's ``num_prefix_tokens``, timm's attribute).
    """
    shape = output.shape
    if output.dim() == 4:
        if tokens is not None and (shape[2] == shape[3] == tokens or shape[1] == shape[2] == tokens):
            return None  # token-to-token attention (N, heads, T, T), or (N, T, T, heads) (CaiT's talking heads)
        if is_square_map(shape):
            return TokenLayout("map")
        if shape[1] == shape[2] and shape[1] > 1:
            return TokenLayout("channels_last")
        return None
    if output.dim() == 3 and grid is not None:
        prefix = shape[1] - grid[0] * grid[1]
        declared = getattr(model, "num_prefix_tokens", None)
        if isinstance(declared, int) and prefix != declared and prefix != 0:
            return None
        if 0 <= prefix <= MAX_PREFIX:
            return TokenLayout("tokens", prefix=prefix, stride=input_side / grid[0])
    return None


def map_side(output: torch.Tensor, layout: TokenLayout) -> tuple[int, int]:
    """The (h, w) of a dry-run output's map (square input)."""
    if layout.kind == "map":
        return int(output.shape[2]), int(output.shape[3])
    if layout.kind == "channels_last":
        return int(output.shape[1]), int(output.shape[2])
    side = math.isqrt(output.shape[1] - layout.prefix)
    return side, side
