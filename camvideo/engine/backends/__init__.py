"""How the network's forward pass runs: torch, OpenVINO or ONNX Runtime.

:func:`choose_backend` turns ``--backend auto|torch|openvino|onnxruntime`` into one name;
:func:`compiled_backend` builds a compiled one (:mod:`.compiled`), which exports the
network lazily, at the first batch of each input size. See :mod:`.protocol`.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ModelError
from .compiled import CompiledBackend
from .protocol import COMPILED_BACKENDS, INSTALL_HINTS, Backend, BackendUnavailable, installed, note
from .torch_backend import fold_batchnorm, inference_model

BACKENDS: tuple[str, ...] = ("auto", "torch", *COMPILED_BACKENDS)

__all__ = [
    "BACKENDS", "COMPILED_BACKENDS", "Backend", "BackendUnavailable", "CompiledBackend", "choose_backend",
    "compiled_backend", "fold_batchnorm", "inference_model", "installed", "note",
]  # fmt: skip


def choose_backend(requested: str, *, device: torch.device, dtype: torch.dtype, compile: bool, loaded: bool) -> str:
    """The backend to use: ``torch`` or a compiled runtime's name.

    ``auto``: the first compiled runtime installed, on the CPU, in float32, without
    ``compile=True``, for a model camvideo loaded itself (by name); torch otherwise. A
    module you pass in runs on torch under ``auto``: a compiled copy would not follow
    changes to its weights, and your hooks on it would not fire; name a runtime to
    compile it. An explicit runtime that is not installed, or that cannot run this
    configuration (CUDA, fp16/bf16, ``compile=True``), is a :class:`ModelError`.
    """
    name = (requested or "auto").strip().lower()
    if name not in BACKENDS:
        raise ModelError(f"unknown backend {requested!r}; one of: {', '.join(BACKENDS)}")
    if name == "torch":
        return name
    cpu_fp32 = device.type == "cpu" and dtype == torch.float32 and not compile
    if name == "auto":
        if not (cpu_fp32 and loaded):
            return "torch"
        return next((b for b in COMPILED_BACKENDS if installed(b)), "torch")
    if not installed(name):
        raise ModelError(f"backend {name!r} is not installed; {INSTALL_HINTS[name]} (or use --backend torch)")
    if not cpu_fp32:
        raise ModelError(
            f"backend {name!r} runs float32 on the CPU without compile; use --backend torch for CUDA, fp16/bf16 or --compile"
        )
    return name


def compiled_backend(
    name: str, model: nn.Module, model_name: str, target: str, threads: int | None = None
) -> CompiledBackend:
    """A compiled runtime for ``model`` with ``target``'s output as its second output."""
    if name == "onnxruntime":
        from .ort_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, model_name, target, threads)
    if name == "openvino":
        from .openvino_backend import OpenVinoBackend

        return OpenVinoBackend(model, model_name, target, threads)
    raise ModelError(f"no compiled backend named {name!r}")
