"""The public engine: frames in, classes, scores and raw class activation maps out.

>>> from camvideo import Explainer
>>> with Explainer(model="efficientnet_lite0", method="cam") as ex:   # doctest: +SKIP
...     out = ex.explain(frames)          # uint8 RGB (N, H, W, 3), numpy or torch
...     out.maps, out.classes, out.scores, out.logits
"""

from __future__ import annotations

import difflib
import math
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ..options import AUTO_METHOD, DEFAULT_INPUT_POLICY, INPUT_POLICIES, ModelOptions
from .backends import CompiledBackend, choose_backend, compiled_backend, inference_model
from .layers import LayerReport, inspect_model
from .methods import CAMMethod, make_method, method_name
from .models import DEFAULT_MODEL, ModelSpec, load_model
from .transfer import FrameUploader

Target = Union[None, int, str, torch.Tensor, Sequence[int], Callable[[torch.Tensor], torch.Tensor]]

#: Longest model input side, in multiples of the short side (the model's input size).
MAX_ASPECT = 4

_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Explanation:
    """One batch explained.

    ``maps`` are raw (not normalised) float32 maps at the target layer's resolution:
    (N, h', w') for one target per frame, (N, k, h', w') for ``top{k}`` targets, in which
    case ``classes`` and ``scores`` are (N, k). ``scores`` are softmax probabilities of
    ``classes``. Everything stays on the model's device.
    """

    maps: torch.Tensor
    classes: torch.Tensor
    scores: torch.Tensor
    logits: torch.Tensor
    input_size: tuple[int, int]  # (h, w) of the model input the maps cover

    @property
    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=1)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when present, else the CPU; a CUDA request without CUDA is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


