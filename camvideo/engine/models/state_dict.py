"""Local weight files, loaded safely: ``torch.load(weights_only=True)``, so a pickle's code
never runs, and a refusal said on one line. Shared by the registry and the model families
(lite0, timm_models), which the registry imports lazily: a module of its own, so none of
them imports the package that imports them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from ...errors import ModelError

__all__ = ["load_error_line", "load_state_dict"]


def load_error_line(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, on one short line.

    Its message is a paragraph with terminal escapes; the line that says what was found
    (``Unsupported global: GLOBAL builtins.exec ...``) is the one a user needs.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            text = line.split("WeightsUnpickler error:", 1)[1].split(". ")[0]
            break
    else:
        text = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return " ".join(text.split())[:160]


def load_state_dict(net: nn.Module, path: str | os.PathLike) -> None:
    """Load a local state dict safely (``weights_only=True``: no code in pickles)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(
            f"refused to load {path}: not a plain tensor state dict ({load_error_line(err)}); "
            "camvideo loads weights with torch.load(weights_only=True) and never runs code from a file"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{path} does not hold a state dict (found {type(state).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and getattr(state[k], "shape", None) != own[k].shape]
    if missing or unexpected or reshaped:
        detail = "; ".join(
            f"{len(keys)} {what} ({', '.join(keys[:3])})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
            if keys
        )
        raise ModelError(f"{path} does not match {type(net).__name__}: keys {detail}")
    net.load_state_dict(state)
