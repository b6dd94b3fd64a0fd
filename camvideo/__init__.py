"""camvideo: class activation maps over video, live or recorded.

The package imports no Qt and no video codec at import time; ``Explainer`` and the
pipeline pieces are loaded on first use so ``import camvideo`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "Box", "CamvideoError", "Explainer", "Explanation", "Frame", "FrameResult", "Renderer", "VideoInfo", "__version__",
]  # fmt: skip

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Explainer, Explanation
    from .errors import CamvideoError
    from .render import Renderer
    from .types import Box, Frame, FrameResult, VideoInfo

_LAZY = {
    "Explainer": ".engine",
    "Explanation": ".engine",
    "Renderer": ".render",
    "CamvideoError": ".errors",
    "VideoInfo": ".types",
    "Frame": ".types",
    "FrameResult": ".types",
    "Box": ".types",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'camvideo' has no attribute {name!r}")