class Explainer:
    """A classifier, a target layer, a CAM method, on one device.

    ``model`` is a registry name (default ``efficientnet_lite0``, ``efficientnet_lite1/2``,
    a torchvision classifier, ``timm:NAME``) or your own ``nn.Module`` with ``class_names``.
    ``layer`` is a dotted module name or None (found by one dry run: the last module with a
    spatial output, or on a ViT whose head reads the class token the last block's first
    norm; see :mod:`camvideo.engine.layers`). ViT tokens and Swin's channels-last maps are
    laid on the image grid by the capture (``report.layout``). ``method`` defaults to
    ``"auto"`` (as on the command line; ``None`` is the same): ``cam`` where it is exact
    (a global-average-pooled linear head) and ``gradcam`` elsewhere (a ViT's class token).
    The model is put in ``eval()`` mode and moved to ``device``; ``precision`` (fp32,
    fp16, bf16) is the model's dtype; maps are always float32. ``compile=True`` runs the
    forward passes through ``torch.compile`` (static shapes: one compilation per input size).

    ``backend`` (``auto``, ``torch``, ``openvino``, ``onnxruntime``): how the forward passes
    run (:mod:`camvideo.engine.backends`). The compiled runtimes export the network once
    per input size (cached on disk) and serve every method that needs no backward pass
    through the network: ``cam``, ``scorecam``, ``eigencam`` and, on a pooled head, the
    gradient methods (forward-only, :mod:`camvideo.engine.gradients`). ``auto`` picks
    one on the CPU in float32 for a model loaded by name; see :meth:`describe`. On
    torch, a model loaded by name runs with its BatchNorms folded (a copy: ``model`` keeps
    the weights as loaded) and channels-last. ``threads``: the compiled runtime's threads
    (default: torch's).

    One Explainer may serve several threads (videos annotated at once on one GPU): the
    forward and the hook capture take turns on a lock; uploads have their own. Rendering
    and the codecs run outside it.
    """

    def __init__(
        self,
        model: str | nn.Module = DEFAULT_MODEL,
        method: str | None = AUTO_METHOD,
        layer: str | None = None,
        device: str | torch.device = "auto",
        *,
        weights: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        precision: str = "fp32",
        input_size: int | None = None,
        input_policy: str = DEFAULT_INPUT_POLICY,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        scorecam_chunk: int = 64,
        compile: bool = False,
        backend: str = "auto",
        threads: int | None = None,
    ) -> None:
        if precision not in _PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}; one of: {', '.join(_PRECISIONS)}")
        # None or "auto": cam where it is exact, else gradcam (decided once the head is known).
        method = None if method is None or method.strip().lower() == AUTO_METHOD else method_name(method)
        self.device = resolve_device(device)
        self.dtype = _PRECISIONS[precision]
        self.spec: ModelSpec = load_model(
            model, weights=weights, class_names=class_names, input_size=input_size, mean=mean, std=std
        )
        # The dry run is in float32 whatever the precision: its GAP check is numerical, and
        # a bf16/fp16 pooled vector is not allclose (rtol 1e-4) to the mean it rounds.
        self.model: nn.Module = self.spec.model.eval().to(self.device, torch.float32)
        s = self.spec.input_size
        example = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(0)).to(self.device)
        self.report: LayerReport = inspect_model(self.model, example, layer)
        self.model = self.model.to(dtype=self.dtype)
        loaded = not isinstance(model, nn.Module)  # by name: the module is ours to copy and fold
        chosen = choose_backend(backend, device=self.device, dtype=self.dtype, compile=compile, loaded=loaded)
        # what the torch path runs (and hooks): folded where the model is ours, channels-last
        self._net = inference_model(self.model, example.to(self.dtype), self.report.target, fold=loaded)
        self._compiled: CompiledBackend | None = None
        if chosen != "torch":
            self._compiled = compiled_backend(chosen, self._net, self.spec.name, self.report.target, threads)
        if not self.spec.class_names:
            self.spec.class_names = [f"class {i}" for i in range(self.report.num_classes)]
        if len(self.spec.class_names) != self.report.num_classes:
            raise ModelError(
                f"{len(self.spec.class_names)} class names given for a model with {self.report.num_classes} outputs"
            )
        # GAP networks (and ViTs that interpolate their position embeddings) take any input
        # size, so frames keep their aspect ratio; others (flatten heads, torchvision's ViT,
        # MaxViT's windows) are squashed.
        self.fixed_size = self.spec.fixed_size or not self.report.any_size
        if input_policy not in INPUT_POLICIES:
            raise ModelError(f"unknown input size policy {input_policy!r}; one of: {', '.join(INPUT_POLICIES)}")
        self.input_policy = input_policy
        self._scale = (1.0 / (255.0 * torch.tensor(self.spec.std))).view(1, 3, 1, 1).to(self.device)
        self._shift = (torch.tensor(self.spec.mean) / torch.tensor(self.spec.std)).view(1, 3, 1, 1).to(self.device)
        self._scorecam_chunk = scorecam_chunk
        # the resize the model was trained with (timm's and torchvision's configs say; bicubic for Swin)
        self._resize_mode = (
            self.spec.interpolation if self.spec.interpolation in ("bilinear", "bicubic") else "bilinear"
        )
        self._uploader = FrameUploader(self.device)  # its slots have a lock of their own
        self._lock = threading.RLock()  # one call at a time: the forward, the hook capture
        # torch.compile wraps the model for the forward passes; hooks stay on the module itself
        self._runner = torch.compile(self._net, dynamic=False) if compile else self._net
        self._method: CAMMethod | None = self._make(self._resolve(method))
        #: What the first method's forward passes run on: ``torch``, ``openvino`` or ``onnxruntime``
        #: (torch where it needs a backward pass through the network); :meth:`describe` says it
        #: for the current method.
        self.backend: str = self._method.backend_name
        # A hook left on the user's module would outlive us: remove it when we are
        # garbage-collected without close() (the finalizer holds the method, not self).
        self._finalizer = weakref.finalize(self, _close_method, self._method)

    @classmethod
    def from_options(cls, options: ModelOptions) -> Explainer:
        """An Explainer from the model options the front ends share: the command line, the
        live app and the Ray workers all build theirs from one :class:`ModelOptions`."""
        return cls(
            options.model,
            method=options.method,
            layer=options.layer,
            device=options.device,
            weights=options.weights,
            precision=options.precision,
            compile=options.compile,
            input_policy=options.input_policy,
            backend=options.backend,
        )

    # -- properties users and tools rely on ------------------------------------------------
    @property
    def target_layer(self) -> str:
        return self.report.target

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    @property
    def method(self) -> str:
        return self._live_method().name

    def _resolve(self, method: str | None) -> str:
        """``auto``/None: ``cam`` where it is exact for this model, else ``gradcam``."""
        if method is None or method.strip().lower() == AUTO_METHOD:
            return "cam" if self.report.cam_linear is not None else "gradcam"
        return method

    def _make(self, method: str) -> CAMMethod:
        backend = self._compiled if self._compiled is not None and not self._compiled.failed else None
        return make_method(method, self._net, self.report, self._runner, backend, chunk=self._scorecam_chunk)

    def describe(self) -> str:
        """Which path the method takes, e.g. ``gradcam: forward-only (pooled head), openvino``
        or ``gradcam: backward through the network, torch``."""
        return self._live_method().describe()

    def set_method(self, method: str) -> None:
        """Switch the CAM method. If the new one cannot be used (``cam`` without a GAP head),
        the error is raised and the current method stays."""
        with self._lock:
            new = self._make(self._resolve(method))
            self.close()
            self._method = new
            self._finalizer = weakref.finalize(self, _close_method, new)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the hook (the compiled backend stays: :meth:`set_method` after close reuses it)."""
        with self._lock:
            if self._method is not None:
                self._finalizer.detach()
                self._method.close()
                self._method = None

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live_method(self) -> CAMMethod:
        if self._method is None:
            raise ModelError("this Explainer is closed")
        return self._method

    # -- preprocessing -----------------------------------------------------------------------
    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) model input for a frame of that size. For networks that take any size,
        by ``input_policy``: ``short``, the short side at the model's size s, aspect kept
        (224x398 for 720p); ``budget``, about s x s pixels, aspect kept (168x299: the
        square's forward cost); ``square``, squashed to s x s. Fixed-size networks: the square.

        A frame more than ``MAX_ASPECT`` times longer than it is wide (a 4000x16 strip, a
        1x1000 column) is squashed to that ratio: keeping its aspect would make a
        224x56000 input that takes minutes and gigabytes per frame.
        """
        s = self.spec.input_size
        if self.fixed_size or self.input_policy == "square":
            return s, s
        short, long = sorted((height, width))
        if self.input_policy == "budget":
            root = math.sqrt(min(MAX_ASPECT, long / short))
            small, big = max(1, round(s / root)), max(1, round(s * root))
            return (small, big) if height <= width else (big, small)
        scaled = min(MAX_ASPECT * s, max(1, round(long * s / short)))
        return (s, scaled) if height <= width else (scaled, s)

    def to_device(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames (N, H, W, 3) or one (H, W, 3) as a uint8 tensor on the device.

        Never waits for a forward pass (the render thread calls it while the model runs):
        on the CPU it only wraps the array; on CUDA the upload slots have their own lock."""
        if isinstance(frames, np.ndarray):
            if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
                raise ValueError(f"frames must be uint8 RGB of shape (N, H, W, 3); got {frames.shape} {frames.dtype}")
            return self._uploader.upload(frames if frames.ndim == 4 else frames[None])
        t = frames
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"frames must be a numpy array or a torch tensor, not {type(frames).__name__}")
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dtype != torch.uint8 or t.dim() != 4 or t.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 RGB of shape (N, H, W, 3); got {tuple(t.shape)} {t.dtype}")
        return t.to(self.device, non_blocking=True)

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB (N, H, W, 3) -> the exact model input (N, 3, h, w), on the device.

        Bilinear resize with antialiasing (as torchvision's ``Resize``), then
        ``(x / 255 - mean) / std``, in the model's dtype. On the CPU the resize runs on
        the uint8 frames (torch's SIMD channels-last kernel, ~10x faster than the float
        one on a 720p frame, and the float copy is then of the small image only); its
        output is the float resize rounded, within one grey level of it (tested).
        """
        t = self.to_device(frames)
        h, w = self.input_size_for(t.shape[1], t.shape[2])
        x = t.permute(0, 3, 1, 2)  # a channels-last view, no copy
        if (h, w) != tuple(x.shape[-2:]):
            if x.device.type != "cpu":  # no uint8 antialiased kernel there
                x = x.float()
            x = F.interpolate(x, size=(h, w), mode=self._resize_mode, antialias=True, align_corners=False)
        x = x.float() * self._scale - self._shift
        return x.to(self.dtype).contiguous(memory_format=torch.channels_last)

    # -- explaining --------------------------------------------------------------------------
    def explain(self, frames: np.ndarray | torch.Tensor, target: Target = None) -> Explanation:
        """Classify and explain a batch.

        ``frames``: uint8 RGB (N, H, W, 3), numpy or torch, or an already preprocessed
        float tensor (N, 3, h, w). ``target``: None/``"top1"`` (each frame's top class), a
        class index or name (one class for all frames), ``"top{k}"`` (k maps per frame),
        a tensor of per-frame indices (N,) or (N, k), or a function logits -> indices.
        """
        if isinstance(frames, torch.Tensor) and frames.is_floating_point():
            if frames.dim() != 4 or frames.shape[1] != 3:
                raise ValueError(f"a preprocessed batch must be (N, 3, h, w); got {tuple(frames.shape)}")
            x = frames.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        else:
            x = self.preprocess(frames)
        select, squeeze = self.selector(target)
        with self._lock:
            maps, logits, classes = self._live_method()(x, select)
        scores = torch.softmax(logits.float(), dim=1).gather(1, classes)
        if squeeze and classes.shape[1] == 1:
            maps, classes, scores = maps[:, 0], classes[:, 0], scores[:, 0]
        return Explanation(
            maps=maps, classes=classes, scores=scores, logits=logits.float(), input_size=tuple(x.shape[-2:])
        )

    def class_index(self, name_or_index: int | str) -> int:
        """A class index from an index or a (case-insensitive) class name."""
        names = self.class_names
        if isinstance(name_or_index, (int, np.integer)) or str(name_or_index).strip().isdigit():
            index = int(name_or_index)
            if not 0 <= index < len(names):
                raise ModelError(f"class index {index} out of range 0..{len(names) - 1}")
            return index
        wanted = str(name_or_index).strip().lower()
        lowered = [n.lower() for n in names]
        if wanted in lowered:
            return lowered.index(wanted)
        close = difflib.get_close_matches(wanted, lowered, n=3, cutoff=0.5)
        hint = f"; did you mean: {', '.join(names[lowered.index(c)] for c in close)}" if close else ""
        raise ModelError(f"no class named {name_or_index!r}{hint}")

    def selector(self, target: Target) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool]:
        """A function logits -> (N, T) class indices, and whether to drop the T axis."""
        if target is None or (isinstance(target, str) and target.strip().lower() in ("top1", "top")):
            return (lambda logits: logits.argmax(dim=1, keepdim=True)), True
        if callable(target) and not isinstance(target, torch.Tensor):
            # A function of the logits (e.g. the smoother's class hysteresis) returns (N,)
            # for one map per frame or (N, k).
            fn = target

            def call(logits: torch.Tensor) -> torch.Tensor:
                chosen = torch.as_tensor(fn(logits), device=logits.device).long()
                return chosen.view(logits.shape[0], -1)

            return call, True
        if isinstance(target, str) and target.strip().lower().startswith("top") and target.strip()[3:].isdigit():
            k = int(target.strip()[3:])
            if not 1 <= k <= len(self.class_names):
                raise ModelError(f"target {target!r}: k must be between 1 and {len(self.class_names)}")
            return (lambda logits: logits.topk(k, dim=1).indices), k == 1
        if isinstance(target, (torch.Tensor, np.ndarray, list, tuple)):
            chosen = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target).long()
            return (lambda logits: chosen.to(logits.device).view(logits.shape[0], -1)), chosen.dim() == 1
        index = self.class_index(target)  # type: ignore[arg-type]
        return (lambda logits: torch.full((logits.shape[0], 1), index, device=logits.device, dtype=torch.long)), True


def _close_method(method: CAMMethod) -> None:
    """The finalizer of an Explainer that was never closed: remove its hook."""
    method.close()
