"""Option names and defaults, in one place for the CLI, ``ui/`` and the engine.

Pure Python (no torch, no OpenCV): the command line builds its choices from here before
anything heavy is imported, and the engine and the renderer check their own tables
against these names (tested), so a name can never exist in one front end only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

#: The CAM methods, in the order the front ends list them.
METHOD_NAMES: tuple[str, ...] = (
    "cam", "gradcam", "hirescam", "gradcam++", "layercam", "scorecam", "eigencam", "rollout",
)  # fmt: skip

#: OpenCV's colormap tables that the renderer offers.
COLORMAP_NAMES: tuple[str, ...] = ("jet", "turbo", "inferno", "viridis", "magma", "plasma", "hot")

#: x264's presets, fastest first (NVENC maps them to p1..p7).
X264_PRESETS: tuple[str, ...] = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip

#: Values of ``--encoder`` / ``Mp4Sink(encoder=...)``: ``auto`` is NVENC where it works.
ENCODER_NAMES: tuple[str, ...] = ("libx264", "h264_nvenc", "auto")

#: Values of ``--hwaccel``.
HWACCEL_NAMES: tuple[str, ...] = ("auto", "none", "cuda")

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")

#: Values of ``--backend`` / ``Explainer(backend=...)``: how the network's forward pass runs.
#: ``auto``: the fastest compiled runtime on the CPU where the method can use it, else torch.
BACKEND_NAMES: tuple[str, ...] = ("auto", "torch", "openvino", "onnxruntime")
DEFAULT_BACKEND = "auto"

DEFAULT_MODEL = "efficientnet_lite0"
#: ``auto``: ``cam`` where it is exact (a pooled head), else ``gradcam`` (transformers'
#: class-token heads, heads with more than one layer).
AUTO_METHOD = "auto"
METHOD_CHOICES: tuple[str, ...] = (AUTO_METHOD, *METHOD_NAMES)
DEFAULT_METHOD = AUTO_METHOD
DEFAULT_COLORMAP = "jet"
DEFAULT_ALPHA = 0.5
DEFAULT_THRESHOLD = 0.2  # the box rule: fraction of the map's maximum (Zhou et al.)
# Below this probability of the shown class the overlay says "unsure" (grey label, no
# box). 10 % is 100x chance among ImageNet's 1000 classes; the default sample's cat and
# cup score 20-90 %, Big Buck Bunny's "hay"/"albatross" 2-4 %.
DEFAULT_MIN_SCORE = 0.1
DEFAULT_SMOOTH = 0.25  # seconds
DEFAULT_CRF = 23
# x264 superfast: ~0.6x veryfast's CPU time per 720p frame for ~1.3x the file at the same
# crf and PSNR; ultrafast is ~0.35x but 2.6x the file (benchmarks/bench_x264_preset.py, issue 11).
DEFAULT_PRESET = "superfast"

# How a frame becomes the model input (Explainer.input_size_for): the short side at the
# model's size with the aspect kept; about the model's square pixel count with the aspect
# kept; or squashed to the square. Chosen by benchmarks/bench_localisation.py (issue 11).
INPUT_POLICIES = ("short", "budget", "square")
DEFAULT_INPUT_POLICY = "short"

# Spellings people type for the same method: "grad-cam", "GradCAM", "grad_cam_pp", ...
_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}


def canonical_method(name: str) -> str | None:
    """The method's canonical name (one of :data:`METHOD_NAMES`), or None when unknown.

    Case, spaces, ``-`` and ``_`` are ignored, and ``pp``/``plusplus`` mean ``++``:
    ``"Grad-CAM"`` → ``"gradcam"``, ``"gradcam_pp"`` → ``"gradcam++"``.
    """
    key = "".join(name.split()).lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    return key if key in METHOD_NAMES else None


@dataclass(frozen=True)
class ModelOptions:
    """How to build an :class:`~camvideo.engine.Explainer`, as one typed value.

    The command line, the live app and the Ray workers all build their Explainer from
    this (``Explainer.from_options``), so a model option cannot be forgotten on one path:
    a field added here reaches every front end, and ``from_args`` refuses a namespace that
    lacks one instead of quietly using a default.
    """

    model: Any = DEFAULT_MODEL  # a registry name, or an nn.Module
    method: str = DEFAULT_METHOD
    layer: str | None = None
    device: str = "auto"
    weights: str | None = None
    precision: str = "fp32"
    input_policy: str = DEFAULT_INPUT_POLICY  # short, budget or square (``--input-size``)
    compile: bool = False
    backend: str = DEFAULT_BACKEND

    @classmethod
    def from_args(cls, args: object) -> ModelOptions:
        """From an argparse namespace (or any object with the same attribute names); every
        field must be there (``--input-size`` stores to the namespace's ``input_policy``)."""
        return cls(**_fields_from(cls, args, {}))


@dataclass(frozen=True)
class OverlayOptions:
    """How to draw the overlay, as one typed value: a :class:`~camvideo.render.Renderer`'s keywords.

    The local annotate and the Ray workers both build their Renderer from this
    (``Renderer(**overlay.keywords(), class_names=...)``), with the command line's defaults.
    """

    colormap: str = DEFAULT_COLORMAP
    alpha: float = DEFAULT_ALPHA
    boxes: bool = True
    labels: bool = True
    threshold: float = DEFAULT_THRESHOLD
    side_by_side: bool = False
    min_score: float = DEFAULT_MIN_SCORE

    @classmethod
    def from_args(cls, args: object) -> OverlayOptions:
        """From an argparse namespace (or any object with the same attribute names); every field must be there."""
        return cls(**_fields_from(cls, args, {}))

    def keywords(self) -> dict[str, Any]:
        """The Renderer's keyword arguments."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def _fields_from(cls: type, args: object, renames: dict[str, str]) -> dict[str, Any]:
    """Every field of the dataclass ``cls`` read from ``args`` (``renames``: field -> attribute name)."""
    values = {}
    for field in fields(cls):
        name = renames.get(field.name, field.name)
        if not hasattr(args, name):
            raise TypeError(f"{type(args).__name__} has no {name!r}: every {cls.__name__} field must be given")
        values[field.name] = getattr(args, name)
    return values
